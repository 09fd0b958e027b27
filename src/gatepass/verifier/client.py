"""Verify gatepass access tokens in a resource server: :class:`Verifier` (threads) and
:class:`AsyncVerifier` (asyncio), over the issuer's JWKS.

Both run the auth server's own :class:`~gatepass.tokens.TokenVerifier` (algorithm
from the key, ``typ``, ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with leeway) over a
:mod:`~gatepass.verifier.jwks` cache, then ask the optional revocation source. They
share everything but the I/O: the policy lives in :class:`_Core`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import httpx

from gatepass.clock import Clock
from gatepass.errors import AuthenticationFailed, UnknownSigningKey
from gatepass.tokens import AccessClaims, TokenVerifier
from gatepass.verifier.jwks import (
    DEFAULT_COOLDOWN,
    DEFAULT_STALE_LIMIT,
    DEFAULT_TIMEOUT,
    MAX_CACHE_SECONDS,
    MIN_CACHE_SECONDS,
    AsyncJwksCache,
    JwksCache,
    check_jwks_url,
    jwks_url_for,
)
from gatepass.verifier.revocations import RevocationSource

#: Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat`` (the server's default).
DEFAULT_LEEWAY = 10.0
#: The audience gatepass puts in its tokens unless ``GATEPASS_AUDIENCE`` says otherwise.
DEFAULT_AUDIENCE = "gatepass"
_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The caller behind a verified access token.

    ``user_id``, ``roles`` and ``method`` mean what they mean on
    :class:`gatepass.authenticator.Identity`, so a role check works on both.
    """

    user_id: str
    roles: tuple[str, ...]
    #: The token's ``jti``.
    token_id: str
    #: Its refresh family (``sid``): one sign-in.
    family_id: str
    issued_at: float
    expires_at: float
    method: Literal["bearer"] = "bearer"
    #: When and how the user signed in (``auth_time``, RFC 8176 ``amr``): for a
    #: "fresh sign-in" or "signed in with a second factor" check of your own.
    auth_time: float = 0.0
    amr: tuple[str, ...] = ()


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or
    :class:`AuthenticationFailed` (``token_sent`` set when a header was there)."""
    if authorization is None:
        raise AuthenticationFailed()
    if authorization[: len(_BEARER)].lower() != _BEARER:
        raise AuthenticationFailed("Unsupported authorization scheme.", token_sent=True)
    token = authorization[len(_BEARER) :].strip()
    if not token:
        raise AuthenticationFailed("Empty bearer token.", token_sent=True)
    return token


class _Core:
    """What both verifiers hold and check, minus the I/O."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        jwks_url: str | None,
        leeway: float,
        clock: Clock,
        revocations: RevocationSource | None,
        allow_insecure_http: bool,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("an issuer is required")
        if not math.isfinite(leeway):
            raise ValueError("leeway must be a finite number of seconds")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = check_jwks_url(
            jwks_url or jwks_url_for(issuer), allow_insecure_http=allow_insecure_http
        )
        self.leeway = leeway
        self.clock = clock
        self.revocations = revocations

    def tokens(self, keys: JwksCache | AsyncJwksCache) -> TokenVerifier:
        return TokenVerifier(
            keys, issuer=self.issuer, audience=self.audience, leeway=self.leeway, clock=self.clock
        )

    def verified(self, claims: AccessClaims) -> VerifiedToken:
        if self.revocations is not None:
            self.revocations.check(claims)
        return VerifiedToken(
            user_id=claims.sub,
            roles=claims.roles,
            token_id=claims.jti,
            family_id=claims.sid,
            issued_at=claims.iat,
            expires_at=claims.exp,
            auth_time=claims.auth_time,
            amr=claims.amr,
        )


_CLOSED = "the verifier is closed"


class Verifier:
    """Verifies access tokens of ``issuer`` offline, with its JWKS; thread-safe.

    ``issuer`` is the ``iss`` the tokens must carry (``GATEPASS_ISSUER``); keys come
    from ``jwks_url`` (default ``<issuer>/.well-known/jwks.json``), which must be
    https unless its host is loopback or ``allow_insecure_http`` is set.
    ``audience`` is the ``aud`` required (``GATEPASS_AUDIENCE``, default
    ``"gatepass"``); ``leeway`` the clock skew allowed (10 s).

    Keys: cached by the JWKS response's ``max-age`` within
    [``min_cache_seconds``, ``max_cache_seconds``] (30 s .. 1 h), fetched again by
    one thread ahead of expiry; a token whose ``kid`` is unknown fetches again at
    most once per ``cooldown`` (10 s) and is otherwise refused; through fetch
    errors the last good keys serve up to ``stale_limit`` (900 s) past their
    expiry, then every call raises :class:`~gatepass.errors.KeysUnavailable` (503).

    Revocation: with ``revocations`` (e.g. a ``RevocationFeed``) every verified
    token is checked against it. **Without it, a revoked token (logout, logout-all,
    refresh-token reuse) stays valid here until its ``exp``.**

    ``http_client``: an :class:`httpx.Client` of the caller's (kept open by
    :meth:`close`); by default one with a 5 s timeout is made and closed. ``clock``
    is injectable for tests.
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str = DEFAULT_AUDIENCE,
        jwks_url: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        cooldown: float = DEFAULT_COOLDOWN,
        stale_limit: float = DEFAULT_STALE_LIMIT,
        min_cache_seconds: float = MIN_CACHE_SECONDS,
        max_cache_seconds: float = MAX_CACHE_SECONDS,
        revocations: RevocationSource | None = None,
        http_client: httpx.Client | None = None,
        clock: Clock = time.time,
        allow_insecure_http: bool = False,
    ) -> None:
        self._core = _Core(
            issuer,
            audience=audience,
            jwks_url=jwks_url,
            leeway=leeway,
            clock=clock,
            revocations=revocations,
            allow_insecure_http=allow_insecure_http,
        )
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(timeout=DEFAULT_TIMEOUT)
        self.keys = JwksCache(
            self._core.jwks_url,
            client=self._client,
            clock=clock,
            cooldown=cooldown,
            stale_limit=stale_limit,
            min_cache_seconds=min_cache_seconds,
            max_cache_seconds=max_cache_seconds,
        )
        self._tokens = self._core.tokens(self.keys)
        self._closed = False

    def __repr__(self) -> str:
        return f"Verifier(issuer={self._core.issuer!r}, audience={self._core.audience!r})"

    @property
    def issuer(self) -> str:
        return self._core.issuer

    def verify(self, token: str) -> VerifiedToken:
        """The caller behind ``token``, or :class:`~gatepass.errors.InvalidToken` (401);
        :class:`~gatepass.errors.KeysUnavailable` or
        :class:`~gatepass.errors.RevocationsStale` (503) when it cannot be judged."""
        if self._closed:
            raise RuntimeError(_CLOSED)
        self.keys.ensure_usable()
        try:
            claims = self._tokens.verify(token)
        except UnknownSigningKey:
            if not self.keys.refetch_for_unknown_kid():
                raise
            claims = self._tokens.verify(token)
        return self._core.verified(claims)

    def verify_authorization(self, authorization: str | None) -> VerifiedToken:
        """:meth:`verify` the token of an ``Authorization: Bearer`` header value;
        :class:`~gatepass.errors.AuthenticationFailed` (401) for a missing header or
        any other scheme."""
        return self.verify(bearer_token(authorization))

    def close(self) -> None:
        """Close the revocation source and the HTTP client this verifier made."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._core.revocations is not None:
                self._core.revocations.close()
        finally:
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncVerifier:
    """:class:`Verifier` for asyncio: ``await verify(...)``, ``await aclose()``,
    ``async with``. Same arguments, with an :class:`httpx.AsyncClient`; use it from
    one event loop. Tasks that need the JWKS at the same time share one fetch.

    **Without ``revocations``, a revoked token stays valid here until its ``exp``.**
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str = DEFAULT_AUDIENCE,
        jwks_url: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        cooldown: float = DEFAULT_COOLDOWN,
        stale_limit: float = DEFAULT_STALE_LIMIT,
        min_cache_seconds: float = MIN_CACHE_SECONDS,
        max_cache_seconds: float = MAX_CACHE_SECONDS,
        revocations: RevocationSource | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        allow_insecure_http: bool = False,
    ) -> None:
        self._core = _Core(
            issuer,
            audience=audience,
            jwks_url=jwks_url,
            leeway=leeway,
            clock=clock,
            revocations=revocations,
            allow_insecure_http=allow_insecure_http,
        )
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        self.keys = AsyncJwksCache(
            self._core.jwks_url,
            client=self._client,
            clock=clock,
            cooldown=cooldown,
            stale_limit=stale_limit,
            min_cache_seconds=min_cache_seconds,
            max_cache_seconds=max_cache_seconds,
        )
        self._tokens = self._core.tokens(self.keys)
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncVerifier(issuer={self._core.issuer!r}, audience={self._core.audience!r})"

    @property
    def issuer(self) -> str:
        return self._core.issuer

    async def verify(self, token: str) -> VerifiedToken:
        """As :meth:`Verifier.verify`."""
        if self._closed:
            raise RuntimeError(_CLOSED)
        await self.keys.ensure_usable()
        try:
            claims = self._tokens.verify(token)
        except UnknownSigningKey:
            if not await self.keys.refetch_for_unknown_kid():
                raise
            claims = self._tokens.verify(token)
        return self._core.verified(claims)

    async def verify_authorization(self, authorization: str | None) -> VerifiedToken:
        """As :meth:`Verifier.verify_authorization`."""
        return await self.verify(bearer_token(authorization))

    async def aclose(self) -> None:
        """Close the revocation source and the HTTP client this verifier made."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._core.revocations is not None:
                self._core.revocations.close()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def __aenter__(self) -> AsyncVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

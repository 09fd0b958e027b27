"""Sign-ins with a second factor: the pending step for every client type, passwordless
passkey sign-ins, and reauthentication.

For a user with a second factor (TOTP or a passkey), a correct password grants
nothing: it starts a *pending sign-in*, known by a short-lived, single-use
``mfa_token`` (256 bits; the store keeps its SHA-256). ``POST /auth/mfa/verify``
finishes it as the client it began with (``web``, ``mobile`` or ``api``) with a
TOTP code, a recovery code or a passkey assertion. Each wrong code counts against
the pending sign-in (five kill it) and as one failed login toward the account
lockout, exactly as a wrong password does; while the account is locked every
attempt is refused with 429. An ``mfa_token`` is no credential anywhere else: it
is neither a signed cookie, a JWT nor a refresh token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatepass.authenticator import Identity
from gatepass.clock import Clock
from gatepass.devices import DeviceCookies
from gatepass.errors import AuthenticationFailed, InvalidRequest, RateLimited
from gatepass.freshness import HWK, OTP, PWD, USER, SignInProof
from gatepass.links import presented_digest, token_digest
from gatepass.metrics import Metrics
from gatepass.ratelimit import LoginThrottle
from gatepass.stores.base import PendingSignInRecord, Store, UserRecord

audit = logging.getLogger("gatepass.audit")

#: The methods of DESIGN §3.3, as ``POST /auth/mfa/verify`` names them.
TOTP, RECOVERY_CODE, WEBAUTHN = "totp", "recovery_code", "webauthn"
CODE_METHODS = (TOTP, RECOVERY_CODE)
MFA_TOKEN_BYTES = 32
#: Wrong codes that kill a pending sign-in (DESIGN §3.3).
MAX_PENDING_FAILURES = 5
CLIENTS = ("web", "mobile", "api")
DEAD_MFA_TOKEN = "Invalid or expired sign-in; start again."  # noqa: S105 - a message
WRONG_CODE = "The code is wrong."


class CodeFactors(Protocol):
    """TOTP and recovery codes (:class:`gatepass.mfa.Factors`)."""

    async def has_totp(self, user_id: str) -> bool: ...

    async def verify_totp(self, user_id: str, code: str) -> bool: ...

    async def use_recovery_code(self, user_id: str, code: str) -> bool: ...


class PasskeyAssertionLike(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def user_verified(self) -> bool: ...


class KeyFactors(Protocol):
    """Passkeys (:class:`gatepass.passkeys.Passkeys`)."""

    async def count(self, user_id: str) -> int: ...

    async def authentication_options(self, *, user_id: str | None, ceremony: str) -> str: ...

    async def authenticate(
        self, credential: Mapping[str, Any], *, ceremony: str, user_id: str | None
    ) -> PasskeyAssertionLike: ...


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """What ``POST /auth/login`` answers for a user with a second factor."""

    mfa_token: str
    methods: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"mfa_required": True, "mfa_token": self.mfa_token, "methods": list(self.methods)}


@dataclass(frozen=True, slots=True)
class FinishedSignIn:
    """A second factor accepted: grant ``client`` a sign-in for ``user`` with ``proof``."""

    user: UserRecord
    client: str
    proof: SignInProof


class SecondFactors:
    """The pending step, passwordless passkeys and reauthentication, over the
    factor modules and the login throttle."""

    def __init__(
        self,
        store: Store,
        codes: CodeFactors,
        keys: KeyFactors,
        throttle: LoginThrottle,
        devices: DeviceCookies,
        metrics: Metrics,
        clock: Clock,
        *,
        ttl: int,
        renew: Callable[[Identity], Awaitable[None]],
        own_attempt: Callable[[Identity, Callable[[], Awaitable[bool]]], Awaitable[bool]],
    ) -> None:
        self._store = store
        self._codes = codes
        self._keys = keys
        self._throttle = throttle
        self._devices = devices
        self._metrics = metrics
        self._clock = clock
        self._ttl = ttl
        self._renew = renew
        self._own_attempt = own_attempt

    async def required(self, user_id: str) -> bool:
        """Whether ``user_id``'s password must be followed by a second factor."""
        return bool(await self.methods(user_id))

    async def methods(self, user_id: str) -> tuple[str, ...]:
        """The second factors ``user_id`` can finish a sign-in with (none: the
        password alone signs in)."""
        methods: list[str] = []
        if await self._codes.has_totp(user_id):
            methods += [TOTP, RECOVERY_CODE]
        if await self._keys.count(user_id) > 0:
            methods.append(WEBAUTHN)
        return tuple(methods)

    async def begin(self, user: UserRecord, client: str, methods: tuple[str, ...]) -> PendingSignIn:
        """Start the pending sign-in of ``user`` (whose password was just right)."""
        token = secrets.token_urlsafe(MFA_TOKEN_BYTES)
        now = self._clock()
        await self._store.create_pending_sign_in(
            PendingSignInRecord(
                token_hash=token_digest(token),
                user_id=user.id,
                client=client,
                credential_version=user.credential_version,
                auth_time=now,
                amr=(PWD,),
                created_at=now,
                expires_at=now + self._ttl,
            )
        )
        return PendingSignIn(token, methods)

    async def pending_user(self, mfa_token: str) -> str | None:
        """The user a live pending sign-in belongs to (``None``: it is gone)."""
        try:
            return (await self._live(mfa_token)).user_id
        except AuthenticationFailed:
            return None

    async def webauthn_options(self, mfa_token: str) -> str:
        """WebAuthn request options for the pending sign-in's user (401 when dead)."""
        pending = await self._live(mfa_token)
        return await self._keys.authentication_options(user_id=pending.user_id, ceremony="mfa")

    async def finish(
        self,
        mfa_token: str,
        method: str,
        *,
        code: str | None = None,
        credential: Mapping[str, Any] | None = None,
        ip: str | None,
        device_cookie: str | None = None,
    ) -> FinishedSignIn:
        """Check the second factor of a pending sign-in; on success it is used up and
        the caller grants :class:`FinishedSignIn`. A dead token is 401, a wrong code
        401 (and a failed login), a locked account 429."""
        digest = presented_digest(mfa_token)
        pending = await self._live(mfa_token)
        user = await self._store.get_user(pending.user_id)
        if user is None or user.credential_version != pending.credential_version:
            raise AuthenticationFailed(DEAD_MFA_TOKEN)  # the password changed since
        account = user.email
        # Counted as the password step was: a device that signed in here before
        # has its own count, so codes guessed elsewhere do not lock it out.
        device = self._devices.device_for(device_cookie, account)
        try:
            await self._throttle.check(account, ip, device)
        except RateLimited:
            self._metrics.throttled.inc()
            raise
        settled = False
        try:
            second = await self._check(user.id, method, code, credential)
            settled = True
        finally:
            if not settled:
                await self._throttle.abandon(account, device)
        if second is None:
            await self._wrong_code(digest, account, device, method, user.id)
            raise AuthenticationFailed(WRONG_CODE)
        finished = await self._store.consume_pending_sign_in(digest or "", self._clock())
        if finished is None:  # used by a racing request meanwhile
            await self._throttle.abandon(account, device)
            raise AuthenticationFailed(DEAD_MFA_TOKEN)
        await self._throttle.record_success(account, device)
        if method == RECOVERY_CODE:
            audit.info("recovery code used to sign in: user %s", user.id)
        # auth_time is now: the user has just finished proving who they are.
        proof = SignInProof.now(self._clock(), *pending.amr, *second)
        return FinishedSignIn(user, pending.client, proof)

    async def passwordless(self, credential: Mapping[str, Any]) -> tuple[UserRecord, SignInProof]:
        """A sign-in with a user-verified passkey alone (it counts as two factors:
        possession of the key and the user's PIN or biometric on it)."""
        assertion = await self._keys.authenticate(credential, ceremony="login", user_id=None)
        if not assertion.user_verified:
            raise AuthenticationFailed()
        user = await self._store.get_user(assertion.user_id)
        if user is None:
            raise AuthenticationFailed()
        return user, SignInProof.now(self._clock(), HWK, USER)

    async def reauthenticate(
        self,
        identity: Identity,
        *,
        method: str | None = None,
        code: str | None = None,
        credential: Mapping[str, Any] | None = None,
    ) -> None:
        """Renew ``auth_time`` of the caller's session or family with a second factor
        (the password route is :meth:`gatepass.accounts.Accounts.reauthenticate`).
        Wrong codes count against the caller's own session or family, as wrong
        current passwords do; the session ID is kept (nothing new is granted)."""
        user_id = identity.user.id
        if credential is not None:
            creds = credential

            async def attempt() -> bool:
                return await self._passkey(user_id, creds, ceremony="reauth") is not None

        elif method in CODE_METHODS and code is not None:
            chosen, given = method, code

            async def attempt() -> bool:
                return await self._code(user_id, chosen, given) is not None

        else:
            raise InvalidRequest("Send current_password, method and code, or credential.")
        # Counted per session or family (ended after too many) and toward the lockout.
        if not await self._own_attempt(identity, attempt):
            raise AuthenticationFailed(WRONG_CODE)
        await self._renew(identity)

    async def _live(self, mfa_token: str) -> PendingSignInRecord:
        digest = presented_digest(mfa_token)
        pending = (
            None if digest is None else await self._store.get_pending_sign_in(digest, self._clock())
        )
        if pending is None:
            raise AuthenticationFailed(DEAD_MFA_TOKEN)
        return pending

    async def _check(
        self,
        user_id: str,
        method: str,
        code: str | None,
        credential: Mapping[str, Any] | None,
    ) -> tuple[str, ...] | None:
        """The ``amr`` values the second factor adds, or ``None`` when it is wrong."""
        if method == WEBAUTHN:
            if credential is None:
                raise InvalidRequest("A webauthn step needs a credential.")
            return await self._passkey(user_id, credential, ceremony="mfa")
        if method in CODE_METHODS:
            if code is None:
                raise InvalidRequest("This method needs a code.")
            return await self._code(user_id, method, code)
        raise InvalidRequest("Unknown method.")

    async def _code(self, user_id: str, method: str, code: str) -> tuple[str, ...] | None:
        if method == TOTP:
            ok = await self._codes.verify_totp(user_id, code)
        else:
            ok = await self._codes.use_recovery_code(user_id, code)
        return (OTP,) if ok else None

    async def _passkey(
        self, user_id: str, credential: Mapping[str, Any], *, ceremony: str
    ) -> tuple[str, ...] | None:
        try:
            assertion = await self._keys.authenticate(
                credential, ceremony=ceremony, user_id=user_id
            )
        except AuthenticationFailed:
            return None
        return (HWK, USER) if assertion.user_verified else (HWK,)

    async def _wrong_code(
        self, digest: str | None, account: str, device: str | None, method: str, user_id: str
    ) -> None:
        if digest is not None:
            await self._store.fail_pending_sign_in(digest, max_failures=MAX_PENDING_FAILURES)
        if await self._throttle.record_failure(account, device):
            self._metrics.lockouts.inc()
        audit.info("wrong second factor (%s) for user %s", method, user_id)


async def renew_proof(store: Store, identity: Identity, now: float) -> None:
    """Move ``auth_time`` of the caller's session or family to ``now``, keeping how it
    signed in (``amr``) and its session ID."""
    proof = SignInProof(float(int(now)), identity.amr)
    if identity.session is not None:
        renewed = await store.renew_session_proof(identity.session.id_hash, proof)
    elif identity.family_id is not None:
        renewed = await store.renew_family_proof(identity.family_id, identity.user.id, proof)
    else:
        renewed = False
    if not renewed:
        raise AuthenticationFailed()

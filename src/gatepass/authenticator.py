"""The hybrid authenticator: Bearer first, else the session cookie; the Bearer
path that honours revocation; and what a node drops when other nodes tell it.

A request that carries an ``Authorization`` header is judged on that header
alone: a bad or unsupported credential there is a 401, never a fallback to the
cookie (an attacker must not be able to downgrade to whichever credential is
weaker). Without the header, the session cookie decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gatepass.clock import Clock
from gatepass.errors import AuthenticationFailed
from gatepass.events import Event, Revoked, SessionsEnded, UserChanged
from gatepass.revocation import RevocationView, check_not_revoked
from gatepass.sessions import SessionManager
from gatepass.stores.base import BearerState, SessionRecord, UserRecord, UserStore
from gatepass.stores.user_cache import UserCache
from gatepass.tokens import AccessClaims, AccessTokens

Method = Literal["session", "bearer"]
BEARER_PREFIX = "bearer "


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, and by which credential."""

    user: UserRecord
    method: Method
    session: SessionRecord | None = None
    #: For Bearer callers: the token's ``jti`` and its refresh family (``sid``).
    token_id: str | None = None
    family_id: str | None = None
    token_expires_at: float | None = None
    #: For Bearer callers: the token's ``auth_time`` and ``amr`` claims.
    token_auth_time: float = 0.0
    token_amr: tuple[str, ...] = ()

    @property
    def auth_time(self) -> float:
        """When the caller last proved who they are (``0``: unknown)."""
        if self.session is not None:
            return self.session.auth_time
        return self.token_auth_time

    @property
    def amr(self) -> tuple[str, ...]:
        """How the caller signed in (RFC 8176 values)."""
        if self.session is not None:
            return self.session.amr
        return self.token_amr

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def roles(self) -> tuple[str, ...]:
        """The caller's roles as stored now (a token's ``roles`` claim may be older)."""
        return tuple(self.user.roles)


class BearerVerifier(Protocol):
    async def authenticate_bearer(self, token: str) -> Identity:
        """Verify an access token; raise :class:`AuthenticationFailed` (``token_sent``)."""
        ...

    def authenticate_bearer_now(self, token: str) -> Identity | None:
        """:meth:`authenticate_bearer` from memory alone; ``None`` when that needs I/O."""
        ...


def bearer_token(authorization: str) -> str:
    """The token of a ``Bearer`` header, or raise :class:`AuthenticationFailed`."""
    if authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
        raise AuthenticationFailed("Unsupported authorization scheme.", token_sent=True)
    token = authorization[len(BEARER_PREFIX) :].strip()
    if not token:
        raise AuthenticationFailed("Empty bearer token.", token_sent=True)
    return token


class Authenticator:
    """Turns a request's credentials into an :class:`Identity` or raises 401."""

    def __init__(self, sessions: SessionManager, bearer: BearerVerifier | None = None) -> None:
        self._sessions = sessions
        self._bearer = bearer

    async def authenticate(self, authorization: str | None, session_cookie: str | None) -> Identity:
        """The caller behind a request's ``Authorization`` header or, without one, its
        session cookie value; :class:`AuthenticationFailed` otherwise."""
        if authorization is not None:
            token = bearer_token(authorization)
            if self._bearer is None:
                raise AuthenticationFailed("Bearer tokens are not accepted.", token_sent=True)
            return await self._bearer.authenticate_bearer(token)
        active = await self._sessions.load(session_cookie)
        if active is None:
            raise AuthenticationFailed()
        return Identity(user=active.user, method="session", session=active.record)

    def authenticate_now(self, authorization: str | None) -> Identity | None:
        """The verdict on a Bearer request reached from this process's memory alone,
        for sync adapters: it spares a hop to the event loop thread.

        An :class:`Identity`, or :class:`AuthenticationFailed` for a token that is
        refused whatever the stores say; ``None`` when the answer needs I/O (no
        ``Authorization`` header, as sessions are judged on the loop; a key ring or
        revocation view due for a read; a user not cached), and the caller awaits
        :meth:`authenticate`. Thread-safe: it only reads what the loop thread writes.
        """
        if authorization is None:
            return None
        token = bearer_token(authorization)
        if self._bearer is None:
            raise AuthenticationFailed("Bearer tokens are not accepted.", token_sent=True)
        return self._bearer.authenticate_bearer_now(token)


class BearerAuthenticator:
    """Verifies an access token and checks it against revocation, with no store
    round trip for a token (and user) seen recently."""

    def __init__(
        self,
        tokens: AccessTokens,
        view: RevocationView,
        users: UserStore,
        clock: Clock,
    ) -> None:
        self._tokens = tokens
        self._view = view
        self._users = UserCache(users, clock)
        self._clock = clock

    async def authenticate_bearer(self, token: str) -> Identity:
        claims = await self._tokens.verify(token)
        await self._view.ensure_current()
        return self._identity(claims, await self._users.get(claims.sub))

    def authenticate_bearer_now(self, token: str) -> Identity | None:
        claims = self._tokens.verify_now(token)
        if claims is None or not self._view.is_current():
            return None
        user = self._users.peek(claims.sub)
        if user is None:
            return None
        return self._identity(claims, user)

    def _identity(self, claims: AccessClaims, user: UserRecord | None) -> Identity:
        state = BearerState(
            user=user,
            family_live=not self._view.family_revoked(claims.sid),
            jti_revoked=self._view.jti_revoked(claims.jti),
            epoch=self._view.epoch(claims.sub),
        )
        return Identity(
            user=check_not_revoked(claims, state),
            method="bearer",
            token_id=claims.jti,
            family_id=claims.sid,
            token_expires_at=claims.exp,
            token_auth_time=claims.auth_time,
            token_amr=claims.amr,
        )

    def forget_user(self, user_id: str) -> None:
        """Drop the cached record of a user whose credentials, roles or existence
        just changed in this process, and tell the other processes (without a bus
        they refresh within :data:`USER_CACHE_SECONDS`; revocations reach them
        through the feed)."""
        self.drop_user(user_id)
        self._view.bus.announce(UserChanged(user_id))

    def drop_user(self, user_id: str | None = None) -> None:
        """Drop the cached record of ``user_id`` (every user's when ``None``) here only."""
        self._users.drop(user_id)


class NodeCaches:
    """What this process cached that other processes' events invalidate: the
    revocation view, the Bearer path's users and the loaded sessions
    (an :class:`~gatepass.events.EventListener`)."""

    def __init__(
        self, view: RevocationView, bearer: BearerAuthenticator, sessions: SessionManager
    ) -> None:
        self._view = view
        self._bearer = bearer
        self._sessions = sessions

    async def catch_up(self) -> None:
        """Read the durable feed, and drop every cached user and session: events
        about them may have been missed while the bus was away."""
        await self._view.sync()
        self._bearer.drop_user()
        self._sessions.drop_cached(everything=True)

    def receive(self, event: Event) -> None:
        if isinstance(event, Revoked):
            self._view.receive(event.events)
        elif isinstance(event, UserChanged):
            self._bearer.drop_user(event.user_id)
            self._sessions.drop_cached(user_id=event.user_id)
        elif isinstance(event, SessionsEnded):
            for id_hash in event.id_hashes:
                self._sessions.drop_cached(id_hash=id_hash)
            self._sessions.drop_cached(user_id=event.user_id, handles=event.handles)

"""The hybrid authenticator: Bearer first, else the session cookie.

A request that carries an ``Authorization`` header is judged on that header
alone: a bad or unsupported credential there is a 401, never a fallback to the
cookie (an attacker must not be able to downgrade to whichever credential is
weaker). Without the header, the session cookie decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gatepass.errors import AuthenticationFailed
from gatepass.sessions import SessionManager
from gatepass.stores.base import SessionRecord, UserRecord

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


class BearerVerifier(Protocol):
    async def authenticate_bearer(self, token: str) -> Identity:
        """Verify an access token; raise :class:`AuthenticationFailed` (``token_sent``)."""
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

"""Refresh-token families: issue, rotate, detect reuse.

One family per token login. Each refresh token is 256 random bits, stored
only as its SHA-256, and good for exactly one rotation. The family's absolute
lifetime runs from the login, not from the last rotation. Presenting a token
that was already rotated means two parties hold it, one of them a thief
(RFC 9700 §4.14.2): the whole family dies, the newest token and every access
token of the family included.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from gatepass.clock import Clock
from gatepass.errors import CredentialsChanged
from gatepass.errors import InvalidRefreshToken as InvalidRefreshToken  # re-exported
from gatepass.metrics import Metrics
from gatepass.revocation import RevocationView
from gatepass.stores.base import (
    Evicted,
    FamilyRecord,
    FamilyStore,
    RotationStatus,
    SessionLimit,
    UserRecord,
)
from gatepass.tokens import AccessTokens

REFRESH_TOKEN_BYTES = 32
FAMILY_ID_BYTES = 16
#: A refresh token is 43 characters; anything much longer is not one of ours.
MAX_REFRESH_TOKEN_LENGTH = 256
TOKEN_TYPE = "Bearer"  # noqa: S105 - the scheme name, not a secret

audit = logging.getLogger("gatepass.audit")


def hash_refresh_token(token: str) -> str:
    """The store key of a refresh token: hex SHA-256 (the token itself is never stored)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    family_id: str

    def __repr__(self) -> str:
        return f"TokenPair(family_id={self.family_id!r})"

    def as_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": TOKEN_TYPE,
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


class RefreshTokens:
    """Starts refresh families at login and rotates their tokens."""

    def __init__(
        self,
        store: FamilyStore,
        access: AccessTokens,
        revocations: RevocationView,
        *,
        ttl: int,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._store = store
        self._access = access
        self._revocations = revocations
        self._ttl = ttl
        self._metrics = metrics
        self._clock = clock

    async def start_family(
        self,
        user: UserRecord,
        *,
        ip: str | None,
        user_agent: str | None,
        limit: SessionLimit,
        detail: str | None = None,
    ) -> tuple[TokenPair, Evicted]:
        """A new family and its first pair for ``user``, as read before its password
        was checked; :class:`CredentialsChanged` (with ``detail``) when the user's
        credentials changed since. Also returns what was ended to stay within
        ``limit``."""
        now = self._clock()
        family = FamilyRecord(
            id=secrets.token_urlsafe(FAMILY_ID_BYTES),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + self._ttl,
            ip=ip,
            user_agent=user_agent[:512] if user_agent else None,
        )
        refresh = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        evicted = await self._store.create_family(
            family,
            hash_refresh_token(refresh),
            credential_version=user.credential_version,
            limit=limit,
        )
        if evicted is None:
            raise CredentialsChanged(detail)
        return await self._pair(user, family.id, refresh), evicted

    async def rotate(self, presented: str) -> TokenPair:
        """Trade a live refresh token for a new pair, or raise :class:`InvalidRefreshToken`."""
        if not presented or len(presented) > MAX_REFRESH_TOKEN_LENGTH or not presented.isascii():
            raise InvalidRefreshToken()
        fresh = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        outcome = await self._store.rotate_refresh_token(
            hash_refresh_token(presented), hash_refresh_token(fresh), self._clock()
        )
        family = outcome.family
        if outcome.status is RotationStatus.REUSED and family is not None:
            await self._revocations.sync_quietly()
            self._metrics.refresh_reuse.inc()
            self._metrics.revocations.labels(reason="reuse").inc()
            audit.warning(
                "refresh token reuse: family %s of user %s revoked", family.id, family.user_id
            )
            raise InvalidRefreshToken()
        if outcome.status is not RotationStatus.ROTATED or family is None or outcome.user is None:
            raise InvalidRefreshToken()
        self._metrics.refreshes.inc()
        return await self._pair(outcome.user, family.id, fresh)

    async def _pair(self, user: UserRecord, family_id: str, refresh: str) -> TokenPair:
        # A node that only issues tokens must still pick up a rotation done elsewhere.
        await self._access.ring.refresh_if_stale()
        access = self._access.issue(user.id, family_id, user.roles)
        self._metrics.tokens_issued.inc()
        return TokenPair(access.token, access.expires_in, refresh, family_id)

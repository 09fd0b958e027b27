"""Refresh-token families: issue, rotate, detect reuse.

One family per token login. Each refresh token is 256 random bits, stored
only as its SHA-256, and good for exactly one rotation. The family's absolute
lifetime runs from the login, not from the last rotation. Presenting a token
that was already rotated means two parties hold it, one of them a thief
(RFC 9700 §4.14.2): the whole family dies, the newest token and every access
token of the family included.

With a reuse grace (``GATEPASS_REFRESH_REUSE_GRACE`` seconds, off by default),
a client that lost the answer to its rotation, or sent two refreshes at once,
may present the rotated token again within the grace: it gets the same new
refresh token and a freshly signed access token of the same family, and the
family lives. Only while that new token is unused: once the successor itself
was rotated, whoever still presents the older token is not the client that went
on (a thief, or a client replaying state it already moved past), so that is
reuse, grace or not. After the grace, every reuse kills the family again.
A grace is a window in which a stolen just-rotated token is as good as its
successor; keep it to seconds. How the successor is kept: :class:`SuccessorSeal`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatepass.clock import Clock
from gatepass.errors import CredentialsChanged
from gatepass.errors import InvalidRefreshToken as InvalidRefreshToken  # re-exported
from gatepass.freshness import UNKNOWN_PROOF, SignInProof
from gatepass.metrics import Metrics
from gatepass.revocation import RevocationView
from gatepass.stores.base import (
    Evicted,
    FamilyRecord,
    FamilyStore,
    RotationOutcome,
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


_SEAL_INFO = b"gatepass refresh successor v1"
_NONCE_BYTES = 12


class SuccessorSeal:
    """Keeps a rotation's new refresh token so that only the rotated one opens it.

    The store keeps hashes, never tokens, so to hand the same successor out again
    on a retry the server must be able to rebuild it from what the retry brings.
    The successor stays random (not derived from its predecessor: a chain whose
    every link follows from the previous one and a server secret would give a
    thief of one old token and that secret every later token). It is sealed with
    AES-256-GCM under a key derived by HKDF-SHA256 from the *rotated token* (the
    input key material, 256 random bits the store never holds) salted with a
    server secret. So a copy of the database alone opens nothing, not even with
    the server's secrets (they may live in that same database); the rotated
    token opens only its own successor; a forged or altered seal fails its tag.

    ``server_secrets``: the first seals, all open (the session secrets, rotated
    the same way). A seal made under a secret since removed no longer opens: the
    retry is then refused, and the family lives on with its successor.
    """

    def __init__(self, server_secrets: Sequence[str]) -> None:
        if not server_secrets:
            raise ValueError("SuccessorSeal needs at least one server secret")
        self._salts = [s.encode() for s in server_secrets]

    def __repr__(self) -> str:
        return "SuccessorSeal(...)"

    @staticmethod
    def _cipher(rotated: str, salt: bytes) -> AESGCM:
        key = HKDF(hashes.SHA256(), 32, salt, _SEAL_INFO).derive(rotated.encode("ascii"))
        return AESGCM(key)

    def seal(self, rotated: str, successor: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._cipher(rotated, self._salts[0]).encrypt(nonce, successor.encode(), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, rotated: str, sealed: str) -> str | None:
        """The successor, or ``None`` when ``sealed`` is not a seal of ``rotated``'s."""
        try:
            raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        except (binascii.Error, ValueError):
            return None
        nonce, body = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for salt in self._salts:
            try:
                return self._cipher(rotated, salt).decrypt(nonce, body, None).decode("ascii")
            except (InvalidTag, ValueError):
                continue
        return None


class RefreshTokens:
    """Starts refresh families at login and rotates their tokens.

    ``reuse_grace`` (seconds, 0 = off) needs ``seal``: see the module docstring.
    """

    def __init__(
        self,
        store: FamilyStore,
        access: AccessTokens,
        revocations: RevocationView,
        *,
        ttl: int,
        metrics: Metrics,
        clock: Clock,
        reuse_grace: int = 0,
        seal: SuccessorSeal | None = None,
    ) -> None:
        if reuse_grace < 0:
            raise ValueError("reuse_grace must not be negative")
        if reuse_grace and seal is None:
            raise ValueError("a reuse grace needs a SuccessorSeal")
        self._store = store
        self._access = access
        self._revocations = revocations
        self._ttl = ttl
        self._metrics = metrics
        self._clock = clock
        self._grace = reuse_grace
        self._seal = seal if reuse_grace else None

    async def start_family(
        self,
        user: UserRecord,
        *,
        ip: str | None,
        user_agent: str | None,
        proof: SignInProof = UNKNOWN_PROOF,
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
            auth_time=proof.auth_time,
            amr=proof.amr,
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
        return await self._pair(user, family, refresh), evicted

    async def rotate(self, presented: str) -> TokenPair:
        """Trade a live refresh token for a new pair, or raise :class:`InvalidRefreshToken`."""
        if not presented or len(presented) > MAX_REFRESH_TOKEN_LENGTH or not presented.isascii():
            raise InvalidRefreshToken()
        fresh = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        outcome = await self._store.rotate_refresh_token(
            hash_refresh_token(presented),
            hash_refresh_token(fresh),
            self._clock(),
            sealed_successor=self._seal.seal(presented, fresh) if self._seal else None,
            reuse_grace=self._grace,
        )
        family = outcome.family
        if outcome.status is RotationStatus.RETRIED:
            return await self._retried(presented, outcome)
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
        return await self._pair(outcome.user, family, fresh)

    async def _retried(self, presented: str, outcome: RotationOutcome) -> TokenPair:
        """A retry within the grace: the successor the rotation issued, again, with a
        newly signed access token of the same family."""
        family, user, sealed = outcome.family, outcome.user, outcome.sealed_successor
        successor = self._seal.open(presented, sealed) if self._seal and sealed else None
        if family is None or user is None or successor is None:
            raise InvalidRefreshToken()
        audit.info("refresh token retried within the reuse grace: family %s", family.id)
        return await self._pair(user, family, successor)

    async def _pair(self, user: UserRecord, family: FamilyRecord, refresh: str) -> TokenPair:
        # A node that only issues tokens must still pick up a rotation done elsewhere.
        await self._access.ring.refresh_if_stale()
        access = self._access.issue(
            user.id,
            family.id,
            user.roles,
            proof=SignInProof(family.auth_time, family.amr),
        )
        self._metrics.tokens_issued.inc()
        return TokenPair(access.token, access.expires_in, refresh, family.id)

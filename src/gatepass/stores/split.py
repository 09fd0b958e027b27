"""The scaled-out store: the database (PostgreSQL) for the durable records, Redis for
browser sessions (DESIGN §2, "What lives where").

:class:`SplitStore` is a :class:`~gatepass.stores.base.Store` made of the two. It
adds what neither can do alone:

* the per-user limit counts sessions (Redis) and refresh families (database)
  together: before a sign-in stores its credential, the oldest beyond the limit
  are ended, families first revoked in the database (kill first), sessions in the
  same Redis script that stores the new one;
* a session check returns the session and its user: the session from Redis (one
  round trip), the user from a per-process :class:`~gatepass.stores.user_cache.UserCache`
  (30 s; the database is read on a miss). Whatever ends a user's credentials ends the
  sessions themselves, so a stale cached user never keeps a session alive; it
  only delays a change of email or roles by that long, as on the Bearer path.

Two concurrent sign-ins of one user may each see room for themselves, so a user
can briefly hold one credential more per concurrent sign-in than the limit; the
next sign-in brings the count back.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from gatepass.clock import Clock
from gatepass.errors import StoreUnavailable
from gatepass.freshness import SignInProof
from gatepass.stores.base import (
    Evicted,
    FamilyRecord,
    LinkRecord,
    PasskeyRecord,
    PendingSignInRecord,
    RevocationEvent,
    RotationOutcome,
    SessionLimit,
    SessionRecord,
    SigningKeyRecord,
    TotpRecord,
    UserRecord,
    WebAuthnChallengeRecord,
)
from gatepass.stores.redis_connection import RedisClient
from gatepass.stores.redis_sessions import RedisSessionStore
from gatepass.stores.sql import SqlStore
from gatepass.stores.user_cache import UserCache

SESSION_MAC_SECRET_NAME = "redis-session-key-1"  # noqa: S105 - a row name, not a secret
MAC_KEY_BYTES = 32


def _new_key() -> str:
    return secrets.token_urlsafe(MAC_KEY_BYTES)


class SplitStore:
    """Users, keys, families, revocations and secrets in ``database``; sessions in
    ``sessions`` (Redis)."""

    def __init__(
        self,
        database: SqlStore,
        sessions: RedisSessionStore,
        *,
        redis: RedisClient,
        clock: Clock,
    ) -> None:
        self.database = database
        self.sessions = sessions
        #: The Redis client, shared with the counters and the event bus.
        self.redis = redis
        self._clock = clock
        self._users = UserCache(database, clock)

    def __repr__(self) -> str:
        return f"SplitStore({self.database!r}, {self.sessions!r})"

    # lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the database (migrating as :class:`SqlStore` does) and check that
        Redis answers, so a node with a wrong URL stops at once with one line."""
        await self.database.start()
        key = await self.database.get_or_create_secret(SESSION_MAC_SECRET_NAME, _new_key)
        self.sessions.use_mac_key(key.encode("ascii"))
        try:
            await self.sessions.ping()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"redis: {exc}", store="redis") from exc

    async def close(self) -> None:
        try:
            await self.database.close()
        finally:
            await self.redis.aclose()

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` naming whichever store is down."""
        try:
            await self.database.ping()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"database: {exc}", store="database") from exc
        try:
            await self.sessions.ping()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"redis: {exc}", store="redis") from exc

    # users -------------------------------------------------------------------

    async def create_user(
        self, email: str, password_hash: str, roles: Sequence[str], now: float
    ) -> UserRecord:
        return await self.database.create_user(email, password_hash, roles, now)

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self.database.get_user(user_id)

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        return await self.database.get_user_by_email(email)

    async def set_password_hash(self, user_id: str, password_hash: str, *, previous: str) -> bool:
        self.forget_user(user_id)
        return await self.database.set_password_hash(user_id, password_hash, previous=previous)

    async def change_credentials(
        self,
        user_id: str,
        now: float,
        *,
        password_hash: str | None = None,
        credential_version: int | None = None,
    ) -> int | None:
        try:
            return await self.database.change_credentials(
                user_id, now, password_hash=password_hash, credential_version=credential_version
            )
        finally:
            self.forget_user(user_id)

    async def mark_email_verified(self, user_id: str, email: str) -> UserRecord | None:
        try:
            return await self.database.mark_email_verified(user_id, email)
        finally:
            self.forget_user(user_id)

    async def change_email(self, user_id: str, new_email: str) -> UserRecord | None:
        try:
            return await self.database.change_email(user_id, new_email)
        finally:
            self.forget_user(user_id)

    async def delete_user(self, user_id: str, now: float) -> bool:
        """Delete the user from the database. Its Redis sessions are the caller's to
        end first (:meth:`end_user_sessions`, under a version floor that refuses a
        sign-in in flight), so a failure here leaves the user signed out, not alive."""
        try:
            return await self.database.delete_user(user_id, now)
        finally:
            self.forget_user(user_id)

    # one-time links ------------------------------------------------------------

    async def create_link(self, link: LinkRecord) -> None:
        await self.database.create_link(link)

    async def peek_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        return await self.database.peek_link(token_hash, purposes, now)

    async def consume_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        return await self.database.consume_link(token_hash, purposes, now)

    # sign-ins pending a second factor ---------------------------------------------

    async def create_pending_sign_in(self, pending: PendingSignInRecord) -> None:
        await self.database.create_pending_sign_in(pending)

    async def get_pending_sign_in(self, token_hash: str, now: float) -> PendingSignInRecord | None:
        return await self.database.get_pending_sign_in(token_hash, now)

    async def fail_pending_sign_in(self, token_hash: str, *, max_failures: int) -> bool:
        return await self.database.fail_pending_sign_in(token_hash, max_failures=max_failures)

    async def consume_pending_sign_in(
        self, token_hash: str, now: float
    ) -> PendingSignInRecord | None:
        return await self.database.consume_pending_sign_in(token_hash, now)

    def forget_user(self, user_id: str | None) -> None:
        """Drop the cached user (its credentials, roles or existence changed), or
        every cached user (``None``: events may have been missed)."""
        self._users.drop(user_id)

    # sessions ----------------------------------------------------------------

    async def _beyond_limit(
        self, user_id: str, limit: SessionLimit, now: float
    ) -> tuple[list[SessionRecord], list[FamilyRecord], set[str]]:
        """The user's live sessions and families, and the names (handles, family IDs)
        of the least recently used beyond ``limit`` less one (the sign-in about to
        be stored), ordered as the SQL store orders them: last used, then created."""
        families = await self.database.list_families(user_id, now)
        stored = await self.list_sessions(user_id)
        by_age = sorted(
            [(s.last_seen_at, s.created_at, s.handle) for s in stored]
            + [(f.last_used_at, f.created_at, f.id) for f in families]
        )
        excess = max(0, len(by_age) - (limit.max_per_user - 1))
        return stored, families, {name for _, _, name in by_age[:excess]}

    async def _room(self, user_id: str, limit: SessionLimit) -> tuple[Evicted, int]:
        """Revoke the user's families beyond the limit (kill first, in the database);
        return them and how many families remain. Sessions beyond it are ended by
        the Redis script that stores the new one."""
        now = self._clock()
        _, families, victims = await self._beyond_limit(user_id, limit, now)
        revoked = [
            f.id
            for f in families
            if f.id in victims and await self.database.revoke_family(f.id, now, user_id)
        ]
        return Evicted(families=tuple(revoked)), len(families) - len(revoked)

    async def insert_session(
        self, record: SessionRecord, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        evicted, families = await self._room(record.user_id, limit)
        # Sessions may take what the remaining families leave (at least this one).
        session_limit = SessionLimit(
            max(1, limit.max_per_user - families), limit.idle_timeout, limit.absolute_timeout
        )
        stored = await self.sessions.insert_session(
            record, credential_version=credential_version, limit=session_limit
        )
        if stored is None:
            return None
        return Evicted(sessions=stored.sessions, families=evicted.families)

    async def get_session(self, id_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        stored = await self.sessions.get_stored(id_hash)
        if stored is None:
            return None
        user = await self._users.get(stored.record.user_id)
        if user is None:
            return None
        if stored.credential_version < user.credential_version:
            # Granted before a password change or logout-all whose end of it Redis
            # lost (a replica behind, a restore): the database says it is dead.
            await self.sessions.delete_session(id_hash)
            return None
        return stored.record, user

    async def renew_session_proof(self, id_hash: str, proof: SignInProof) -> bool:
        return await self.sessions.renew_session_proof(id_hash, proof)

    async def touch_session(self, id_hash: str, now: float) -> None:
        await self.sessions.touch_session(id_hash, now)

    async def delete_session(self, id_hash: str) -> bool:
        return await self.sessions.delete_session(id_hash)

    async def delete_session_by_handle(self, user_id: str, handle: str) -> bool:
        return await self.sessions.delete_session_by_handle(user_id, handle)

    async def list_sessions(self, user_id: str) -> list[SessionRecord]:
        """The user's live sessions: those granted under the current credentials."""
        stored = await self.sessions.list_stored(user_id)
        if not stored:
            return []
        user = await self._users.get(user_id)
        if user is None:
            return []
        return [s.record for s in stored if s.credential_version >= user.credential_version]

    async def end_user_sessions(self, user_id: str, *, min_credential_version: int) -> int:
        return await self.sessions.end_user_sessions(
            user_id, min_credential_version=min_credential_version
        )

    # maintenance -------------------------------------------------------------

    async def prune_expired(
        self, now: float, *, session_idle: float, session_absolute: float
    ) -> int:
        # Redis expires sessions by itself; the database still holds families.
        return await self.database.prune_expired(
            now, session_idle=session_idle, session_absolute=session_absolute
        )

    # signing keys ------------------------------------------------------------

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        return await self.database.list_signing_keys()

    async def save_signing_keys(
        self, upserts: Sequence[SigningKeyRecord], deletes: Sequence[str]
    ) -> None:
        await self.database.save_signing_keys(upserts, deletes)

    # refresh families --------------------------------------------------------

    async def create_family(
        self, family: FamilyRecord, token_hash: str, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        stored, _, victims = await self._beyond_limit(family.user_id, limit, self._clock())
        ended = [
            r.handle
            for r in stored
            if r.handle in victims
            and await self.sessions.delete_session_by_handle(family.user_id, r.handle)
        ]
        # Families may take what the remaining sessions leave; the database ends
        # the oldest beyond that in the transaction that stores this one.
        family_limit = SessionLimit(
            max(1, limit.max_per_user - (len(stored) - len(ended))),
            limit.idle_timeout,
            limit.absolute_timeout,
        )
        created = await self.database.create_family(
            family, token_hash, credential_version=credential_version, limit=family_limit
        )
        if created is None:
            return None
        return Evicted(sessions=tuple(ended), families=created.families)

    async def rotate_refresh_token(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        *,
        sealed_successor: str | None = None,
        reuse_grace: float = 0.0,
    ) -> RotationOutcome:
        return await self.database.rotate_refresh_token(
            old_hash, new_hash, now, sealed_successor=sealed_successor, reuse_grace=reuse_grace
        )

    async def revoke_family(self, family_id: str, now: float, user_id: str | None = None) -> bool:
        return await self.database.revoke_family(family_id, now, user_id)

    async def renew_family_proof(self, family_id: str, user_id: str, proof: SignInProof) -> bool:
        return await self.database.renew_family_proof(family_id, user_id, proof)

    async def list_families(self, user_id: str, now: float) -> list[FamilyRecord]:
        return await self.database.list_families(user_id, now)

    # revocations -------------------------------------------------------------

    async def revoke_jti(self, jti: str, expires_at: float, now: float) -> None:
        await self.database.revoke_jti(jti, expires_at, now)

    async def revoke_token(
        self, jti: str, expires_at: float, family_id: str, user_id: str, now: float
    ) -> None:
        await self.database.revoke_token(jti, expires_at, family_id, user_id, now)

    async def revocation_events(self, after_id: int) -> list[RevocationEvent]:
        return await self.database.revocation_events(after_id)

    async def prune_revocations(self, created_before: float) -> int:
        return await self.database.prune_revocations(created_before)

    # secrets -----------------------------------------------------------------

    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        return await self.database.get_or_create_secret(name, make)

    # second factors ------------------------------------------------------------

    async def save_pending_totp(self, user_id: str, sealed_secret: str, now: float) -> bool:
        return await self.database.save_pending_totp(user_id, sealed_secret, now)

    async def get_totp(self, user_id: str) -> TotpRecord | None:
        return await self.database.get_totp(user_id)

    async def activate_totp(
        self, user_id: str, sealed_secret: str, step: int, code_hashes: Sequence[str]
    ) -> bool:
        return await self.database.activate_totp(user_id, sealed_secret, step, code_hashes)

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        return await self.database.accept_totp_step(user_id, step)

    async def delete_totp(self, user_id: str) -> bool:
        return await self.database.delete_totp(user_id)

    async def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        return await self.database.replace_recovery_codes(user_id, code_hashes)

    async def consume_recovery_code(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        return await self.database.consume_recovery_code(user_id, code_hashes)

    async def count_recovery_codes(self, user_id: str) -> int:
        return await self.database.count_recovery_codes(user_id)

    # passkeys ----------------------------------------------------------------

    async def get_or_create_user_handle(self, user_id: str, make: Callable[[], bytes]) -> bytes:
        return await self.database.get_or_create_user_handle(user_id, make)

    async def get_user_handle(self, user_id: str) -> bytes | None:
        return await self.database.get_user_handle(user_id)

    async def create_webauthn_challenge(self, challenge: WebAuthnChallengeRecord) -> None:
        await self.database.create_webauthn_challenge(challenge)

    async def consume_webauthn_challenge(
        self, challenge_hash: str, ceremony: str, user_id: str | None, now: float
    ) -> bool:
        return await self.database.consume_webauthn_challenge(
            challenge_hash, ceremony, user_id, now
        )

    async def add_passkey(self, passkey: PasskeyRecord) -> None:
        await self.database.add_passkey(passkey)

    async def get_passkey_by_credential_id(self, credential_id: bytes) -> PasskeyRecord | None:
        return await self.database.get_passkey_by_credential_id(credential_id)

    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        return await self.database.list_passkeys(user_id)

    async def count_passkeys(self, user_id: str) -> int:
        return await self.database.count_passkeys(user_id)

    async def rename_passkey(
        self, user_id: str, passkey_id: str, name: str
    ) -> PasskeyRecord | None:
        return await self.database.rename_passkey(user_id, passkey_id, name)

    async def delete_passkey(self, user_id: str, passkey_id: str) -> bool:
        return await self.database.delete_passkey(user_id, passkey_id)

    async def record_passkey_use(self, passkey_id: str, sign_count: int, now: float) -> bool:
        return await self.database.record_passkey_use(passkey_id, sign_count, now)

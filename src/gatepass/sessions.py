"""Server-side browser sessions: opaque IDs, signed cookies, idle and absolute timeouts.

The cookie carries a 256-bit random ID and an HMAC-SHA256 signature over it
(itsdangerous). The store keeps only SHA-256 of the ID, so a copy of the
database does not let anyone sign in. Whether a stored session is still valid
is decided by :func:`session_state`, a pure function of the record, the
policy and the time.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import Signer

from gatepass._singleflight import SingleFlight
from gatepass.clock import Clock
from gatepass.errors import CredentialsChanged
from gatepass.events import EventBus, LocalEventBus, SessionsEnded
from gatepass.freshness import UNKNOWN_PROOF, SignInProof
from gatepass.stores.base import (
    SLOT_TAG_LENGTH,
    Evicted,
    SessionLimit,
    SessionRecord,
    SessionStore,
    UserRecord,
    slot_tag,
)

SESSION_ID_BYTES = 32
CSRF_TOKEN_BYTES = 32
HANDLE_BYTES = 16
#: A signed cookie is ~87 characters; anything far longer is not ours.
MAX_COOKIE_LENGTH = 256
_SIGNER_SALT = "gatepass.session-cookie"
_SHA256_BLOCK = 64
#: A loaded session is reused from memory for this long. Sessions this process
#: ends are forgotten at once; ones another process ends stop working here
#: within this time (the same bound as the access-token revocation feed).
SESSION_CACHE_SECONDS = 1.0
SESSION_CACHE_SIZE = 10_000
_HEX = frozenset("0123456789abcdef")
#: A tagged session ID: the slot tag, then 43 URL-safe characters (32 bytes).
TAGGED_ID_LENGTH = SLOT_TAG_LENGTH + 43


def _is_tag(text: str) -> bool:
    return len(text) == SLOT_TAG_LENGTH and _HEX.issuperset(text)


def hash_session_id(session_id: str) -> str:
    """The store key of a session: hex SHA-256 of its secret ID, whose first
    characters are replaced by the slot tag the ID starts with (IDs minted before
    tags existed keep the plain digest).

    The tag is public routing data (:func:`gatepass.stores.base.slot_tag`); the
    other 240 bits of the digest still name the session.
    """
    digest = hashlib.sha256(session_id.encode("ascii")).hexdigest()
    tag = session_id[:SLOT_TAG_LENGTH]
    if len(session_id) == TAGGED_ID_LENGTH and _is_tag(tag):
        return tag + digest[SLOT_TAG_LENGTH:]
    return digest


def new_session_id(user_id: str) -> str:
    """A fresh secret session ID: the user's slot tag, then 256 random bits."""
    return slot_tag(user_id) + secrets.token_urlsafe(SESSION_ID_BYTES)


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 after the inner and the outer HMAC pad of ``key`` (at most one block)."""
    block = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


class CookieSigner:
    """Signs session IDs with the first secret and accepts any of them (rotation).

    The format is itsdangerous' ``Signer`` (HMAC key derivation, SHA-256): signing
    goes through it. Checking runs on every cookie-authenticated request, so it is
    done here with the derived keys computed once, and it accepts only the
    canonical encoding of a signature (itsdangerous' decoder skips characters
    outside the alphabet and padding, so one signature had many spellings).
    """

    def __init__(self, secrets_: Sequence[str]) -> None:
        if not secrets_:
            raise ValueError("at least one session secret is required")
        # itsdangerous signs with the *last* key; our setting lists the signing key first.
        self._signer = Signer(
            list(reversed(secrets_)),
            salt=_SIGNER_SALT,
            key_derivation="hmac",
            digest_method=hashlib.sha256,
        )
        # As Signer.derive_key("hmac"): HMAC-SHA256(secret, salt), the signing key first;
        # each kept as the SHA-256 states after its HMAC pads (RFC 2104), which makes
        # a check two hash copies instead of a keyed HMAC set up per request.
        salt = _SIGNER_SALT.encode("utf-8")
        self._pads = tuple(
            _hmac_pads(hmac.digest(s.encode("utf-8"), salt, "sha256")) for s in secrets_
        )

    def __repr__(self) -> str:
        return "CookieSigner(<secrets hidden>)"

    def sign(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode("ascii")

    def unsign(self, cookie_value: str) -> str | None:
        """The session ID inside a genuine cookie value, else ``None``."""
        if not cookie_value or len(cookie_value) > MAX_COOKIE_LENGTH or not cookie_value.isascii():
            return None
        session_id, dot, signature = cookie_value.rpartition(".")
        if not dot:
            return None
        message = session_id.encode("ascii")
        presented = signature.encode("ascii")
        for inner_pad, outer_pad in self._pads:
            inner = inner_pad.copy()
            inner.update(message)
            outer = outer_pad.copy()
            outer.update(inner.digest())
            expected = base64.urlsafe_b64encode(outer.digest()).rstrip(b"=")
            if hmac.compare_digest(expected, presented):
                return session_id
        return None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Idle (rolling) and absolute timeouts, in seconds."""

    idle_timeout: float
    absolute_timeout: float

    def limit(self, max_per_user: int) -> SessionLimit:
        """What a sign-in must keep its user within: ``max_per_user`` live sessions
        and families, sessions expiring by this policy."""
        return SessionLimit(max_per_user, self.idle_timeout, self.absolute_timeout)

    @property
    def touch_interval(self) -> float:
        """Write ``last_seen_at`` at most this often: min(60 s, 10 % of the idle timeout)."""
        return min(60.0, self.idle_timeout / 10)


class SessionState(enum.Enum):
    VALID = "valid"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"


def session_state(record: SessionRecord, now: float, policy: SessionPolicy) -> SessionState:
    """Decide whether ``record`` is usable at ``now``. Pure: no I/O."""
    if now - record.created_at >= policy.absolute_timeout:
        return SessionState.ABSOLUTE_EXPIRED
    if now - record.last_seen_at >= policy.idle_timeout:
        return SessionState.IDLE_EXPIRED
    return SessionState.VALID


def needs_touch(record: SessionRecord, now: float, policy: SessionPolicy) -> bool:
    """Whether ``last_seen_at`` is old enough to be written again. Pure."""
    return now - record.last_seen_at >= policy.touch_interval


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session: the signed cookie value for the client and the stored record."""

    cookie_value: str
    record: SessionRecord

    def __repr__(self) -> str:
        return f"IssuedSession(handle={self.record.handle!r})"


@dataclass(frozen=True, slots=True)
class ActiveSession:
    record: SessionRecord
    user: UserRecord


class SessionManager:
    """Creates, loads, rotates and ends sessions on a :class:`SessionStore`."""

    def __init__(
        self,
        store: SessionStore,
        signer: CookieSigner,
        policy: SessionPolicy,
        clock: Clock,
        *,
        cache_seconds: float = SESSION_CACHE_SECONDS,
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        #: 0 when every node must see a session end at once (a shared session store:
        #: each check is then one store round trip).
        self._cache_seconds = cache_seconds
        self._signer = signer
        self.policy = policy
        self._clock = clock
        # Sessions this process ends are announced, so other processes drop them
        # from their caches at once (without a bus: within SESSION_CACHE_SECONDS).
        self._bus: EventBus = bus if bus is not None else LocalEventBus()
        # id_hash -> (record, user, loaded_at): at most one store read per session
        # per SESSION_CACHE_SECONDS on the request path.
        self._cache: dict[str, tuple[SessionRecord, UserRecord, float]] = {}
        # Bumped whenever this process ends sessions, so a read that was in flight
        # meanwhile is not cached (it may hold a session that just ended).
        self._generation = 0
        self._reads: SingleFlight[str, tuple[tuple[SessionRecord, UserRecord] | None, int]] = (
            SingleFlight()
        )

    def new_session(
        self,
        user_id: str,
        *,
        ip: str | None,
        user_agent: str | None,
        proof: SignInProof = UNKNOWN_PROOF,
        created_at: float | None = None,
    ) -> IssuedSession:
        """Mint a session (not yet stored) for a sign-in made as ``proof`` says.
        ``created_at`` keeps an absolute timeout on rotation."""
        now = self._clock()
        session_id = new_session_id(user_id)
        record = SessionRecord(
            id_hash=hash_session_id(session_id),
            handle=secrets.token_urlsafe(HANDLE_BYTES),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(CSRF_TOKEN_BYTES),
            created_at=now if created_at is None else created_at,
            last_seen_at=now,
            ip=ip,
            user_agent=user_agent[:512] if user_agent else None,
            auth_time=proof.auth_time,
            amr=proof.amr,
        )
        return IssuedSession(self._signer.sign(session_id), record)

    def regenerated(self, record: SessionRecord, proof: SignInProof | None = None) -> IssuedSession:
        """The same device under a new secret ID and CSRF token; the login time is kept,
        and the sign-in proof unless a new one is given."""
        fresh = self.new_session(
            record.user_id,
            ip=record.ip,
            user_agent=record.user_agent,
            proof=proof or SignInProof(record.auth_time, record.amr),
            created_at=record.created_at,
        )
        return IssuedSession(fresh.cookie_value, replace(fresh.record, handle=record.handle))

    async def create(
        self,
        user: UserRecord,
        *,
        ip: str | None,
        user_agent: str | None,
        proof: SignInProof = UNKNOWN_PROOF,
        max_per_user: int,
        detail: str | None = None,
    ) -> tuple[IssuedSession, Evicted]:
        """Store a new session for ``user``, as read before its password was checked.

        Raises :class:`CredentialsChanged` (with ``detail``) when the user's
        credentials changed since that read: nothing is stored. Returns the session
        and what was ended to stay within ``max_per_user``.
        """
        issued = self.new_session(user.id, ip=ip, user_agent=user_agent, proof=proof)
        evicted = await self._store.insert_session(
            issued.record,
            credential_version=user.credential_version,
            limit=self.policy.limit(max_per_user),
        )
        if evicted is None:
            raise CredentialsChanged(detail)
        if evicted.sessions:
            self.forget(handles=evicted.sessions)
        return issued, evicted

    def id_hash_of(self, cookie_value: str | None) -> str | None:
        """Store key for a presented cookie, or ``None`` when its signature is not ours."""
        if cookie_value is None:
            return None
        session_id = self._signer.unsign(cookie_value)
        return hash_session_id(session_id) if session_id is not None else None

    async def load(self, cookie_value: str | None) -> ActiveSession | None:
        """The live session behind a cookie, or ``None``. Expired sessions are deleted.

        Raises :class:`~gatepass.errors.StoreUnavailable` while the event bus is not
        live (sessions ended by other processes might not be heard of)."""
        id_hash = self.id_hash_of(cookie_value)
        if id_hash is None:
            return None
        # No session is trusted, cached or read, while ends elsewhere may not reach us.
        self._bus.check_live()
        now = self._clock()
        cached = self._cache.get(id_hash)
        cacheable = True
        if cached is not None and now - cached[2] < self._cache_seconds:
            record, user, loaded_at = cached
        else:
            found, generation = await self._fetch_shared(id_hash)
            # Sessions were ended while the read was in flight: the answer is as old as
            # the request itself, so it serves this request, but it must not be kept.
            # (Never a re-read loop: logouts elsewhere could keep it spinning.)
            cacheable = generation == self._generation
            if found is None:
                self._cache.pop(id_hash, None)
                return None
            (record, user), loaded_at = found, now
        if session_state(record, now, self.policy) is not SessionState.VALID:
            self._cache.pop(id_hash, None)
            await self._store.delete_session(id_hash)
            return None
        touch = needs_touch(record, now, self.policy)
        if touch:
            record = replace(record, last_seen_at=now)
        if cacheable and self._cache_seconds > 0:
            # Cached before the write, so concurrent requests do not all write too.
            self._remember(id_hash, record, user, loaded_at)
        if touch:
            await self._store.touch_session(id_hash, now)
        return ActiveSession(record, user)

    async def _fetch_shared(
        self, id_hash: str
    ) -> tuple[tuple[SessionRecord, UserRecord] | None, int]:
        """One store read per session at a time: concurrent requests share it."""
        return await self._reads.run(id_hash, lambda: self._fetch(id_hash))

    async def _fetch(self, id_hash: str) -> tuple[tuple[SessionRecord, UserRecord] | None, int]:
        generation = self._generation
        return await self._store.get_session(id_hash), generation

    def _remember(
        self, id_hash: str, record: SessionRecord, user: UserRecord, loaded_at: float
    ) -> None:
        if id_hash not in self._cache and len(self._cache) >= SESSION_CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[id_hash] = (record, user, loaded_at)

    def forget(
        self,
        *,
        id_hash: str | None = None,
        user_id: str | None = None,
        handles: Sequence[str] = (),
    ) -> None:
        """Drop cached sessions this process just ended (by ID hash, user or handles),
        here and, through the bus, in the other processes. Call it after the store
        write, so no process reloads the session before it is gone."""
        self.drop_cached(id_hash=id_hash, user_id=user_id, handles=handles)
        self._announce(id_hash, user_id, handles)

    def drop_cached(
        self,
        *,
        id_hash: str | None = None,
        user_id: str | None = None,
        handles: Sequence[str] = (),
        everything: bool = False,
    ) -> None:
        """Drop cached sessions in this process only (``everything``: all of them)."""
        self._generation += 1
        if everything:
            self._cache.clear()
            self._store.forget_user(None)
        if user_id is not None:
            self._store.forget_user(user_id)
        if id_hash is not None:
            self._cache.pop(id_hash, None)
        if user_id is not None or handles:
            for key in [
                k
                for k, (r, _, _) in self._cache.items()
                if r.user_id == user_id or r.handle in handles
            ]:
                del self._cache[key]

    def _announce(self, id_hash: str | None, user_id: str | None, handles: Sequence[str]) -> None:
        if id_hash is not None or user_id is not None or handles:
            hashes = (id_hash,) if id_hash is not None else ()
            self._bus.announce(SessionsEnded(hashes, tuple(handles), user_id))

    async def destroy(self, record: SessionRecord) -> bool:
        # Dropped here before the delete (a read in flight meanwhile is not kept),
        # announced after it (no other process reloads it before it is gone).
        self.drop_cached(id_hash=record.id_hash)
        ended = await self._store.delete_session(record.id_hash)
        if ended:
            self._announce(record.id_hash, None, ())
        return ended

    async def destroy_cookie(self, cookie_value: str | None) -> bool:
        """End whatever session a presented cookie names, valid or not (fixation defence)."""
        id_hash = self.id_hash_of(cookie_value)
        if id_hash is None:
            return False
        self.drop_cached(id_hash=id_hash)
        ended = await self._store.delete_session(id_hash)
        if ended:
            self._announce(id_hash, None, ())
        return ended

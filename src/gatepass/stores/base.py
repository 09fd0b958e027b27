"""Records and the storage protocols the core is written against.

Stores do I/O and nothing else: they never decide whether a session is valid.
Every method raises :class:`~gatepass.errors.StoreUnavailable` when the backend
cannot be reached, so callers fail closed.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

# Re-exported: stores raise it, and callers catch it from here or from gatepass.errors.
from gatepass.errors import EmailTaken as EmailTaken
from gatepass.freshness import SignInProof

#: Hex characters of :func:`slot_tag`: 65,536 buckets, more than Redis Cluster's
#: 16,384 slots, and too few to single out a user.
SLOT_TAG_LENGTH = 4


def slot_tag(user_id: str) -> str:
    """The shard a user's sessions live in, as a short hex tag.

    A session ID starts with its user's tag, so a sharded store (Redis Cluster)
    finds the session from the cookie alone and keeps it in one slot with the
    user's session index: one user's keys move together, atomically. The tag is a
    hash prefix, not the user ID, so a cookie does not name its user.
    """
    digest = hashlib.sha256(b"gatepass-slot:" + user_id.encode()).hexdigest()
    return digest[:SLOT_TAG_LENGTH]


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: float
    #: Access tokens issued before this instant are invalid (logout-all, password change).
    tokens_valid_after: float = 0.0
    #: Moves whenever every credential of the user is killed (password change,
    #: logout-all). A sign-in stores what it grants only if the version it read
    #: before checking the password is still current, so a sign-in in flight
    #: loses to a password change or logout-all that commits meanwhile.
    credential_version: int = 0
    #: The address was proven by a verification (or e-mail change) link.
    email_verified: bool = False

    def __repr__(self) -> str:
        return f"UserRecord(id={self.id!r}, email={self.email!r}, roles={self.roles!r})"


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A one-time link sent by mail (:mod:`gatepass.links`). ``token_hash`` is the
    SHA-256 of the link's token, never the token; ``email`` is the address the link
    is for (for an e-mail change: the new address)."""

    token_hash: str
    purpose: str
    user_id: str
    email: str
    created_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"LinkRecord(purpose={self.purpose!r}, user_id={self.user_id!r})"


@dataclass(frozen=True, slots=True)
class PendingSignInRecord:
    """A sign-in whose password was right, waiting for its second factor. Known by
    the SHA-256 of its ``mfa_token``; it grants ``client`` (web, mobile, api) what
    a sign-in grants once finished, if the user's ``credential_version`` has not
    moved meanwhile."""

    token_hash: str
    user_id: str
    client: str
    credential_version: int
    #: The first factor's proof (the password step).
    auth_time: float
    amr: tuple[str, ...]
    created_at: float
    expires_at: float
    failures: int = 0

    def __repr__(self) -> str:
        return f"PendingSignInRecord(user_id={self.user_id!r}, client={self.client!r})"


@dataclass(frozen=True, slots=True)
class PasskeyRecord:
    """A stored WebAuthn credential (:mod:`gatepass.passkeys`). ``id`` is the public
    handle clients name it by; ``credential_id`` is the authenticator's own ID and
    ``public_key`` its COSE public key (neither is a secret, but neither is shown)."""

    id: str
    user_id: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    name: str
    created_at: float
    last_used_at: float | None = None

    def __repr__(self) -> str:
        return f"PasskeyRecord(id={self.id!r}, user_id={self.user_id!r})"


@dataclass(frozen=True, slots=True)
class WebAuthnChallengeRecord:
    """A WebAuthn challenge the server issued: stored only as the SHA-256 of the
    challenge, for one ``ceremony`` (``register``, ``login``, ``mfa``, ``reauth``)
    and, unless ``user_id`` is ``None``, for that user alone."""

    challenge_hash: str
    ceremony: str
    user_id: str | None
    expires_at: float

    def __repr__(self) -> str:
        return f"WebAuthnChallengeRecord(ceremony={self.ceremony!r}, user_id={self.user_id!r})"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored browser session. ``id_hash`` is SHA-256 of the secret ID, never the
    ID; its first :data:`SLOT_TAG_LENGTH` characters are the user's :func:`slot_tag`
    (see :func:`gatepass.sessions.hash_session_id`)."""

    id_hash: str
    handle: str
    user_id: str
    csrf_token: str
    created_at: float
    last_seen_at: float
    ip: str | None
    user_agent: str | None
    #: When and how the user last proved who they are in this session
    #: (:mod:`gatepass.freshness`; ``0`` / ``()``: unknown, never fresh).
    auth_time: float = 0.0
    amr: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"SessionRecord(handle={self.handle!r}, user_id={self.user_id!r})"


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A user's TOTP factor as stored. ``sealed_secret`` is opaque to the store
    (:mod:`gatepass.mfa` seals it); ``last_step`` is the RFC 6238 time step of the
    last accepted code (``None``: none yet)."""

    user_id: str
    sealed_secret: str
    active: bool
    last_step: int | None
    created_at: float

    def __repr__(self) -> str:
        return f"TotpRecord(user_id={self.user_id!r}, active={self.active!r})"


KeyState = Literal["next", "current", "retired"]


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A signing key as stored. ``private_material`` is PEM (or the HMAC secret)."""

    kid: str
    alg: str
    state: KeyState
    private_material: str
    created_at: float
    #: When the key stopped signing; it is published until every token it signed expired.
    retired_at: float | None = None

    def __repr__(self) -> str:
        return f"SigningKeyRecord(kid={self.kid!r}, alg={self.alg!r}, state={self.state!r})"


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    """A refresh-token family: one per token login. ``id`` is the ``sid`` of its
    access tokens and its public handle."""

    id: str
    user_id: str
    created_at: float
    last_used_at: float
    expires_at: float
    ip: str | None
    user_agent: str | None
    revoked: bool = False
    #: As :attr:`SessionRecord.auth_time` / :attr:`SessionRecord.amr`, for the
    #: family's access tokens.
    auth_time: float = 0.0
    amr: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Evicted:
    """What a sign-in ended to keep its user within the per-user limit."""

    #: Public handles of the browser sessions ended.
    sessions: tuple[str, ...] = ()
    #: IDs of the refresh families revoked.
    families: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sessions or self.families)


@dataclass(frozen=True, slots=True)
class SessionLimit:
    """How many browser sessions and live refresh families one user may hold, and
    when a stored session has expired (it then neither counts nor survives)."""

    max_per_user: int
    idle_timeout: float
    absolute_timeout: float


class RotationStatus(enum.Enum):
    ROTATED = "rotated"
    #: The token was already rotated: a thief or the victim replays it. Family revoked.
    REUSED = "reused"
    #: Unknown token, or its family is revoked or expired.
    INVALID = "invalid"
    #: The token was rotated less than the reuse grace ago and its successor is
    #: still unused: a client's retry. Nothing was written; ``sealed_successor``
    #: is what the rotation stored for it.
    RETRIED = "retried"


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    status: RotationStatus
    family: FamilyRecord | None = None
    user: UserRecord | None = None
    #: With ``RETRIED``: the opaque sealed successor stored by the rotation.
    sealed_successor: str | None = None


RevocationKind = Literal["jti", "family", "epoch"]


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One entry of the revocation feed every process follows.

    ``kind`` is ``jti`` (subject: a token ID), ``family`` (a refresh family) or
    ``epoch`` (a user ID; ``value`` is the instant before which that user's
    tokens are void). ``created_at`` lets the feed be pruned once every token it
    could concern has expired.
    """

    id: int
    kind: RevocationKind
    subject: str
    value: float
    created_at: float


@dataclass(frozen=True, slots=True)
class BearerState:
    """What revocation knows about one access token."""

    user: UserRecord | None
    family_live: bool
    jti_revoked: bool
    #: The user's epoch as the revocation feed knows it (may be newer than ``user``'s).
    epoch: float = 0.0


class UserStore(Protocol):
    async def create_user(
        self, email: str, password_hash: str, roles: Sequence[str], now: float
    ) -> UserRecord:
        """Insert a user; raise :class:`EmailTaken` when the email exists."""
        ...

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    async def get_user_by_email(self, email: str) -> UserRecord | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str, *, previous: str) -> bool:
        """Replace the hash (rehash on login) only if it is still ``previous``, so a
        rehash can never undo a password change that committed meanwhile."""
        ...

    async def change_credentials(
        self,
        user_id: str,
        now: float,
        *,
        password_hash: str | None = None,
        credential_version: int | None = None,
    ) -> int | None:
        """Kill every token credential of the user, in one transaction: move the
        credential version and the token epoch (to ``now``), revoke every refresh
        family (on the feed), end the sessions kept with the users (if any), and set
        ``password_hash`` when given. The user's pending e-mail change links die in
        the same transaction, and with ``password_hash`` its password-reset links
        too (a reset link dies when the password changes by any route).

        With ``credential_version``, only if it is still the user's (a password
        change: of two racing, one wins); else unconditionally (logout-all).
        Return the new credential version, or ``None`` when it had moved (nothing
        changed) or the user is gone.
        """
        ...

    async def mark_email_verified(self, user_id: str, email: str) -> UserRecord | None:
        """Mark the user's address verified if it is still ``email``, and delete the
        user's other verification links; ``None`` (nothing changed) otherwise."""
        ...

    async def change_email(self, user_id: str, new_email: str) -> UserRecord | None:
        """Move the user to ``new_email`` (verified: a link sent there was used) and
        delete the user's verification, change and reset links (all sent for the
        old address). Raise :class:`EmailTaken`
        when the address is another user's; ``None`` when the user is gone."""
        ...

    async def delete_user(self, user_id: str, now: float) -> bool:
        """Delete the user and, in the same transaction, everything it holds: its
        refresh families are revoked and its token epoch moved on the revocation
        feed (so every process refuses its access tokens at once), then the user,
        its sessions kept with it, families, tokens and links are deleted. ``False``
        when there was no such user."""
        ...


class LinkStore(Protocol):
    """One-time mail links, by the SHA-256 of their token."""

    async def create_link(self, link: LinkRecord) -> None: ...

    async def peek_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        """The live link (one of ``purposes``, not expired), left in place."""
        ...

    async def consume_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        """Delete and return the live link: of concurrent calls, one gets it."""
        ...


class PendingSignInStore(Protocol):
    """Sign-ins waiting for their second factor, by the SHA-256 of their token."""

    async def create_pending_sign_in(self, pending: PendingSignInRecord) -> None: ...

    async def get_pending_sign_in(self, token_hash: str, now: float) -> PendingSignInRecord | None:
        """The live (unexpired) pending sign-in, left in place."""
        ...

    async def fail_pending_sign_in(self, token_hash: str, *, max_failures: int) -> bool:
        """Count a wrong code against it; at ``max_failures`` it is deleted. ``True``
        when it is gone (now or before)."""
        ...

    async def consume_pending_sign_in(
        self, token_hash: str, now: float
    ) -> PendingSignInRecord | None:
        """Delete and return the live pending sign-in: of concurrent calls, one gets it."""
        ...


class SessionStore(Protocol):
    async def insert_session(
        self, record: SessionRecord, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        """Store a new session, in one transaction with two guards.

        Only if the user's :attr:`UserRecord.credential_version` still equals
        ``credential_version`` (checked under the user row's write lock, so a
        password change or logout-all committing meanwhile wins); otherwise store
        nothing and return ``None``. And within ``limit``: the user's expired
        sessions are deleted, and beyond ``limit.max_per_user`` live sessions and
        families the ones with the oldest ``last_seen_at`` / ``last_used_at`` (ties:
        oldest created) are ended and reported.
        """
        ...

    async def get_session(self, id_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session and its user in one round trip, or ``None``."""
        ...

    async def touch_session(self, id_hash: str, now: float) -> None: ...

    async def renew_session_proof(self, id_hash: str, proof: SignInProof) -> bool:
        """Record a new sign-in proof (``auth_time``, ``amr``) on a stored session,
        keeping its ID (a reauthentication grants nothing new); ``False`` when the
        session is gone."""
        ...

    async def delete_session(self, id_hash: str) -> bool: ...

    async def delete_session_by_handle(self, user_id: str, handle: str) -> bool:
        """Delete the user's session with this public handle; ``False`` if none."""
        ...

    async def list_sessions(self, user_id: str) -> list[SessionRecord]: ...

    def forget_user(self, user_id: str | None) -> None:
        """Drop whatever this store caches about the user (its credentials, roles or
        existence changed; ``None``: about every user). Stores that cache nothing do
        nothing."""
        ...

    async def end_user_sessions(self, user_id: str, *, min_credential_version: int) -> int:
        """End every session of the user and refuse, from now on, a session stored
        for a credential version below ``min_credential_version`` (a sign-in that
        read the user before the change under way). Return how many ended.

        The first write of a password change or logout-all (kill first): stores
        that keep sessions with the users (SQL) check the version against the
        user row anyway, stores that keep them elsewhere (Redis) keep this floor.
        """
        ...


class MaintenanceStore(Protocol):
    async def prune_expired(
        self, now: float, *, session_idle: float, session_absolute: float
    ) -> int:
        """Delete sessions past their idle or absolute timeout, refresh families past
        their lifetime (with their tokens), expired mail links and expired WebAuthn
        challenges; return how many rows went."""
        ...


class KeyStore(Protocol):
    """The signing-key ring."""

    async def list_signing_keys(self) -> list[SigningKeyRecord]: ...

    async def save_signing_keys(
        self, upserts: Sequence[SigningKeyRecord], deletes: Sequence[str]
    ) -> None:
        """Insert or update ``upserts`` and delete the ``deletes`` kids, in one transaction."""
        ...


class FamilyStore(Protocol):
    """Refresh-token families and their (hashed) tokens."""

    async def create_family(
        self, family: FamilyRecord, token_hash: str, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        """Store a new family and its first token, under the same two guards as
        :meth:`SessionStore.insert_session` (``None``: the credential version moved)."""
        ...

    async def rotate_refresh_token(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        *,
        sealed_successor: str | None = None,
        reuse_grace: float = 0.0,
    ) -> RotationOutcome:
        """Atomically retire ``old_hash`` and make ``new_hash`` the family's live token.

        Of many concurrent calls with one ``old_hash`` exactly one gets ``ROTATED``;
        the retired token keeps ``sealed_successor`` (opaque to the store). A token
        that was already rotated revokes its whole family (``REUSED``), except that
        within ``reuse_grace`` seconds of its rotation, while its successor is
        unused and the family alive, it is ``RETRIED`` (no write). A hash that
        names no token costs no write.
        """
        ...

    async def revoke_family(self, family_id: str, now: float, user_id: str | None = None) -> bool:
        """Revoke a family (of ``user_id`` when given) and publish it on the feed;
        ``False`` when there was no such live family."""
        ...

    async def renew_family_proof(self, family_id: str, user_id: str, proof: SignInProof) -> bool:
        """Record a new sign-in proof on a live family of ``user_id`` (its next access
        tokens carry it); ``False`` when there is no such live family."""
        ...

    async def list_families(self, user_id: str, now: float) -> list[FamilyRecord]:
        """The user's live families."""
        ...


class RevocationStore(Protocol):
    """The revocation feed every process follows (jti denylist, families, epochs)."""

    async def revoke_jti(self, jti: str, expires_at: float, now: float) -> None:
        """Deny ``jti`` (whose token expires at ``expires_at``) by publishing it on the feed."""
        ...

    async def revoke_token(
        self, jti: str, expires_at: float, family_id: str, user_id: str, now: float
    ) -> None:
        """Bearer logout in one transaction: deny ``jti`` and revoke its family."""
        ...

    async def revocation_events(self, after_id: int) -> list[RevocationEvent]:
        """Feed entries with an ID above ``after_id``, in ID order.

        IDs need not commit in order (PostgreSQL takes them from a sequence before
        the commit): a later call may return an ID below one returned earlier, so
        readers re-read from an ID below which they have seen everything
        (:class:`gatepass.revocation.RevocationView`).
        """
        ...

    async def prune_revocations(self, created_before: float) -> int:
        """Drop feed entries created before ``created_before``, but never the one with
        the highest ID (so no ID is handed out twice); return how many."""
        ...


class SecretStore(Protocol):
    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        """Return the secret stored under ``name``, creating it with ``make()`` once.

        Concurrent first starts agree on one value.
        """
        ...


class FactorStore(Protocol):
    """TOTP factors and recovery codes (:mod:`gatepass.mfa`); both go with the user."""

    async def save_pending_totp(self, user_id: str, sealed_secret: str, now: float) -> bool:
        """Store a TOTP setup, not active yet, replacing a pending one (and its
        ``last_step``); ``False`` (nothing written) when the user's TOTP is active."""
        ...

    async def get_totp(self, user_id: str) -> TotpRecord | None: ...

    async def activate_totp(
        self, user_id: str, sealed_secret: str, step: int, code_hashes: Sequence[str]
    ) -> bool:
        """In one transaction: activate the pending setup if it is still the one
        sealed as ``sealed_secret``, with ``step`` as its last accepted step, and
        make ``code_hashes`` the user's recovery codes (replacing any). ``False``
        (nothing written) when there is no such pending setup."""
        ...

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as the last accepted one if the TOTP is active and its last
        accepted step is below ``step``; of concurrent calls, one wins."""
        ...

    async def delete_totp(self, user_id: str) -> bool:
        """Remove the TOTP factor (active or pending) and every recovery code;
        ``False`` when there was no TOTP."""
        ...

    async def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        """Make ``code_hashes`` the user's recovery codes, the old ones gone, in one
        transaction; ``False`` (nothing written) when the user has no active TOTP."""
        ...

    async def consume_recovery_code(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        """Delete the user's recovery code stored as one of ``code_hashes`` (the
        candidate hashes of one code); of concurrent calls, one gets ``True``."""
        ...

    async def count_recovery_codes(self, user_id: str) -> int: ...


class PasskeyStore(Protocol):
    """WebAuthn passkeys, the users' WebAuthn user handles and the challenges issued."""

    async def get_or_create_user_handle(self, user_id: str, make: Callable[[], bytes]) -> bytes:
        """The user's WebAuthn user handle, creating it with ``make()`` once
        (concurrent first calls agree on one value)."""
        ...

    async def get_user_handle(self, user_id: str) -> bytes | None: ...

    async def create_webauthn_challenge(self, challenge: WebAuthnChallengeRecord) -> None: ...

    async def consume_webauthn_challenge(
        self, challenge_hash: str, ceremony: str, user_id: str | None, now: float
    ) -> bool:
        """Delete the live challenge issued for this ceremony and this user (``None``:
        for no user) and return ``True``; of concurrent calls, one gets it. Anything
        else (unknown, expired, other ceremony, other user) is ``False``."""
        ...

    async def add_passkey(self, passkey: PasskeyRecord) -> None:
        """Store a passkey; :class:`~gatepass.errors.DuplicateRecord` when its
        credential ID is registered already (to anyone)."""
        ...

    async def get_passkey_by_credential_id(self, credential_id: bytes) -> PasskeyRecord | None: ...

    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        """The user's passkeys, oldest first."""
        ...

    async def count_passkeys(self, user_id: str) -> int: ...

    async def rename_passkey(
        self, user_id: str, passkey_id: str, name: str
    ) -> PasskeyRecord | None:
        """Rename the user's passkey; ``None`` when the user has no such passkey."""
        ...

    async def delete_passkey(self, user_id: str, passkey_id: str) -> bool:
        """Delete the user's passkey; ``False`` when the user has no such passkey."""
        ...

    async def record_passkey_use(self, passkey_id: str, sign_count: int, now: float) -> bool:
        """Set the signature counter to ``sign_count`` and ``last_used_at`` to ``now``,
        only if the counter grows (or stays 0 while ``sign_count`` is 0: an
        authenticator without a counter). ``False``: it did not (nothing written)."""
        ...


class TokenStore(KeyStore, FamilyStore, RevocationStore, Protocol):
    """Everything on the token side: keys, families, revocations."""


class Store(
    UserStore,
    LinkStore,
    PendingSignInStore,
    SessionStore,
    SecretStore,
    TokenStore,
    MaintenanceStore,
    FactorStore,
    PasskeyStore,
    Protocol,
):
    """Everything the auth server needs from storage."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`~gatepass.errors.StoreUnavailable` when unreachable."""
        ...


# Throttle counters -----------------------------------------------------------------
#
# The state of the login throttle and of the current-password guard
# (gatepass.ratelimit holds their policy). Each call is one atomic step, so nodes
# sharing the counters cannot interleave a check and its count. Limits are passed in
# on every call; a backend keeps nothing longer than they make useful.


class LoginCounters(Protocol):
    """Sliding windows (per client IP for logins, sign-ups and mail; per address for
    mail), and per account (or device) failures, lock and attempts in flight. Keys
    are opaque: ``bytes`` digests for accounts, strings for windows (the
    :func:`~gatepass.ratelimit.ip_key` of a client, under a prefix naming the limit
    for all but the login one). A key is always counted with the same window."""

    async def count_attempt(self, key: str, now: float, *, limit: int, window: float) -> float:
        """Count one attempt in ``key``'s window of ``window`` seconds and return 0, or
        count nothing and return the seconds until a slot frees when ``limit``
        attempts are already in the window."""
        ...

    async def begin_login(
        self, key: bytes, now: float, *, max_failures: int, window: float
    ) -> float | None:
        """Count one attempt in flight and return ``None``; or, when locked, the
        seconds the lock has left; or ``0.0`` when failures within ``window`` and
        attempts in flight already reach ``max_failures``."""
        ...

    async def fail_login(self, key: bytes, now: float, *, max_failures: int, window: float) -> bool:
        """Settle an attempt as a failure; when it makes ``max_failures`` within
        ``window``, forget the failures, lock for ``window`` and return ``True``."""
        ...

    async def forget_login(self, key: bytes) -> None:
        """Drop everything counted for ``key`` (failures, lock, attempts in flight)."""
        ...

    async def abandon_login(self, key: bytes) -> None:
        """Settle an attempt in flight that was neither a success nor a failure."""
        ...


class GuardCounters(Protocol):
    """Wrong current passwords per credential (session or token family), and
    attempts in flight. Counts need not outlive ``retention`` after their last use."""

    async def begin_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        """Count one attempt in flight and return ``True``; ``False`` (nothing
        counted) while failures and attempts in flight reach ``max_failures``."""
        ...

    async def fail_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        """Settle an attempt as a failure; at ``max_failures`` forget the key and
        return ``True`` (the credential must be ended)."""
        ...

    async def forget_guess(self, key: str) -> None: ...

    async def abandon_guess(self, key: str) -> None: ...


class CounterStore(LoginCounters, GuardCounters, Protocol):
    """Both kinds of throttle counters: process memory or a shared Redis."""

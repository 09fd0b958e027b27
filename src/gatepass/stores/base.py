"""Records and the storage protocols the core is written against.

Stores do I/O and nothing else: they never decide whether a session is valid.
Every method raises :class:`~gatepass.errors.StoreUnavailable` when the backend
cannot be reached, so callers fail closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gatepass.errors import GatepassError


class EmailTaken(GatepassError):
    """A user with this (normalised) email already exists."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: float
    #: Access tokens issued before this instant are invalid (logout-all, password change).
    tokens_valid_after: float = 0.0

    def __repr__(self) -> str:
        return f"UserRecord(id={self.id!r}, email={self.email!r}, roles={self.roles!r})"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored browser session. ``id_hash`` is SHA-256 of the secret ID, never the ID."""

    id_hash: str
    handle: str
    user_id: str
    csrf_token: str
    created_at: float
    last_seen_at: float
    ip: str | None
    user_agent: str | None

    def __repr__(self) -> str:
        return f"SessionRecord(handle={self.handle!r}, user_id={self.user_id!r})"


class UserStore(Protocol):
    async def create_user(
        self, email: str, password_hash: str, roles: Sequence[str], now: float
    ) -> UserRecord:
        """Insert a user; raise :class:`EmailTaken` when the email exists."""
        ...

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    async def get_user_by_email(self, email: str) -> UserRecord | None: ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the hash only (rehash on login); sessions are untouched."""
        ...


class SessionStore(Protocol):
    async def insert_session(self, record: SessionRecord) -> None: ...

    async def get_session(self, id_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session and its user in one round trip, or ``None``."""
        ...

    async def touch_session(self, id_hash: str, now: float) -> None: ...

    async def delete_session(self, id_hash: str) -> bool: ...

    async def delete_session_by_handle(self, user_id: str, handle: str) -> bool:
        """Delete the user's session with this public handle; ``False`` if none."""
        ...

    async def list_sessions(self, user_id: str) -> list[SessionRecord]: ...

    async def delete_user_sessions(self, user_id: str, *, keep_id_hash: str | None = None) -> int:
        """End every session of the user (but ``keep_id_hash``); return how many ended."""
        ...

    async def change_password(
        self,
        user_id: str,
        password_hash: str,
        *,
        replacement: SessionRecord | None,
        now: float,
    ) -> None:
        """In one transaction: set the hash, end every session of the user, insert
        ``replacement`` (the caller's session under a new ID) and move the user's
        token epoch to ``now``."""
        ...


class SecretStore(Protocol):
    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        """Return the secret stored under ``name``, creating it with ``make()`` once.

        Concurrent first starts agree on one value.
        """
        ...


class Store(UserStore, SessionStore, SecretStore, Protocol):
    """Everything the auth server needs from storage."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`~gatepass.errors.StoreUnavailable` when unreachable."""
        ...


StoreFactory = Callable[[], Awaitable[Store]]

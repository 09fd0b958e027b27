"""SQL storage on SQLAlchemy 2 (async): SQLite through aiosqlite, PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import enum
import os
import sqlite3
import uuid
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    event,
    false,
    func,
    insert,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import ClauseElement

from gatepass.config import MAX_REFRESH_REUSE_GRACE
from gatepass.errors import ConfigError, DuplicateRecord, StoreUnavailable
from gatepass.freshness import SignInProof, parse_amr
from gatepass.stores import migrations
from gatepass.stores.base import (
    EmailTaken,
    Evicted,
    FamilyRecord,
    LinkRecord,
    RevocationEvent,
    RevocationKind,
    RotationOutcome,
    RotationStatus,
    SessionLimit,
    SessionRecord,
    SigningKeyRecord,
    UserRecord,
)
from gatepass.stores.sql_factors import FactorsSql
from gatepass.stores.sql_metadata import metadata as metadata
from gatepass.stores.sql_passkeys import PasskeysSql, prune_webauthn_challenges
from gatepass.stores.sql_pending import PendingSignInsSql, prune_pending_sign_ins
from gatepass.stores.sqlite_writer import SqliteWriter

users = Table(
    "gatepass_users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("roles", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("tokens_valid_after", Float, nullable=False, default=0.0),
    Column("credential_version", Integer, nullable=False, default=0, server_default="0"),
    Column("email_verified", Boolean, nullable=False, default=False, server_default=false()),
)

sessions = Table(
    "gatepass_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("handle", String(64), nullable=False, unique=True),
    Column(
        "user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("ip", String(64)),
    Column("user_agent", String(512)),
    # When and how the user last proved who they are (gatepass.freshness).
    Column("auth_time", Float, nullable=False, default=0.0, server_default="0"),
    Column("amr", String(128), nullable=False, default=""),
    Index("ix_gatepass_sessions_user", "user_id"),
)

secrets_table = Table(
    "gatepass_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

signing_keys = Table(
    "gatepass_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("private_material", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("retired_at", Float),
)

families = Table(
    "gatepass_refresh_families",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("ip", String(64)),
    Column("user_agent", String(512)),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("auth_time", Float, nullable=False, default=0.0, server_default="0"),
    Column("amr", String(128), nullable=False, default=""),
    Index("ix_gatepass_families_user", "user_id"),
)

refresh_tokens = Table(
    "gatepass_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "family_id",
        String(64),
        ForeignKey("gatepass_refresh_families.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", Float, nullable=False),
    #: Set when the token is rotated; presenting it again is reuse.
    Column("used_at", Float),
    #: Set with ``used_at``: the hash of the token that replaced this one.
    Column("replaced_by", String(64)),
    #: Set with ``used_at`` while a reuse grace is on: the successor, sealed
    #: (opaque here; see gatepass.refresh).
    Column("sealed_successor", Text),
    Index("ix_gatepass_refresh_tokens_family", "family_id"),
    # Retired tokens still holding a sealed successor: at most one per family.
    Index(
        "ix_gatepass_refresh_tokens_sealed",
        "replaced_by",
        postgresql_where=text("sealed_successor IS NOT NULL"),
        sqlite_where=text("sealed_successor IS NOT NULL"),
    ),
)

revocations = Table(
    "gatepass_revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_gatepass_revocations_created", "created_at"),
)

links = Table(
    "gatepass_account_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column(
        "user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("email", String(320), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_gatepass_account_links_user", "user_id", "purpose"),
    Index("ix_gatepass_account_links_expires", "expires_at"),
)
_CHANGE_LINK_PURPOSE = "change_email"
_RESET_LINK_PURPOSE = "reset_password"
#: What an address change leaves pointless or dangerous: links sent for the old
#: address (a reset link there would let the old mailbox take the account back).
_ADDRESS_LINK_PURPOSES = ("verify_email", _CHANGE_LINK_PURPOSE, _RESET_LINK_PURPOSE)

#: A user's columns beside another table's (``_user(row, joined=True)`` reads them).
_USER_COLUMNS = (
    users.c.email,
    users.c.password_hash,
    users.c.roles,
    users.c.created_at.label("user_created_at"),
    users.c.tokens_valid_after,
    users.c.credential_version,
    users.c.email_verified,
)
_SESSION_WITH_USER = select(
    sessions.c.id_hash,
    sessions.c.handle,
    sessions.c.user_id,
    sessions.c.csrf_token,
    sessions.c.created_at,
    sessions.c.last_seen_at,
    sessions.c.ip,
    sessions.c.user_agent,
    sessions.c.auth_time,
    sessions.c.amr,
    *_USER_COLUMNS,
).join(users, users.c.id == sessions.c.user_id)


#: Key of the PostgreSQL advisory lock that serialises migrations ("gatepass" in ASCII).
_MIGRATION_LOCK = 0x6761746570617373

_SECRET_BY_NAME = select(secrets_table.c.value).where(secrets_table.c.name == bindparam("name"))


def _user(row: Any, *, joined: bool = False) -> UserRecord:
    """A user from a row of the users table or, with ``joined``, of a join whose user
    columns ``id`` and ``created_at`` are labelled ``user_id`` and ``user_created_at``."""
    return UserRecord(
        id=row.user_id if joined else row.id,
        email=row.email,
        password_hash=row.password_hash,
        roles=tuple(row.roles.split()),
        created_at=row.user_created_at if joined else row.created_at,
        tokens_valid_after=row.tokens_valid_after,
        credential_version=row.credential_version,
        email_verified=bool(row.email_verified),
    )


def _link(row: Any) -> LinkRecord:
    return LinkRecord(
        token_hash=row.token_hash,
        purpose=row.purpose,
        user_id=row.user_id,
        email=row.email,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _live_link(token_hash: str, purposes: Sequence[str], now: float) -> ColumnElement[bool]:
    return and_(
        links.c.token_hash == token_hash,
        links.c.purpose.in_(list(purposes)),
        links.c.expires_at > now,
    )


def _family(row: Any) -> FamilyRecord:
    return FamilyRecord(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        ip=row.ip,
        user_agent=row.user_agent,
        revoked=bool(row.revoked),
        auth_time=row.auth_time,
        amr=parse_amr(row.amr),
    )


def _live_family(now: float) -> ColumnElement[bool]:
    """A family that can still rotate: not revoked, within its lifetime."""
    return and_(families.c.revoked.is_(False), families.c.expires_at > now)


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        id_hash=row.id_hash,
        handle=row.handle,
        user_id=row.user_id,
        csrf_token=row.csrf_token,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        ip=row.ip,
        user_agent=row.user_agent,
        auth_time=row.auth_time,
        amr=parse_amr(row.amr),
    )


#: PostgreSQL text cannot hold NUL (asyncpg refuses the statement); SQLite can.
_NUL = "\x00"


def _storable(text: str | None) -> str | None:
    """Free text from a client (a User-Agent) as every backend can store it: NUL
    becomes U+FFFD, so a header with one cannot turn a sign-in into a 503."""
    return text.replace(_NUL, "\ufffd") if text and _NUL in text else text


def _session_values(record: SessionRecord) -> dict[str, Any]:
    return {
        "id_hash": record.id_hash,
        "handle": record.handle,
        "user_id": record.user_id,
        "csrf_token": record.csrf_token,
        "created_at": record.created_at,
        "last_seen_at": record.last_seen_at,
        "ip": record.ip,
        "user_agent": _storable(record.user_agent),
        "auth_time": record.auth_time,
        "amr": " ".join(record.amr),
    }


def _prepare_sqlite_file(url: URL) -> None:
    """Create the SQLite file and its folder private to this user (0700 / 0600)."""
    database = url.database
    if not database or database == ":memory:":
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_CREAT with mode 0600 before SQLite opens it: SQLite gives its -wal and
    # -shm files the database file's permissions.
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


#: Seconds to wait for a PostgreSQL connection (asyncpg's own default is 60): an
#: unreachable server fails a start-up or a request soon, not after a minute.
PG_CONNECT_TIMEOUT = 10.0
_DATABASE_URL_SETTING = "GATEPASS_DATABASE_URL"


def async_database_url(url: str) -> URL:
    """The SQLAlchemy async URL of a configured database URL.

    ``sqlite:///path`` and ``postgresql://...`` name their async drivers
    (aiosqlite, asyncpg); those spellings with the driver written out are taken
    as they are. Anything else is a :class:`ConfigError` naming the setting.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: the value may hold a password.
        raise ConfigError(_DATABASE_URL_SETTING, "not a database URL") from None
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    if parsed.drivername in drivers:
        return parsed.set(drivername=drivers[parsed.drivername])
    if parsed.drivername in drivers.values():
        return parsed
    raise ConfigError(
        _DATABASE_URL_SETTING,
        f"unsupported database {parsed.drivername!r}: use sqlite:///path or "
        "postgresql://user:password@host:port/database",
    )


#: Connections a process keeps open to PostgreSQL; a request beyond them waits
#: for one (up to SQLAlchemy's 30 s pool timeout) rather than opening another.
#: SQLAlchemy's default keeps 5 and opens up to 10 more, closing each of those
#: when it is returned: under 32 concurrent refreshes most requests then paid for
#: a new connection (TLS attempt, SCRAM login, statements prepared again), which
#: was most of a rotation's cost there.
PG_POOL_SIZE = 20
PG_MAX_OVERFLOW = 0


def _create_engine(url: URL, echo: bool) -> AsyncEngine:
    connect_args: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        pool = {"pool_size": PG_POOL_SIZE, "max_overflow": PG_MAX_OVERFLOW}
        if "timeout" not in url.query:
            connect_args["timeout"] = PG_CONNECT_TIMEOUT
    try:
        return create_async_engine(url, echo=echo, connect_args=connect_args, **pool)
    except ImportError as exc:
        raise ConfigError(
            _DATABASE_URL_SETTING,
            f"its database driver is not installed ({exc}); "
            f"install it with: pip install {url.get_driver_name()}",
        ) from None


def _driver_words(words: str) -> str:
    """A driver's error message, fit for a log line."""
    if "query argument" in words:
        # asyncpg's words for a value it could not encode quote that value.
        return "a query argument was refused by the driver"
    return words


@contextmanager
def _driver_errors_mapped(*, duplicates: bool = True) -> Iterator[None]:
    """The one place driver errors become gatepass errors: a broken uniqueness rule
    :class:`DuplicateRecord` (with ``duplicates``: a write of a record that
    exists), any other backend failure :class:`StoreUnavailable`.

    Messages carry the driver's own words ("database is locked"), never the
    statement or its parameters, which may hold hashes and tokens.
    """
    try:
        yield
    except IntegrityError as exc:
        if not duplicates:  # e.g. a migration: no caller expects a duplicate
            raise StoreUnavailable(
                f"database error: {type(exc.orig).__name__}: {exc.orig}"
            ) from exc
        raise DuplicateRecord(f"constraint violated: {type(exc.orig).__name__}") from None
    except DBAPIError as exc:
        words = _driver_words(str(exc.orig))
        raise StoreUnavailable(f"database error: {type(exc.orig).__name__}: {words}") from exc
    except OSError as exc:
        # Connecting failed (refused, unknown host, timeout): the text names the
        # address tried, never the credentials.
        raise StoreUnavailable(f"database unreachable: {type(exc).__name__}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"database error: {type(exc).__name__}") from exc


class SqlStore(PendingSignInsSql, FactorsSql, PasskeysSql):
    """Users, sessions and secrets in one SQL database."""

    def __init__(self, url: str, *, echo: bool = False, auto_upgrade: bool = False) -> None:
        self._url = async_database_url(url)
        self._auto_upgrade = auto_upgrade
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        if self._is_sqlite:
            _prepare_sqlite_file(self._url)
        self.engine: AsyncEngine = _create_engine(self._url, echo)
        #: Refresh rotation on a SQLite file runs here (see its module); elsewhere
        #: (PostgreSQL, an in-memory SQLite) through the engine.
        self._writer: SqliteWriter | None = None
        if self._is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            if self._url.database and self._url.database != ":memory:":
                self._writer = SqliteWriter(self._url.database, _configure_sqlite)

    def __repr__(self) -> str:
        return f"SqlStore({self._url.render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, its driver errors mapped (:func:`_driver_errors_mapped`)."""
        with _driver_errors_mapped():
            async with self.engine.begin() as conn:
                yield conn

    async def start(self) -> None:
        """Make the schema current: SQLite always migrates itself; another database
        only with ``auto_upgrade`` (else it must already be current). On
        PostgreSQL, then open the pool's connections (:meth:`_fill_pool`)."""
        if self._is_sqlite:
            await self.upgrade()
            return
        if self._auto_upgrade:
            await self.upgrade()
        else:
            revision = await self.current_revision()
            if revision != migrations.HEAD:
                raise StoreUnavailable(
                    f"database schema is at revision {revision or 'none'}, this gatepass needs "
                    f"{migrations.HEAD}: run `gatepass db upgrade` "
                    "(or start with GATEPASS_DB_AUTO_UPGRADE=1)"
                )
        await self._fill_pool()

    async def _fill_pool(self) -> None:
        """Open all :data:`PG_POOL_SIZE` connections now and return them to the pool.

        A new connection costs the event loop about 4 ms (asyncpg's connect, the
        SCRAM proof, SQLAlchemy's first-connect queries), and nothing else runs
        meanwhile: left to the first burst, the 19 connections it opens stalled
        every request in flight for about 80 ms, the whole p99 of a short
        32-client refresh run (130 ms against 35 ms once the pool was full).
        """
        with _driver_errors_mapped():
            opened = await asyncio.gather(
                *(self.engine.connect() for _ in range(PG_POOL_SIZE)), return_exceptions=True
            )
            for conn in opened:
                if isinstance(conn, AsyncConnection):
                    await conn.close()
            for failure in opened:
                if isinstance(failure, BaseException):
                    raise failure

    async def upgrade(self) -> migrations.UpgradeResult:
        """Migrate the schema to the newest revision, one process at a time."""
        async with self._migration_tx() as conn:
            return await conn.run_sync(migrations.upgrade)

    async def current_revision(self) -> str | None:
        """The schema revision stamped in the database (``None``: unversioned or empty)."""
        async with self._tx() as conn:
            return await conn.run_sync(migrations.current_revision)

    @asynccontextmanager
    async def _migration_tx(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that holds the database's write lock from its first statement.

        SQLite: ``BEGIN IMMEDIATE``, so a second process starting at the same time
        waits (busy timeout) and then finds the schema current. Foreign keys are off
        meanwhile, as SQLite asks for schema changes: batch mode recreates tables,
        and dropping the old copy must not cascade into the rows that point at it;
        the keys are checked before the commit. PostgreSQL: a transaction-scoped
        advisory lock (its DDL is transactional).
        """
        with _driver_errors_mapped(duplicates=False):
            async with self.engine.connect() as conn:
                if not self._is_sqlite:
                    async with conn.begin():
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                        )
                        yield conn
                    return
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await conn.commit()
                try:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).first()
                        if broken is not None:
                            raise StoreUnavailable(
                                f"migration left rows of {broken[0]} without their parent"
                            )
                    except BaseException:
                        await conn.rollback()
                        raise
                    await conn.commit()
                finally:
                    await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    await conn.commit()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        try:
            async with self._tx() as conn:
                await conn.execute(select(1))
        except StoreUnavailable as exc:
            raise StoreUnavailable(str(exc), store="database") from exc

    # users -----------------------------------------------------------------

    async def create_user(
        self, email: str, password_hash: str, roles: Sequence[str], now: float
    ) -> UserRecord:
        record = UserRecord(
            id=str(uuid.uuid4()),
            email=email,
            password_hash=password_hash,
            roles=tuple(roles),
            created_at=now,
        )
        try:
            async with self._tx() as conn:
                await conn.execute(
                    insert(users).values(
                        id=record.id,
                        email=email,
                        password_hash=password_hash,
                        roles=" ".join(roles),
                        created_at=now,
                        tokens_valid_after=0.0,
                    )
                )
        except DuplicateRecord:
            raise EmailTaken("email already registered") from None
        return record

    async def get_user(self, user_id: str) -> UserRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        if _NUL in email:
            return None  # as in delete_session_by_handle
        async with self._tx() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email))).first()
        return _user(row) if row else None

    async def set_password_hash(self, user_id: str, password_hash: str, *, previous: str) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == previous)
                .values(password_hash=password_hash)
            )
        return bool(result.rowcount)

    async def change_credentials(
        self,
        user_id: str,
        now: float,
        *,
        password_hash: str | None = None,
        credential_version: int | None = None,
    ) -> int | None:
        condition = users.c.id == user_id
        if credential_version is not None:
            condition = and_(condition, users.c.credential_version == credential_version)
        values: dict[str, Any] = {
            "tokens_valid_after": now,
            "credential_version": users.c.credential_version + 1,
        }
        if password_hash is not None:
            values["password_hash"] = password_hash
        async with self._tx() as conn:
            # First statement: it takes the user row's write lock, so a sign-in
            # checking the old version waits for this transaction, then sees it moved.
            changed = await conn.execute(
                update(users)
                .where(condition)
                .values(**values)
                .returning(users.c.credential_version)
            )
            row = changed.first()
            if row is None:
                return None
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await _revoke_user_families(conn, user_id, now)
            # A pending address change dies with the credentials that asked for it
            # (it may be an intruder's); a password change kills reset links too.
            dead = [_CHANGE_LINK_PURPOSE]
            if password_hash is not None:
                dead.append(_RESET_LINK_PURPOSE)
            await conn.execute(
                delete(links).where(links.c.user_id == user_id, links.c.purpose.in_(dead))
            )
        return int(row.credential_version)

    async def mark_email_verified(self, user_id: str, email: str) -> UserRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id, users.c.email == email)
                    .values(email_verified=True)
                    .returning(*users.c)
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                delete(links).where(links.c.user_id == user_id, links.c.purpose == "verify_email")
            )
        return _user(row)

    async def change_email(self, user_id: str, new_email: str) -> UserRecord | None:
        if _NUL in new_email:
            return None
        try:
            async with self._tx() as conn:
                row = (
                    await conn.execute(
                        update(users)
                        .where(users.c.id == user_id)
                        .values(email=new_email, email_verified=True)
                        .returning(*users.c)
                    )
                ).first()
                if row is None:
                    return None
                await conn.execute(
                    delete(links).where(
                        links.c.user_id == user_id, links.c.purpose.in_(_ADDRESS_LINK_PURPOSES)
                    )
                )
        except DuplicateRecord:
            raise EmailTaken("email already registered") from None
        return _user(row)

    async def delete_user(self, user_id: str, now: float) -> bool:
        async with self._tx() as conn:
            # The user row's lock first, as in change_credentials: a sign-in storing a
            # credential for this user waits, then finds the user gone.
            found = (
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(credential_version=users.c.credential_version + 1)
                    .returning(users.c.id)
                )
            ).first()
            if found is None:
                return False
            # On the feed before the rows go: every process refuses the user's access
            # tokens and families at once, whatever it has cached.
            await _revoke_user_families(conn, user_id, now)
            # The foreign keys cascade to sessions, families, tokens, links and factors.
            await conn.execute(delete(users).where(users.c.id == user_id))
        return True

    # one-time links --------------------------------------------------------

    async def create_link(self, link: LinkRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                insert(links).values(
                    token_hash=link.token_hash,
                    purpose=link.purpose,
                    user_id=link.user_id,
                    email=link.email,
                    created_at=link.created_at,
                    expires_at=link.expires_at,
                )
            )

    async def peek_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(links).where(_live_link(token_hash, purposes, now)))
            ).first()
        return _link(row) if row else None

    async def consume_link(
        self, token_hash: str, purposes: Sequence[str], now: float
    ) -> LinkRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    delete(links).where(_live_link(token_hash, purposes, now)).returning(*links.c)
                )
            ).first()
        return _link(row) if row else None

    # sessions --------------------------------------------------------------

    async def insert_session(
        self, record: SessionRecord, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        async with self._tx() as conn:
            evicted = await _make_room(
                conn, record.user_id, credential_version, limit, record.created_at
            )
            if evicted is not None:
                await conn.execute(insert(sessions).values(**_session_values(record)))
        return evicted

    async def get_session(self, id_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(_SESSION_WITH_USER.where(sessions.c.id_hash == id_hash))
            ).first()
        if row is None:
            return None
        return _session(row), _user(row, joined=True)

    async def touch_session(self, id_hash: str, now: float) -> None:
        async with self._tx() as conn:
            await conn.execute(
                update(sessions).where(sessions.c.id_hash == id_hash).values(last_seen_at=now)
            )

    async def renew_session_proof(self, id_hash: str, proof: SignInProof) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                update(sessions)
                .where(sessions.c.id_hash == id_hash)
                .values(auth_time=proof.auth_time, amr=" ".join(proof.amr))
            )
        return bool(result.rowcount)

    async def delete_session(self, id_hash: str) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))
        return bool(result.rowcount)

    async def delete_session_by_handle(self, user_id: str, handle: str) -> bool:
        if _NUL in handle:
            return False  # no stored handle has one (and PostgreSQL cannot compare it)
        async with self._tx() as conn:
            result = await conn.execute(
                delete(sessions).where(sessions.c.user_id == user_id, sessions.c.handle == handle)
            )
        return bool(result.rowcount)

    async def list_sessions(self, user_id: str) -> list[SessionRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(sessions)
                .where(sessions.c.user_id == user_id)
                .order_by(sessions.c.created_at)
            )
            return [_session(row) for row in rows]

    def forget_user(self, user_id: str | None) -> None:
        """Nothing is cached here: every session check reads the user with it."""

    async def end_user_sessions(self, user_id: str, *, min_credential_version: int) -> int:
        # The version floor needs no record here: a session insert checks the
        # version against the user row itself (_make_room).
        async with self._tx() as conn:
            ended = await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return int(ended.rowcount)

    # signing keys ----------------------------------------------------------

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
            return [
                SigningKeyRecord(
                    kid=r.kid,
                    alg=r.alg,
                    state=r.state,
                    private_material=r.private_material,
                    created_at=r.created_at,
                    retired_at=r.retired_at,
                )
                for r in rows
            ]

    async def save_signing_keys(
        self, upserts: Sequence[SigningKeyRecord], deletes: Sequence[str]
    ) -> None:
        async with self._tx() as conn:
            if deletes:
                await conn.execute(delete(signing_keys).where(signing_keys.c.kid.in_(deletes)))
            for key in upserts:
                values = {
                    "alg": key.alg,
                    "state": key.state,
                    "private_material": key.private_material,
                    "created_at": key.created_at,
                    "retired_at": key.retired_at,
                }
                result = await conn.execute(
                    update(signing_keys).where(signing_keys.c.kid == key.kid).values(**values)
                )
                if not result.rowcount:
                    await conn.execute(insert(signing_keys).values(kid=key.kid, **values))

    # refresh families ------------------------------------------------------

    async def create_family(
        self, family: FamilyRecord, token_hash: str, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        async with self._tx() as conn:
            evicted = await _make_room(
                conn, family.user_id, credential_version, limit, family.created_at
            )
            if evicted is None:
                return None
            await conn.execute(
                insert(families).values(
                    id=family.id,
                    user_id=family.user_id,
                    created_at=family.created_at,
                    last_used_at=family.last_used_at,
                    expires_at=family.expires_at,
                    ip=family.ip,
                    user_agent=_storable(family.user_agent),
                    revoked=False,
                    auth_time=family.auth_time,
                    amr=" ".join(family.amr),
                )
            )
            await conn.execute(
                insert(refresh_tokens).values(
                    token_hash=token_hash, family_id=family.id, created_at=family.created_at
                )
            )
        return evicted

    async def rotate_refresh_token(
        self,
        old_hash: str,
        new_hash: str,
        now: float,
        *,
        sealed_successor: str | None = None,
        reuse_grace: float = 0.0,
    ) -> RotationOutcome:
        rotation = _Rotation(old_hash, new_hash, now, sealed_successor, reuse_grace)
        if self._writer is not None:
            return await self._writer.transaction(rotation.run_sqlite)
        if self._is_sqlite:  # in memory
            async with self._tx() as conn:
                return await rotation.run(conn)
        # PostgreSQL: a valid rotation is one statement, one round trip, run
        # on the driver's connection (see _PgStatement).
        with _driver_errors_mapped():
            async with self.engine.connect() as conn:
                row = await _PG_ROTATE.fetchrow(conn, rotation.params)
        if row is not None:
            return rotation.rotated(row)
        async with self._tx() as conn:
            return await rotation.settle(conn)

    async def revoke_family(self, family_id: str, now: float, user_id: str | None = None) -> bool:
        if _NUL in family_id:
            return False  # as in delete_session_by_handle
        condition = and_(families.c.id == family_id, families.c.revoked.is_(False))
        if user_id is not None:
            condition = and_(condition, families.c.user_id == user_id)
        async with self._tx() as conn:
            result = await conn.execute(update(families).where(condition).values(revoked=True))
            if result.rowcount:
                await _publish(conn, "family", [family_id], now, now)
        return bool(result.rowcount)

    async def renew_family_proof(self, family_id: str, user_id: str, proof: SignInProof) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                update(families)
                .where(
                    families.c.id == family_id,
                    families.c.user_id == user_id,
                    families.c.revoked.is_(False),
                )
                .values(auth_time=proof.auth_time, amr=" ".join(proof.amr))
            )
        return bool(result.rowcount)

    async def list_families(self, user_id: str, now: float) -> list[FamilyRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(families)
                .where(families.c.user_id == user_id, _live_family(now))
                .order_by(families.c.created_at)
            )
            return [_family(r) for r in rows]

    async def revoke_jti(self, jti: str, expires_at: float, now: float) -> None:
        async with self._tx() as conn:
            await _publish(conn, "jti", [jti], expires_at, now)

    async def revoke_token(
        self, jti: str, expires_at: float, family_id: str, user_id: str, now: float
    ) -> None:
        async with self._tx() as conn:
            await _publish(conn, "jti", [jti], expires_at, now)
            result = await conn.execute(
                update(families)
                .where(
                    families.c.id == family_id,
                    families.c.user_id == user_id,
                    families.c.revoked.is_(False),
                )
                .values(revoked=True)
            )
            if result.rowcount:
                await _publish(conn, "family", [family_id], now, now)

    async def revocation_events(self, after_id: int) -> list[RevocationEvent]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(revocations).where(revocations.c.id > after_id).order_by(revocations.c.id)
            )
            return [
                RevocationEvent(
                    id=r.id, kind=r.kind, subject=r.subject, value=r.value, created_at=r.created_at
                )
                for r in rows
            ]

    async def prune_revocations(self, created_before: float) -> int:
        # The newest entry stays, however old: SQLite gives a new row the highest
        # remaining ID plus one, so emptying the table would hand out IDs again that
        # every reader's floor has passed, and the next revocations would be skipped.
        newest = select(func.max(revocations.c.id)).scalar_subquery()
        async with self._tx() as conn:
            result = await conn.execute(
                delete(revocations).where(
                    (revocations.c.created_at < created_before) & (revocations.c.id < newest)
                )
            )
        return int(result.rowcount)

    async def prune_expired(
        self, now: float, *, session_idle: float, session_absolute: float
    ) -> int:
        async with self._tx() as conn:
            gone_sessions = await conn.execute(
                delete(sessions).where(
                    (sessions.c.created_at <= now - session_absolute)
                    | (sessions.c.last_seen_at <= now - session_idle)
                )
            )
            expired = select(families.c.id).where(families.c.expires_at <= now)
            gone_tokens = await conn.execute(
                delete(refresh_tokens).where(refresh_tokens.c.family_id.in_(expired))
            )
            gone_families = await conn.execute(delete(families).where(families.c.expires_at <= now))
            gone_links = await conn.execute(delete(links).where(links.c.expires_at <= now))
            gone_pending = await prune_pending_sign_ins(conn, now)
            gone_challenges = await prune_webauthn_challenges(conn, now)
            # A seal serves a retry within the reuse grace and nothing after it.
            await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.sealed_successor.is_not(None),
                    refresh_tokens.c.used_at <= now - MAX_REFRESH_REUSE_GRACE,
                )
                .values(sealed_successor=None)
            )
        return int(
            gone_sessions.rowcount
            + gone_tokens.rowcount
            + gone_families.rowcount
            + gone_links.rowcount
            + gone_pending
            + gone_challenges
        )

    # secrets ---------------------------------------------------------------

    async def get_or_create_secret(self, name: str, make: Callable[[], str]) -> str:
        async with self._tx() as conn:
            row = (await conn.execute(_SECRET_BY_NAME, {"name": name})).first()
        if row is not None:
            return str(row.value)
        try:
            async with self._tx() as conn:
                await conn.execute(insert(secrets_table).values(name=name, value=make()))
        except DuplicateRecord:
            pass  # another process created it first; use theirs
        async with self._tx() as conn:
            value = (await conn.execute(_SECRET_BY_NAME, {"name": name})).scalar_one()
        return str(value)


class _Verdict(enum.Enum):
    INVALID = "invalid"
    ROTATE = "rotate"
    RETRY = "retry"
    REUSE = "reuse"


_FAMILY_COLUMNS = (
    families.c.id,
    families.c.revoked,
    families.c.expires_at,
    families.c.user_id,
    families.c.created_at,
    families.c.last_used_at,
    families.c.ip,
    families.c.user_agent,
    families.c.auth_time,
    families.c.amr,
)
_successor = refresh_tokens.alias("successor")

#: All a rotation decides on, in one read: the presented token, its family and
#: user, and whether its successor (when it was rotated) has been used since.
_ROTATION_READ = (
    select(
        refresh_tokens.c.used_at,
        refresh_tokens.c.sealed_successor,
        _successor.c.token_hash.label("successor_hash"),
        _successor.c.used_at.label("successor_used_at"),
        *_FAMILY_COLUMNS,
        *_USER_COLUMNS,
    )
    .select_from(
        refresh_tokens.join(families, families.c.id == refresh_tokens.c.family_id)
        .join(users, users.c.id == families.c.user_id)
        .outerjoin(_successor, _successor.c.token_hash == refresh_tokens.c.replaced_by)
    )
    .where(refresh_tokens.c.token_hash == bindparam("old"))
)
_CLAIM = (
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == bindparam("old"), refresh_tokens.c.used_at.is_(None))
    .values(
        used_at=bindparam("now"),
        replaced_by=bindparam("new"),
        sealed_successor=bindparam("sealed"),
    )
)
#: The claim as the first statement where no lock is held yet (PostgreSQL): the
#: row lock serialises concurrent rotations of one token, and a waiter re-checks
#: ``used_at`` on the committed row, so exactly one claims it.
_CLAIM_LIVE = _CLAIM.where(
    refresh_tokens.c.family_id.in_(
        select(families.c.id).where(
            families.c.revoked.is_(False), families.c.expires_at > bindparam("now")
        )
    )
).returning(refresh_tokens.c.family_id)


def _pg_rotate() -> Select[Any]:
    """PostgreSQL's whole valid rotation as one statement (its own transaction):
    claim the token (the row lock serialises racers, who re-check ``used_at`` on
    the committed row), add the successor, touch the family and read its user.
    No row: nothing was claimed and nothing written."""
    claimed = _CLAIM_LIVE.cte("claimed")
    added = insert(refresh_tokens).from_select(
        ["token_hash", "family_id", "created_at"],
        select(
            bindparam("new", type_=String(64)),
            claimed.c.family_id,
            bindparam("now", type_=Float()),
        ),
    )
    # Not revoked: the claim read the family as live in its snapshot, but a
    # revocation may have committed while this update waited for the family row
    # (PostgreSQL re-checks the condition on the committed row). No row then, and
    # the caller settles it as a spent token: no pair for a dead family.
    touched = (
        update(families)
        .where(families.c.id == claimed.c.family_id, families.c.revoked.is_(False))
        .values(last_used_at=bindparam("now"))
        .returning(*_FAMILY_COLUMNS)
        .cte("touched")
    )
    return (
        select(*touched.c, *_USER_COLUMNS)
        .select_from(touched.join(users, users.c.id == touched.c.user_id))
        .add_cte(added.cte("added"))
        .add_cte(_FORGET_PREDECESSOR_SEAL.cte("forgotten"))
    )


#: The seal the presented token's predecessor holds opens the presented token;
#: once that is rotated too, nobody may recover it (a retry of the predecessor is
#: reuse by then anyway). So a family keeps at most one seal, whose opener is
#: the token rotated last: a copy of the database and an older token yield nothing.
_FORGET_PREDECESSOR_SEAL = (
    update(refresh_tokens)
    .where(
        refresh_tokens.c.replaced_by == bindparam("old"),
        refresh_tokens.c.sealed_successor.is_not(None),
    )
    .values(sealed_successor=null())
)
_ADD_SUCCESSOR = insert(refresh_tokens).values(
    token_hash=bindparam("new"), family_id=bindparam("family"), created_at=bindparam("now")
)
_TOUCH_FAMILY = (
    update(families)
    .where(families.c.id == bindparam("family"))
    .values(last_used_at=bindparam("now"))
)
_TOUCH_FAMILY_RETURNING = _TOUCH_FAMILY.where(
    users.c.id == families.c.user_id, families.c.revoked.is_(False)
).returning(*_FAMILY_COLUMNS, *_USER_COLUMNS)
_REVOKE_FAMILY = (
    update(families)
    .where(families.c.id == bindparam("family"), families.c.revoked.is_(False))
    .values(revoked=True)
)


@dataclass(frozen=True, slots=True)
class _PgStatement:
    """A Core statement compiled once to asyncpg's SQL (``$1``, ``$2`` …), run on
    a pooled connection's asyncpg connection itself, outside any transaction
    (asyncpg then commits the one statement on its own).

    For the hottest statement only: SQLAlchemy's execute path (execution
    context, cursor adapter, isolation level switched to autocommit and back,
    result rows) cost about 200 µs of the event loop's time a rotation, as much
    as the rest of the rotation's store work, and under 32 concurrent refreshes
    that time queues every other request.
    """

    sql: str
    order: tuple[str, ...]
    row: Callable[..., Any]

    @classmethod
    def of(cls, statement: Select[Any]) -> _PgStatement:
        dialect = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
        compiled = statement.compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())  # asyncpg's paramstyle is positional
        columns = [str(column.key) for column in statement.selected_columns]
        return cls(str(compiled), order, namedtuple("Row", columns))

    async def fetchrow(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Any:
        """The statement's one row (its columns as attributes), or ``None``."""
        import asyncpg  # type: ignore[import-untyped]  # installed with the engine's dialect

        driver: Any = (await conn.get_raw_connection()).driver_connection
        try:
            record = await driver.fetchrow(self.sql, *(values[k] for k in self.order))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise DuplicateRecord(f"constraint violated: {type(exc).__name__}") from None
        except Exception as exc:
            # Whatever the driver raised (a server error, a closed socket, or a
            # protocol state asyncpg refuses, as after the server ended the
            # connection), the statement did not reach a known end, and the pool
            # cannot tell what became of a connection used past it: a new one
            # replaces it.
            await conn.invalidate()
            raise StoreUnavailable(
                f"database error: {type(exc).__name__}: {_driver_words(str(exc))}"
            ) from exc
        return None if record is None else self.row(*record)


_PG_ROTATE = _PgStatement.of(_pg_rotate())
_PUBLISH_FAMILY = insert(revocations).values(
    kind="family", subject=bindparam("family"), value=bindparam("now"), created_at=bindparam("now")
)


@dataclass(frozen=True, slots=True)
class _SqliteStatement:
    """A Core statement compiled once to SQLite's SQL with named parameters."""

    sql: str
    defaults: dict[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement) -> _SqliteStatement:
        compiled = statement.compile(dialect=sqlite_dialect.dialect(paramstyle="named"))
        return cls(str(compiled), {k: v for k, v in compiled.params.items() if v is not None})

    def run(self, connection: sqlite3.Connection, **values: Any) -> sqlite3.Cursor:
        return connection.execute(self.sql, {**self.defaults, **values})


_SQLITE_ROTATION_READ = _SqliteStatement.of(_ROTATION_READ)
_SQLITE_CLAIM = _SqliteStatement.of(_CLAIM)
_SQLITE_ADD_SUCCESSOR = _SqliteStatement.of(_ADD_SUCCESSOR)
_SQLITE_TOUCH_FAMILY = _SqliteStatement.of(_TOUCH_FAMILY)
_SQLITE_FORGET_PREDECESSOR_SEAL = _SqliteStatement.of(_FORGET_PREDECESSOR_SEAL)
_SQLITE_REVOKE_FAMILY = _SqliteStatement.of(_REVOKE_FAMILY)
_SQLITE_PUBLISH_FAMILY = _SqliteStatement.of(_PUBLISH_FAMILY)


@dataclass(frozen=True, slots=True)
class _Rotation:
    """One rotation: its inputs, the rule it follows, and its transaction on
    either backend (a handful of statements, none of them a wait).

    The rule (:meth:`judge`): a token of a dead or unknown family is invalid; an
    unused one is rotated; a used one is a retry while it was rotated less than
    the grace ago and its successor is unused, else reuse (the family dies).
    """

    old_hash: str
    new_hash: str
    now: float
    sealed: str | None
    grace: float

    def judge(self, row: Any) -> _Verdict:
        if row is None or row.revoked or row.expires_at <= self.now:
            return _Verdict.INVALID
        if row.used_at is None:
            return _Verdict.ROTATE
        if (
            self.grace > 0
            and self.now < row.used_at + self.grace
            and row.sealed_successor is not None
            and row.successor_hash is not None
            and row.successor_used_at is None
        ):
            return _Verdict.RETRY
        return _Verdict.REUSE

    def rotated(self, row: Any) -> RotationOutcome:
        family = replace(_family(row), last_used_at=self.now)
        return RotationOutcome(RotationStatus.ROTATED, family=family, user=_user(row, joined=True))

    def retried(self, row: Any) -> RotationOutcome:
        return RotationOutcome(
            RotationStatus.RETRIED,
            family=_family(row),
            user=_user(row, joined=True),
            sealed_successor=row.sealed_successor,
        )

    def reused(self, row: Any) -> RotationOutcome:
        family = replace(_family(row), revoked=True)
        return RotationOutcome(RotationStatus.REUSED, family=family)

    def run_sqlite(self, connection: sqlite3.Connection) -> RotationOutcome:
        """In ``BEGIN IMMEDIATE`` (:class:`SqliteWriter`): the write lock is held
        from the start, so the read is the truth until the commit."""
        row = _SQLITE_ROTATION_READ.run(connection, old=self.old_hash).fetchone()
        verdict = self.judge(row)
        if verdict is _Verdict.ROTATE:
            _SQLITE_CLAIM.run(
                connection, old=self.old_hash, new=self.new_hash, now=self.now, sealed=self.sealed
            )
            _SQLITE_ADD_SUCCESSOR.run(connection, new=self.new_hash, family=row.id, now=self.now)
            _SQLITE_TOUCH_FAMILY.run(connection, family=row.id, now=self.now)
            _SQLITE_FORGET_PREDECESSOR_SEAL.run(connection, old=self.old_hash)
            return self.rotated(row)
        if verdict is _Verdict.REUSE:
            _SQLITE_REVOKE_FAMILY.run(connection, family=row.id)
            _SQLITE_PUBLISH_FAMILY.run(connection, family=row.id, now=self.now)
            return self.reused(row)
        if verdict is _Verdict.RETRY:
            return self.retried(row)
        return RotationOutcome(RotationStatus.INVALID)

    @property
    def params(self) -> dict[str, Any]:
        return {"old": self.old_hash, "new": self.new_hash, "now": self.now, "sealed": self.sealed}

    async def run(self, conn: AsyncConnection) -> RotationOutcome:
        """Claim first: a valid rotation is three statements (claim, successor,
        family and user), and concurrent ones wait on the token's row lock."""
        claimed = (await conn.execute(_CLAIM_LIVE, self.params)).first()
        if claimed is not None:
            family = {"family": claimed.family_id, "now": self.now}
            await conn.execute(_ADD_SUCCESSOR, {**family, "new": self.new_hash})
            await conn.execute(_FORGET_PREDECESSOR_SEAL, {"old": self.old_hash})
            touched = (await conn.execute(_TOUCH_FAMILY_RETURNING, family)).first()
            if touched is None:  # revoked while the claim waited: no pair
                return RotationOutcome(RotationStatus.INVALID)
            return self.rotated(touched)
        return await self.settle(conn)

    async def settle(self, conn: AsyncConnection) -> RotationOutcome:
        """After a claim that took nothing: invalid, a retry, or reuse."""
        # Unknown, dead or spent: this read sees a rotation that committed while
        # the claim waited for the row.
        row = (await conn.execute(_ROTATION_READ, {"old": self.old_hash})).first()
        verdict = self.judge(row)
        if row is not None and verdict is _Verdict.REUSE:
            revoked = await conn.execute(_REVOKE_FAMILY, {"family": row.id})
            if revoked.rowcount != 1:
                return RotationOutcome(RotationStatus.INVALID)  # revoked meanwhile
            await _publish(conn, "family", [row.id], self.now, self.now)
            return self.reused(row)
        if row is not None and verdict is _Verdict.RETRY:
            return self.retried(row)
        # INVALID, or ROTATE: an unused token the claim did not take belongs to a
        # family that was not live.
        return RotationOutcome(RotationStatus.INVALID)


async def _publish(
    conn: AsyncConnection, kind: RevocationKind, subjects: Sequence[str], value: float, now: float
) -> None:
    if subjects:
        await conn.execute(
            insert(revocations),
            [{"kind": kind, "subject": s, "value": value, "created_at": now} for s in subjects],
        )


async def _make_room(
    conn: AsyncConnection, user_id: str, credential_version: int, limit: SessionLimit, now: float
) -> Evicted | None:
    """The two guards of every sign-in, run first in its transaction.

    ``None`` when the user's credential version moved (nothing may be granted).
    Otherwise the user's expired sessions are deleted (they count for nothing), and
    the live sessions and families ended so that one more fits within the limit.
    """
    # A no-op write as the first statement: it takes the user row's write lock
    # (SQLite: the database write lock; PostgreSQL: the row lock, re-checking the
    # condition after a concurrent change commits), so the version cannot move
    # between this check and the commit of what the sign-in grants.
    locked = await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.credential_version == credential_version)
        .values(credential_version=users.c.credential_version)
    )
    if locked.rowcount != 1:
        return None
    await conn.execute(
        delete(sessions).where(
            sessions.c.user_id == user_id,
            (sessions.c.created_at <= now - limit.absolute_timeout)
            | (sessions.c.last_seen_at <= now - limit.idle_timeout),
        )
    )
    held = (
        await conn.execute(
            select(func.count()).select_from(sessions).where(sessions.c.user_id == user_id)
        )
    ).scalar_one() + (
        await conn.execute(
            select(func.count())
            .select_from(families)
            .where(families.c.user_id == user_id, _live_family(now))
        )
    ).scalar_one()
    excess = held - limit.max_per_user + 1
    if excess <= 0:
        return Evicted()
    candidates = [
        (row.last_seen_at, row.created_at, "session", row.id_hash, row.handle)
        for row in await conn.execute(
            select(
                sessions.c.last_seen_at,
                sessions.c.created_at,
                sessions.c.id_hash,
                sessions.c.handle,
            ).where(sessions.c.user_id == user_id)
        )
    ] + [
        (row.last_used_at, row.created_at, "family", row.id, row.id)
        for row in await conn.execute(
            select(families.c.last_used_at, families.c.created_at, families.c.id).where(
                families.c.user_id == user_id, _live_family(now)
            )
        )
    ]
    victims = sorted(candidates)[:excess]
    session_hashes = [key for _, _, kind, key, _ in victims if kind == "session"]
    family_ids = [key for _, _, kind, key, _ in victims if kind == "family"]
    if session_hashes:
        await conn.execute(delete(sessions).where(sessions.c.id_hash.in_(session_hashes)))
    if family_ids:
        await conn.execute(
            update(families).where(families.c.id.in_(family_ids)).values(revoked=True)
        )
        await _publish(conn, "family", family_ids, now, now)
    return Evicted(
        sessions=tuple(handle for _, _, kind, _, handle in victims if kind == "session"),
        families=tuple(family_ids),
    )


async def _revoke_user_families(conn: AsyncConnection, user_id: str, now: float) -> int:
    ids = [
        row.id
        for row in await conn.execute(
            select(families.c.id).where(
                families.c.user_id == user_id, families.c.revoked.is_(False)
            )
        )
    ]
    if ids:
        await conn.execute(update(families).where(families.c.id.in_(ids)).values(revoked=True))
        await _publish(conn, "family", ids, now, now)
    await _publish(conn, "epoch", [user_id], now, now)
    return len(ids)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    _configure_sqlite(dbapi_connection)


def _configure_sqlite(dbapi_connection: Any) -> None:
    """What every connection to a SQLite file gets: WAL, foreign keys, a busy
    timeout for another process's write lock, and commits without fsync (WAL
    still fsyncs at checkpoints)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

"""SQL tables and methods of WebAuthn passkeys (:mod:`gatepass.passkeys`): the
passkeys, each user's WebAuthn user handle, and the challenges issued.

:class:`PasskeysSql` is a mixin of :class:`~gatepass.stores.sql.SqlStore`; it
only needs the store's ``_tx()``. A challenge is stored as its SHA-256, never
as itself; consuming one is a single ``DELETE ... RETURNING``, so of concurrent
uses one wins.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from gatepass.errors import DuplicateRecord
from gatepass.stores.base import PasskeyRecord, WebAuthnChallengeRecord
from gatepass.stores.sql_metadata import metadata

#: Credential IDs are at most 1023 bytes (WebAuthn Level 3, credential ID).
MAX_CREDENTIAL_ID_BYTES = 1023
#: PostgreSQL text cannot hold NUL; no handle we issue contains one.
_NUL = "\x00"

passkeys = Table(
    "gatepass_passkeys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("credential_id", LargeBinary(MAX_CREDENTIAL_ID_BYTES), nullable=False, unique=True),
    Column("public_key", LargeBinary, nullable=False),
    # Counters are unsigned 32-bit: beyond a signed INTEGER.
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", Text, nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Index("ix_gatepass_passkeys_user", "user_id"),
)

webauthn_users = Table(
    "gatepass_webauthn_users",
    metadata,
    Column(
        "user_id",
        String(36),
        ForeignKey("gatepass_users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_handle", LargeBinary(64), nullable=False, unique=True),
)

webauthn_challenges = Table(
    "gatepass_webauthn_challenges",
    metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("ceremony", String(16), nullable=False),
    Column("user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE")),
    Column("expires_at", Float, nullable=False),
    Index("ix_gatepass_webauthn_challenges_expires", "expires_at"),
)


def _passkey(row: Any) -> PasskeyRecord:
    return PasskeyRecord(
        id=row.id,
        user_id=row.user_id,
        credential_id=bytes(row.credential_id),
        public_key=bytes(row.public_key),
        sign_count=int(row.sign_count),
        transports=tuple(row.transports.split()),
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _storable_id(passkey_id: str) -> bool:
    return _NUL not in passkey_id


async def prune_webauthn_challenges(conn: AsyncConnection, now: float) -> int:
    """Delete expired challenges (run by ``prune_expired``); return how many."""
    result = await conn.execute(
        delete(webauthn_challenges).where(webauthn_challenges.c.expires_at <= now)
    )
    return int(result.rowcount)


class PasskeysSql:
    """The :class:`~gatepass.stores.base.PasskeyStore` methods of the SQL store."""

    #: A transaction with driver errors mapped: :meth:`SqlStore._tx`.
    _tx: Callable[[], AbstractAsyncContextManager[AsyncConnection]]

    # user handles ----------------------------------------------------------

    async def get_user_handle(self, user_id: str) -> bytes | None:
        async with self._tx() as conn:
            value = (
                await conn.execute(
                    select(webauthn_users.c.user_handle).where(webauthn_users.c.user_id == user_id)
                )
            ).scalar()
        return None if value is None else bytes(value)

    async def get_or_create_user_handle(self, user_id: str, make: Callable[[], bytes]) -> bytes:
        found = await self.get_user_handle(user_id)
        if found is not None:
            return found
        try:
            async with self._tx() as conn:
                await conn.execute(
                    insert(webauthn_users).values(user_id=user_id, user_handle=make())
                )
        except DuplicateRecord:
            pass  # a concurrent first call stored one; use it
        found = await self.get_user_handle(user_id)
        if found is None:  # the user is gone (the insert broke its foreign key)
            raise DuplicateRecord("no such user")
        return found

    # challenges ------------------------------------------------------------

    async def create_webauthn_challenge(self, challenge: WebAuthnChallengeRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                insert(webauthn_challenges).values(
                    challenge_hash=challenge.challenge_hash,
                    ceremony=challenge.ceremony,
                    user_id=challenge.user_id,
                    expires_at=challenge.expires_at,
                )
            )

    async def consume_webauthn_challenge(
        self, challenge_hash: str, ceremony: str, user_id: str | None, now: float
    ) -> bool:
        if _NUL in challenge_hash:
            return False
        owner = (
            webauthn_challenges.c.user_id.is_(None)
            if user_id is None
            else webauthn_challenges.c.user_id == user_id
        )
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    delete(webauthn_challenges)
                    .where(
                        webauthn_challenges.c.challenge_hash == challenge_hash,
                        webauthn_challenges.c.ceremony == ceremony,
                        webauthn_challenges.c.expires_at > now,
                        owner,
                    )
                    .returning(webauthn_challenges.c.challenge_hash)
                )
            ).first()
        return row is not None

    # passkeys --------------------------------------------------------------

    async def add_passkey(self, passkey: PasskeyRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                insert(passkeys).values(
                    id=passkey.id,
                    user_id=passkey.user_id,
                    credential_id=passkey.credential_id,
                    public_key=passkey.public_key,
                    sign_count=passkey.sign_count,
                    transports=" ".join(passkey.transports),
                    name=passkey.name,
                    created_at=passkey.created_at,
                    last_used_at=passkey.last_used_at,
                )
            )

    async def get_passkey_by_credential_id(self, credential_id: bytes) -> PasskeyRecord | None:
        if len(credential_id) > MAX_CREDENTIAL_ID_BYTES:
            return None
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(passkeys).where(passkeys.c.credential_id == credential_id)
                )
            ).first()
        return _passkey(row) if row else None

    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(passkeys)
                .where(passkeys.c.user_id == user_id)
                .order_by(passkeys.c.created_at, passkeys.c.id)
            )
            return [_passkey(row) for row in rows]

    async def count_passkeys(self, user_id: str) -> int:
        async with self._tx() as conn:
            count = (
                await conn.execute(
                    select(func.count()).select_from(passkeys).where(passkeys.c.user_id == user_id)
                )
            ).scalar_one()
        return int(count)

    async def rename_passkey(
        self, user_id: str, passkey_id: str, name: str
    ) -> PasskeyRecord | None:
        if not _storable_id(passkey_id):
            return None
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    update(passkeys)
                    .where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
                    .values(name=name)
                    .returning(*passkeys.c)
                )
            ).first()
        return _passkey(row) if row else None

    async def delete_passkey(self, user_id: str, passkey_id: str) -> bool:
        if not _storable_id(passkey_id):
            return False
        async with self._tx() as conn:
            result = await conn.execute(
                delete(passkeys).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
            )
        return bool(result.rowcount)

    async def record_passkey_use(self, passkey_id: str, sign_count: int, now: float) -> bool:
        # Authenticators without a counter always send 0 (WebAuthn §6.1.1): a 0
        # passes only while the stored counter is 0 too.
        grows = passkeys.c.sign_count < sign_count if sign_count > 0 else passkeys.c.sign_count == 0
        async with self._tx() as conn:
            result = await conn.execute(
                update(passkeys)
                .where(passkeys.c.id == passkey_id, grows)
                .values(sign_count=sign_count, last_used_at=now)
            )
        return bool(result.rowcount)

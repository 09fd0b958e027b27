"""SQL tables and store methods of TOTP and recovery codes (:mod:`gatepass.mfa`).

One TOTP row per user: its secret sealed (opaque here), whether it is active yet,
and the last time step a code was accepted for, so a replayed or older code is
refused by the store itself, atomically. Recovery codes are kept only as keyed
hashes. Both tables cascade with the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)

from gatepass.errors import DuplicateRecord
from gatepass.stores.base import TotpRecord
from gatepass.stores.sql_metadata import metadata

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

totp_factors = Table(
    "gatepass_totp",
    metadata,
    Column(
        "user_id",
        String(36),
        ForeignKey("gatepass_users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("sealed_secret", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=False, server_default=false()),
    #: The RFC 6238 time step of the last accepted code; a code for it or an
    #: earlier step is refused.
    Column("last_step", Integer),
    Column("created_at", Float, nullable=False),
)

recovery_codes = Table(
    "gatepass_recovery_codes",
    metadata,
    Column(
        "user_id",
        String(36),
        ForeignKey("gatepass_users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("code_hash", String(64), nullable=False),
    PrimaryKeyConstraint("user_id", "code_hash", name="pk_gatepass_recovery_codes"),
)

#: Attempts at storing a pending setup when a concurrent first setup of the same
#: user inserted its row in between (the second attempt then replaces it).
_SETUP_ATTEMPTS = 2


def _totp(row: Any) -> TotpRecord:
    return TotpRecord(
        user_id=row.user_id,
        sealed_secret=row.sealed_secret,
        active=bool(row.active),
        last_step=row.last_step,
        created_at=row.created_at,
    )


class FactorsSql:
    """The :class:`~gatepass.stores.base.FactorStore` methods of
    :class:`~gatepass.stores.sql.SqlStore` (which provides ``_tx``)."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def save_pending_totp(self, user_id: str, sealed_secret: str, now: float) -> bool:
        for _ in range(_SETUP_ATTEMPTS):
            try:
                async with self._tx() as conn:
                    replaced = await conn.execute(
                        update(totp_factors)
                        .where(totp_factors.c.user_id == user_id, totp_factors.c.active.is_(False))
                        .values(sealed_secret=sealed_secret, created_at=now, last_step=None)
                    )
                    if replaced.rowcount:
                        return True
                    found = await conn.execute(
                        select(totp_factors.c.user_id).where(totp_factors.c.user_id == user_id)
                    )
                    if found.first() is not None:
                        return False  # active: it must be removed first
                    await conn.execute(
                        insert(totp_factors).values(
                            user_id=user_id,
                            sealed_secret=sealed_secret,
                            active=False,
                            last_step=None,
                            created_at=now,
                        )
                    )
                    return True
            except DuplicateRecord:
                # Another first setup inserted meanwhile (or the user is gone):
                # look again, and replace it if it is still pending.
                continue
        return False

    async def get_totp(self, user_id: str) -> TotpRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(totp_factors).where(totp_factors.c.user_id == user_id))
            ).first()
        return _totp(row) if row else None

    async def activate_totp(
        self, user_id: str, sealed_secret: str, step: int, code_hashes: Sequence[str]
    ) -> bool:
        async with self._tx() as conn:
            # Only the pending setup the code was checked against: a newer setup
            # that replaced it meanwhile stays pending.
            activated = await conn.execute(
                update(totp_factors)
                .where(
                    totp_factors.c.user_id == user_id,
                    totp_factors.c.active.is_(False),
                    totp_factors.c.sealed_secret == sealed_secret,
                )
                .values(active=True, last_step=step)
            )
            if not activated.rowcount:
                return False
            await _replace_codes(conn, user_id, code_hashes)
        return True

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        async with self._tx() as conn:
            # One conditional write: of concurrent uses of one step, one moves it.
            accepted = await conn.execute(
                update(totp_factors)
                .where(
                    totp_factors.c.user_id == user_id,
                    totp_factors.c.active.is_(True),
                    or_(totp_factors.c.last_step.is_(None), totp_factors.c.last_step < step),
                )
                .values(last_step=step)
            )
        return bool(accepted.rowcount)

    async def delete_totp(self, user_id: str) -> bool:
        async with self._tx() as conn:
            removed = await conn.execute(
                delete(totp_factors).where(totp_factors.c.user_id == user_id)
            )
            await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        return bool(removed.rowcount)

    async def replace_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        async with self._tx() as conn:
            # The TOTP row's write lock first, so a removal committing meanwhile
            # either runs before (no codes stored) or after (they go with it).
            active = await conn.execute(
                update(totp_factors)
                .where(totp_factors.c.user_id == user_id, totp_factors.c.active.is_(True))
                .values(active=True)
            )
            if not active.rowcount:
                return False
            await _replace_codes(conn, user_id, code_hashes)
        return True

    async def consume_recovery_code(self, user_id: str, code_hashes: Sequence[str]) -> bool:
        if not code_hashes:
            return False
        async with self._tx() as conn:
            used = await conn.execute(
                delete(recovery_codes).where(
                    recovery_codes.c.user_id == user_id,
                    recovery_codes.c.code_hash.in_(list(code_hashes)),
                )
            )
        return bool(used.rowcount)

    async def count_recovery_codes(self, user_id: str) -> int:
        async with self._tx() as conn:
            count = await conn.execute(
                select(func.count())
                .select_from(recovery_codes)
                .where(recovery_codes.c.user_id == user_id)
            )
            return int(count.scalar_one())


async def _replace_codes(conn: AsyncConnection, user_id: str, code_hashes: Sequence[str]) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    if code_hashes:
        await conn.execute(
            insert(recovery_codes), [{"user_id": user_id, "code_hash": h} for h in code_hashes]
        )

"""SQL storage of sign-ins waiting for their second factor (a mixin of
:class:`~gatepass.stores.sql.SqlStore`)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from gatepass.freshness import parse_amr
from gatepass.stores.base import PendingSignInRecord
from gatepass.stores.sql_metadata import metadata

pending_sign_ins = Table(
    "gatepass_pending_sign_ins",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "user_id", String(36), ForeignKey("gatepass_users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("client", String(8), nullable=False),
    Column("credential_version", Integer, nullable=False),
    Column("auth_time", Float, nullable=False),
    Column("amr", String(128), nullable=False),
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_gatepass_pending_sign_ins_expires", "expires_at"),
)


class _Transactional(Protocol):
    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


def _pending(row: Any) -> PendingSignInRecord:
    return PendingSignInRecord(
        token_hash=row.token_hash,
        user_id=row.user_id,
        client=row.client,
        credential_version=row.credential_version,
        auth_time=row.auth_time,
        amr=parse_amr(row.amr),
        created_at=row.created_at,
        expires_at=row.expires_at,
        failures=row.failures,
    )


def _live(token_hash: str, now: float) -> Any:
    return (pending_sign_ins.c.token_hash == token_hash) & (pending_sign_ins.c.expires_at > now)


class PendingSignInsSql:
    """:class:`~gatepass.stores.base.PendingSignInStore` over the store's engine."""

    async def create_pending_sign_in(self: _Transactional, pending: PendingSignInRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                insert(pending_sign_ins).values(
                    token_hash=pending.token_hash,
                    user_id=pending.user_id,
                    client=pending.client,
                    credential_version=pending.credential_version,
                    auth_time=pending.auth_time,
                    amr=" ".join(pending.amr),
                    failures=pending.failures,
                    created_at=pending.created_at,
                    expires_at=pending.expires_at,
                )
            )

    async def get_pending_sign_in(
        self: _Transactional, token_hash: str, now: float
    ) -> PendingSignInRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(pending_sign_ins).where(_live(token_hash, now)))
            ).first()
        return _pending(row) if row else None

    async def fail_pending_sign_in(
        self: _Transactional, token_hash: str, *, max_failures: int
    ) -> bool:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    update(pending_sign_ins)
                    .where(pending_sign_ins.c.token_hash == token_hash)
                    .values(failures=pending_sign_ins.c.failures + 1)
                    .returning(pending_sign_ins.c.failures)
                )
            ).first()
            if row is None:
                return True
            if row.failures >= max_failures:
                await conn.execute(
                    delete(pending_sign_ins).where(pending_sign_ins.c.token_hash == token_hash)
                )
                return True
        return False

    async def consume_pending_sign_in(
        self: _Transactional, token_hash: str, now: float
    ) -> PendingSignInRecord | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    delete(pending_sign_ins)
                    .where(_live(token_hash, now))
                    .returning(*pending_sign_ins.c)
                )
            ).first()
        return _pending(row) if row else None


async def prune_pending_sign_ins(conn: AsyncConnection, now: float) -> int:
    """Delete the expired pending sign-ins (run by the store's pruning)."""
    gone = await conn.execute(delete(pending_sign_ins).where(pending_sign_ins.c.expires_at <= now))
    return int(gone.rowcount)

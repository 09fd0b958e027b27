"""Refresh rotation in the SQL store itself: two processes on one SQLite file, and
a rotation that meets another process's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gatepass.errors import StoreUnavailable
from gatepass.stores.base import FamilyRecord, RotationStatus, SessionLimit
from gatepass.stores.sql import SqlStore

LIMIT = SessionLimit(max_per_user=100, idle_timeout=1800, absolute_timeout=86_400)


async def _store_with_family(path: Path) -> SqlStore:
    store = SqlStore(f"sqlite:///{path}")
    await store.start()
    user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), 1.0)
    family = FamilyRecord("fam", user.id, 1.0, 1.0, 10_000.0, None, None)
    await store.create_family(family, "old", credential_version=0, limit=LIMIT)
    return store


@pytest.mark.anyio
async def test_two_processes_racing_one_token_on_one_sqlite_file_rotate_it_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gatepass.db"
    first = await _store_with_family(path)
    second = SqlStore(f"sqlite:///{path}")  # another node's store: its own connections
    await second.start()
    try:
        outcomes = await asyncio.gather(
            *(
                store.rotate_refresh_token("old", f"new-{n}", 2.0)
                for n in range(10)
                for store in (first, second)
            )
        )
    finally:
        await first.close()
        await second.close()
    statuses = [o.status for o in outcomes]
    assert statuses.count(RotationStatus.ROTATED) == 1, statuses
    assert RotationStatus.REUSED in statuses


@pytest.mark.anyio
async def test_a_rotation_waits_for_another_processes_write_lock_then_fails_closed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gatepass.db"
    store = await _store_with_family(path)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        other.execute("PRAGMA busy_timeout=0")
        pending = asyncio.ensure_future(store.rotate_refresh_token("old", "new", 2.0))
        await asyncio.sleep(0.2)
        assert not pending.done()  # waiting, not failing at once
        other.execute("ROLLBACK")
        assert (await pending).status is RotationStatus.ROTATED
        # Held past the busy timeout: a store error (503), never a rotation.
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await store.rotate_refresh_token("new", "newer", 3.0)
    finally:
        other.close()
        await store.close()

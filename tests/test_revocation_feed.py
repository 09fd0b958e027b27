"""The revocation feed as another node reads it: rows that commit out of ID order,
rows read twice, holes, memory, pruning.

On PostgreSQL a revoking transaction takes its feed ID from the sequence when it
inserts and becomes visible when it commits, so a lower ID can appear after a
higher one was read. The attack tests hold such a transaction open on a real
PostgreSQL (``pg_url``, tests/servers.py) with the store's own feed insert, let a
later revocation commit and be read by another node, then commit the first:
the other node must refuse the token the first one revoked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import AuthenticationFailed
from gatepass.passwords import PasswordHasher
from gatepass.revocation import REVOCATION_GAP_SECONDS, REVOCATION_POLL_SECONDS, RevocationView
from gatepass.stores.base import RevocationKind
from gatepass.stores.sql import SqlStore, _publish, families, revocations
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD, FakeClock

RETENTION = 960.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def open_node(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[Callable[[str], Any]]:
    """Start gatepass nodes (separate processes, as far as the feed can tell) on one database."""
    nodes: list[Gatepass] = []

    async def start(url: str) -> Gatepass:
        node = await Gatepass.open(
            make_settings(database_url=url),
            clock=clock,
            hasher=PasswordHasher(**FAST_HASHER_PARAMS),
        )
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.close()


def sql_store(node: Gatepass) -> SqlStore:
    assert isinstance(node.store, SqlStore)
    return node.store


async def signed_in(node: Gatepass, email: str) -> tuple[Identity, str]:
    """Register ``email``, sign in as a mobile client: the caller and its header."""
    user = await node.accounts.register(email, PASSWORD)
    pair = await node.accounts.start_token_family(user, ip=None, user_agent=None)
    header = f"Bearer {pair.access_token}"
    return await node.authenticator.authenticate(header, None), header


async def accepted(node: Gatepass, header: str) -> bool:
    try:
        await node.authenticator.authenticate(header, None)
    except AuthenticationFailed:
        return False
    return True


async def revoke_in(
    conn: AsyncConnection, kind: RevocationKind, victim: Identity, now: float
) -> None:
    """What the store writes to revoke ``victim`` by ``kind``, in the caller's transaction."""
    if kind == "jti":
        assert victim.token_id is not None
        assert victim.token_expires_at is not None
        await _publish(conn, "jti", [victim.token_id], victim.token_expires_at, now)
    elif kind == "family":
        assert victim.family_id is not None
        await conn.execute(
            update(families).where(families.c.id == victim.family_id).values(revoked=True)
        )
        await _publish(conn, "family", [victim.family_id], now, now)
    else:
        await _publish(conn, "epoch", [victim.user.id], now, now)


# attacks: revocations that commit after a higher-numbered one was read ------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["jti", "family", "epoch"])
async def test_a_revocation_committed_after_a_later_one_was_read_is_not_missed(
    open_node: Callable[[str], Any], pg_url: str, clock: FakeClock, kind: RevocationKind
) -> None:
    node_a = await open_node(pg_url)
    node_b = await open_node(pg_url)
    victim, victim_header = await signed_in(node_a, "ada@example.com")
    other, other_header = await signed_in(node_b, "eve@example.com")
    clock.advance(5)  # an epoch set now is after the victim token's iat
    assert await accepted(node_b, victim_header)

    # Node A revokes the victim's token; its transaction holds the lower feed IDs
    # and is slow to commit (a paused process, a slow network, a busy server).
    held = await sql_store(node_a).engine.connect()
    try:
        await held.begin()
        await revoke_in(held, kind, victim, clock())
        # Meanwhile node B logs another token out: higher IDs, committed first.
        await node_b.accounts.logout(other)
        clock.advance(REVOCATION_POLL_SECONDS)
        assert not await accepted(node_b, other_header)  # node B has read the higher IDs
        assert await accepted(node_b, victim_header)  # A's revocation is not committed yet
        await held.commit()
    finally:
        await held.close()

    clock.advance(REVOCATION_POLL_SECONDS)
    assert not await accepted(node_b, victim_header)


@pytest.mark.anyio
async def test_a_bearer_logout_committed_after_a_later_logout_was_read_is_not_missed(
    open_node: Callable[[str], Any], pg_url: str, clock: FakeClock
) -> None:
    """A whole Bearer logout (the jti and the family, as ``revoke_token`` writes them)
    in the held transaction, committed after a later logout on the same node."""
    node_a = await open_node(pg_url)
    node_b = await open_node(pg_url)
    victim, victim_header = await signed_in(node_a, "ada@example.com")
    other, other_header = await signed_in(node_a, "eve@example.com")
    held = await sql_store(node_a).engine.connect()
    try:
        await held.begin()
        await revoke_in(held, "jti", victim, clock())
        await revoke_in(held, "family", victim, clock())
        await node_a.accounts.logout(other)
        clock.advance(REVOCATION_POLL_SECONDS)
        assert not await accepted(node_b, other_header)
        await held.commit()
    finally:
        await held.close()
    clock.advance(REVOCATION_POLL_SECONDS)
    assert not await accepted(node_b, victim_header)
    # Node A too: its own read after logging the other token out came before the commit.
    assert not await accepted(node_a, victim_header)


# the view over the store: holes, re-reads, memory, pruning -------------------------------


async def write_rows(store: SqlStore, ids: list[int], now: float, kind: str = "jti") -> None:
    """Feed rows with chosen IDs (holes where another writer's IDs would be)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(revocations),
            [
                {
                    "id": i,
                    "kind": kind,
                    "subject": f"{kind}-{i}",
                    "value": now + 900,
                    "created_at": now,
                }
                for i in ids
            ],
        )


@pytest.fixture
async def feed(database_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(database_url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.anyio
async def test_rows_read_again_while_a_hole_holds_the_floor_are_applied_once(
    feed: SqlStore, clock: FakeClock
) -> None:
    view = RevocationView(feed, retention=RETENTION, clock=clock)
    await write_rows(feed, [1, 3, 4], clock())  # 2 is still uncommitted somewhere
    await view.sync()
    assert view.applied == 3
    assert view.floor == 1
    for _ in range(5):
        clock.advance(REVOCATION_POLL_SECONDS)
        # The next poll reads 3 and 4 again (they are above the floor) ...
        assert [e.id for e in await feed.revocation_events(view.floor)] == [3, 4]
        await view.sync()
    # ... and applies neither a second time.
    assert view.applied == 3
    assert view.pending_ids == 2
    await write_rows(feed, [2], clock())  # the late writer commits
    await view.sync()
    assert view.applied == 4
    assert view.floor == 4
    assert view.pending_ids == 0
    assert all(view.jti_revoked(f"jti-{i}") for i in (1, 2, 3, 4))


@pytest.mark.anyio
async def test_a_permanent_hole_is_passed_after_the_gap_bound_and_not_before(
    feed: SqlStore, clock: FakeClock
) -> None:
    view = RevocationView(feed, retention=RETENTION, clock=clock)
    await write_rows(feed, [1, 2, 5, 6], clock())  # 3 and 4 rolled back: never commit
    await view.sync()
    assert view.floor == 2
    clock.advance(REVOCATION_GAP_SECONDS - 1)
    await view.sync()
    assert view.floor == 2  # a transaction holding 3 may still commit
    clock.advance(1)
    await view.sync()
    assert view.floor == 6
    assert view.pending_ids == 0


@pytest.mark.anyio
async def test_memory_above_the_floor_stays_bounded_under_many_events_with_holes(
    feed: SqlStore, clock: FakeClock
) -> None:
    view = RevocationView(feed, retention=RETENTION, clock=clock)
    highest = 0
    for _ in range(5):  # five minutes of 1,000 events a minute, every other ID a hole
        ids = list(range(highest + 2, highest + 2001, 2))
        await write_rows(feed, ids, clock())
        highest = ids[-1]
        await view.sync()
        clock.advance(REVOCATION_GAP_SECONDS)
        await view.sync()
        # Everything older than the gap bound is folded into the floor.
        assert view.floor == highest
        assert view.pending_ids == 0
    assert view.applied == 5000
    assert view.jti_revoked(f"jti-{highest}")


@pytest.mark.anyio
async def test_pruning_still_drops_expired_entries_from_memory_and_the_store(
    feed: SqlStore, clock: FakeClock
) -> None:
    view = RevocationView(feed, retention=RETENTION, clock=clock)
    await write_rows(feed, [1, 2, 3], clock())
    await view.sync()
    clock.advance(RETENTION + 1)
    await write_rows(feed, [5], clock())  # 4 is a hole, 5 is live
    await view.sync()  # over the prune interval: prunes
    assert not view.jti_revoked("jti-1")
    assert view.jti_revoked("jti-5")
    assert [e.id for e in await feed.revocation_events(0)] == [5]
    # A process started now sees a hole below 5 (pruned rows), still applies 5 at
    # once, and passes the hole after the bound.
    fresh = RevocationView(feed, retention=RETENTION, clock=clock)
    await fresh.sync()
    assert fresh.jti_revoked("jti-5")
    assert fresh.floor == 0
    clock.advance(REVOCATION_GAP_SECONDS)
    await fresh.sync()
    assert fresh.floor == 5
    assert fresh.pending_ids == 0


@pytest.mark.anyio
async def test_rolled_back_revocations_leave_holes_the_view_passes(
    pg_url: str, clock: FakeClock
) -> None:
    """A real hole: PostgreSQL hands out sequence values that a rollback never returns."""
    store = SqlStore(pg_url)
    await store.start()
    try:
        view = RevocationView(store, retention=RETENTION, clock=clock)
        await store.revoke_jti("before", clock() + 900, clock())
        async with store.engine.connect() as conn:
            await conn.begin()
            await _publish(conn, "jti", ["rolled-back"], clock() + 900, clock())
            await conn.rollback()
        await store.revoke_jti("after", clock() + 900, clock())
        await view.sync()
        assert view.jti_revoked("before")
        assert view.jti_revoked("after")
        assert not view.jti_revoked("rolled-back")
        held_at = view.floor
        clock.advance(REVOCATION_GAP_SECONDS)
        await view.sync()
        assert view.floor > held_at
        assert view.pending_ids == 0
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_bearer_logout_after_every_revocation_was_pruned_is_not_missed(
    open_node: Callable[[str], Any], tmp_path: Any, clock: FakeClock
) -> None:
    """SQLite numbers a new row after the highest one left: had pruning emptied the
    feed, the next revocation would reuse an ID every view has passed, and the
    logged-out token would live on, on this node and every other."""
    node = await open_node(f"sqlite+aiosqlite:///{tmp_path / 'gatepass.db'}")
    first, _ = await signed_in(node, "ada@example.com")
    await node.accounts.logout(first)
    clock.advance(RETENTION + 60)  # every token the logout concerned has expired
    await node.revocations.sync()  # past the prune interval: prunes the feed
    victim, victim_header = await signed_in(node, "eve@example.com")
    assert await accepted(node, victim_header)

    await node.accounts.logout(victim)

    clock.advance(REVOCATION_POLL_SECONDS)
    assert not await accepted(node, victim_header)

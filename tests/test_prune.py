"""Expired sessions and refresh families are deleted, live ones are kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.passwords import PasswordHasher
from tests.conftest import PASSWORD, FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.anyio
async def test_prune_deletes_only_what_has_expired(
    make_settings: Callable[..., Settings], fast_hasher: PasswordHasher, clock: FakeClock
) -> None:
    settings = make_settings(
        session_idle_timeout="100", session_absolute_timeout="1000", refresh_token_ttl="500"
    )
    gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)
    db = settings.data_dir / "gatepass.db"
    try:
        user = await gp.accounts.register("ada@example.com", PASSWORD)
        idle, _ = await gp.sessions.create(user, ip=None, user_agent=None, max_per_user=100)
        old_pair, _ = await gp.refresh_tokens.start_family(
            user, ip=None, user_agent=None, limit=gp.sessions.policy.limit(100)
        )
        clock.advance(90)
        busy, _ = await gp.sessions.create(user, ip=None, user_agent=None, max_per_user=100)
        assert await gp.prune() == 0
        clock.advance(20)  # the first session is idle past 100 s; the second is not
        assert await gp.prune() == 1
        assert _count(db, "gatepass_sessions") == 1
        assert await gp.sessions.load(busy.cookie_value) is not None
        assert await gp.sessions.load(idle.cookie_value) is None
        clock.advance(400)  # the family is past its 500 s lifetime
        fresh, _ = await gp.refresh_tokens.start_family(
            user, ip=None, user_agent=None, limit=gp.sessions.policy.limit(100)
        )
        await gp.prune()
        assert _count(db, "gatepass_refresh_families") == 1
        assert _count(db, "gatepass_refresh_tokens") == 1
        assert old_pair.family_id != fresh.family_id
        assert (await gp.refresh_tokens.rotate(fresh.refresh_token)).family_id == fresh.family_id
    finally:
        await gp.close()

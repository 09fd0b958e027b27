"""Regressions for defects found by reading the code: each test provokes the defect."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import gatepass
from gatepass.config import load_settings
from gatepass.core import Gatepass
from gatepass.errors import ConfigError, DuplicateRecord, StoreUnavailable
from gatepass.keys import KeyRing
from gatepass.sessions import CookieSigner, SessionManager, SessionPolicy
from gatepass.stores.base import SessionLimit, SessionRecord, SigningKeyRecord, UserRecord
from gatepass.stores.sql import SqlStore
from tests.conftest import FakeClock
from tests.e2e_support import run_serve_expecting_exit

SECRET = "a-session-secret-of-at-least-32-characters"
LIMIT = SessionLimit(max_per_user=10, idle_timeout=100, absolute_timeout=1000)
SRC = Path(gatepass.__file__).parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    # Once on SQLite, once on PostgreSQL (tests/servers.py).
    sql = SqlStore(database_url)
    await sql.start()
    yield sql
    await sql.close()


def test_runtime_code_has_no_assert_statements() -> None:
    """``python -O`` strips asserts: type narrowing or checks in them would vanish."""
    offenders = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert offenders == []


@pytest.mark.anyio
async def test_duplicate_insert_raises_a_gatepass_error_not_a_driver_error(
    store: SqlStore, clock: FakeClock
) -> None:
    user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), clock())
    record = SessionRecord("h" * 64, "handle", user.id, "csrf", clock(), clock(), None, None)
    await store.insert_session(record, credential_version=0, limit=LIMIT)
    with pytest.raises(DuplicateRecord):
        await store.insert_session(record, credential_version=0, limit=LIMIT)


class SlowFirstRead:
    """A key store whose first ``list_signing_keys`` returns what it read only after
    the test lets it go: a slow, old read racing a newer one."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.reads = 0

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        self.reads += 1
        records = await self._store.list_signing_keys()
        if self.reads == 1:
            await self.release.wait()
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.anyio
async def test_slow_old_key_ring_read_cannot_overwrite_a_newer_ring(
    store: SqlStore, clock: FakeClock
) -> None:
    await KeyRing(store, "EdDSA", 60, clock).start()
    slow = SlowFirstRead(store)
    ring = KeyRing(slow, "EdDSA", 60, clock)  # type: ignore[arg-type]
    stale_read = asyncio.create_task(ring.reload())  # reads the ring before the rotation
    await asyncio.sleep(0.05)
    rotated = await asyncio.wait_for(ring.rotate(), 5)  # writes, then reads the new ring
    slow.release.set()
    await asyncio.wait_for(stale_read, 5)
    assert ring.signing_key().kid == rotated.kid
    assert ring.get(rotated.kid) is not None


class LogoutStorm:
    """A session store where every read is overtaken by a logout of someone else."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.manager: SessionManager | None = None
        self.reads = 0

    async def get_session(self, id_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        self.reads += 1
        found = await self._store.get_session(id_hash)
        if self.manager is not None:
            self.manager.forget(user_id="someone-else")
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.anyio
async def test_logouts_elsewhere_cannot_make_a_session_load_spin(
    store: SqlStore, clock: FakeClock
) -> None:
    user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), clock())
    storm = LogoutStorm(store)
    manager = SessionManager(storm, CookieSigner([SECRET]), SessionPolicy(100, 1000), clock)  # type: ignore[arg-type]
    storm.manager = manager
    issued, _ = await manager.create(user, ip=None, user_agent=None, max_per_user=10)
    active = await manager.load(issued.cookie_value)
    assert active is not None
    assert storm.reads == 1
    # The raced read was not cached: the next request reads the store again.
    await manager.load(issued.cookie_value)
    assert storm.reads == 2


@pytest.mark.anyio
async def test_prune_loop_survives_an_unexpected_error(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({}, data_dir=tmp_path / ".gatepass")
    gp = await Gatepass.open(settings, clock=clock)
    rounds: list[str] = []
    failures: list[BaseException] = [RuntimeError("boom"), StoreUnavailable("down")]

    async def prune() -> int:
        rounds.append("round")
        if failures:
            raise failures.pop(0)
        return 0

    monkeypatch.setattr(gp, "prune", prune)
    loop = asyncio.create_task(gp.prune_forever(interval=0))
    try:
        for _ in range(200):
            if len(rounds) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()
        await gp.close()
    assert len(rounds) >= 3, "the loop stopped after an error"


@pytest.mark.anyio
async def test_a_redis_url_we_cannot_read_is_refused_rather_than_ignored(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = load_settings(
        {"GATEPASS_REDIS_URL": "memcached://127.0.0.1:6379"}, data_dir=tmp_path / ".gatepass"
    )
    with pytest.raises(ConfigError) as caught:
        await Gatepass.open(settings, clock=clock)
    assert caught.value.setting == "GATEPASS_REDIS_URL"


@pytest.mark.e2e
def test_serve_with_an_unreachable_redis_stops_with_one_line(tmp_path: Path) -> None:
    result = run_serve_expecting_exit(tmp_path, {"GATEPASS_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "redis" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_serve_with_an_unreadable_redis_url_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_serve_expecting_exit(tmp_path, {"GATEPASS_REDIS_URL": "redis+cluster://a:b"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "GATEPASS_REDIS_URL" in lines[0]

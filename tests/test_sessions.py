"""Unit tests of gatepass.sessions: pure expiry policy, cookie signing, and the
session manager on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text as sql

from gatepass.sessions import (
    MAX_COOKIE_LENGTH,
    ActiveSession,
    CookieSigner,
    IssuedSession,
    SessionManager,
    SessionPolicy,
    SessionState,
    hash_session_id,
    needs_touch,
    new_session_id,
    session_state,
)
from gatepass.stores.base import SLOT_TAG_LENGTH, SessionRecord, UserRecord, slot_tag
from gatepass.stores.sql import SqlStore
from tests.conftest import FakeClock

SECRET_A = "a" * 32 + "-first-signing-secret"
SECRET_B = "b" * 32 + "-second-secret"
SECRET_C = "c" * 32 + "-unrelated-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def record(created_at: float = 1000.0, last_seen_at: float | None = None) -> SessionRecord:
    return SessionRecord(
        id_hash="0" * 64,
        handle="handle",
        user_id="user",
        csrf_token="csrf-token-value",
        created_at=created_at,
        last_seen_at=created_at if last_seen_at is None else last_seen_at,
        ip="192.0.2.1",
        user_agent="pytest",
    )


def split_cookie(cookie_value: str) -> tuple[str, str]:
    session_id, _, signature = cookie_value.rpartition(".")
    return session_id, signature


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


# pure policy ---------------------------------------------------------------

POLICY = SessionPolicy(idle_timeout=100, absolute_timeout=1000)


def test_session_valid_just_before_idle_timeout() -> None:
    assert session_state(record(), 1000 + 99.999, POLICY) is SessionState.VALID


def test_session_idle_expired_at_idle_timeout() -> None:
    assert session_state(record(), 1000 + 100, POLICY) is SessionState.IDLE_EXPIRED
    assert session_state(record(), 1000 + 150, POLICY) is SessionState.IDLE_EXPIRED


def test_idle_timeout_counts_from_last_seen_not_creation() -> None:
    seen_late = record(created_at=1000, last_seen_at=1500)
    assert session_state(seen_late, 1599, POLICY) is SessionState.VALID
    assert session_state(seen_late, 1600, POLICY) is SessionState.IDLE_EXPIRED


def test_session_valid_just_before_absolute_timeout() -> None:
    active = record(created_at=1000, last_seen_at=1990)
    assert session_state(active, 1999.999, POLICY) is SessionState.VALID


def test_session_absolute_expired_at_absolute_timeout_even_when_active() -> None:
    active = record(created_at=1000, last_seen_at=1999)
    assert session_state(active, 2000, POLICY) is SessionState.ABSOLUTE_EXPIRED
    assert session_state(active, 5000, POLICY) is SessionState.ABSOLUTE_EXPIRED


def test_session_state_reads_no_clock_of_its_own() -> None:
    # Created at t=1000, long before the real time: only the ``now`` passed in counts.
    assert session_state(record(), 1050, POLICY) is SessionState.VALID
    assert session_state(record(), 1000 + 100, POLICY) is SessionState.IDLE_EXPIRED


@pytest.mark.parametrize(
    ("idle", "interval"),
    [(1800, 60.0), (601, 60.0), (600, 60.0), (599, 59.9), (100, 10.0), (1, 0.1)],
)
def test_touch_interval_is_min_of_60s_and_tenth_of_idle(idle: int, interval: float) -> None:
    assert SessionPolicy(idle, 86_400).touch_interval == pytest.approx(interval)


def test_needs_touch_only_after_touch_interval() -> None:
    r = record(created_at=1000)
    assert not needs_touch(r, 1000, POLICY)
    assert not needs_touch(r, 1009.999, POLICY)
    assert needs_touch(r, 1010, POLICY)


# cookie signing ------------------------------------------------------------


def test_cookie_round_trip_returns_session_id() -> None:
    signer = CookieSigner([SECRET_A])
    cookie = signer.sign("some-session-id")
    assert cookie != "some-session-id"
    assert signer.unsign(cookie) == "some-session-id"


def test_tampered_signature_rejected() -> None:
    signer = CookieSigner([SECRET_A])
    session_id, signature = split_cookie(signer.sign("some-session-id"))
    for index in (0, len(signature) // 2, len(signature) - 2):
        assert signer.unsign(f"{session_id}.{flip(signature, index)}") is None


def test_tampered_session_id_rejected() -> None:
    signer = CookieSigner([SECRET_A])
    session_id, signature = split_cookie(signer.sign("some-session-id"))
    assert signer.unsign(f"{flip(session_id, 0)}.{signature}") is None
    assert signer.unsign(f"other-session-id.{signature}") is None


def test_cookie_without_signature_rejected() -> None:
    signer = CookieSigner([SECRET_A])
    session_id, _ = split_cookie(signer.sign("some-session-id"))
    assert signer.unsign(session_id) is None
    assert signer.unsign(f"{session_id}.") is None


def test_cookie_signed_with_unknown_secret_rejected() -> None:
    forged = CookieSigner([SECRET_C]).sign("some-session-id")
    assert CookieSigner([SECRET_A, SECRET_B]).unsign(forged) is None


def test_cookie_signed_with_retired_secret_still_verifies() -> None:
    old_cookie = CookieSigner([SECRET_B]).sign("some-session-id")
    rotated = CookieSigner([SECRET_A, SECRET_B])
    assert rotated.unsign(old_cookie) == "some-session-id"


def test_cookie_signed_with_removed_secret_rejected() -> None:
    old_cookie = CookieSigner([SECRET_B]).sign("some-session-id")
    assert CookieSigner([SECRET_A]).unsign(old_cookie) is None


def test_first_secret_signs() -> None:
    cookie = CookieSigner([SECRET_A, SECRET_B]).sign("some-session-id")
    assert CookieSigner([SECRET_A]).unsign(cookie) == "some-session-id"
    assert CookieSigner([SECRET_B]).unsign(cookie) is None


@pytest.mark.parametrize(
    "value",
    ["", ".", "x" * (MAX_COOKIE_LENGTH + 1), "caf\u00e9.sig", "id\ud800.sig", "\x00.\x00"],
)
def test_malformed_cookie_values_rejected_without_raising(value: str) -> None:
    assert CookieSigner([SECRET_A]).unsign(value) is None


def test_signer_requires_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        CookieSigner([])


def test_signer_repr_hides_secrets() -> None:
    assert SECRET_A not in repr(CookieSigner([SECRET_A, SECRET_B]))
    assert SECRET_B not in repr(CookieSigner([SECRET_A, SECRET_B]))


def test_hash_session_id_is_hex_sha256() -> None:
    assert hash_session_id("abc") == hashlib.sha256(b"abc").hexdigest()


def test_a_tagged_session_id_keeps_its_users_slot_tag_and_the_rest_of_the_digest() -> None:
    session_id = new_session_id("user-1")
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id.startswith(slot_tag("user-1"))
    assert hash_session_id(session_id) == slot_tag("user-1") + digest[SLOT_TAG_LENGTH:]
    # The tag is a hash prefix: the cookie does not carry the user ID.
    assert "user-1" not in session_id


# SessionManager on a real SqlStore -----------------------------------------


@dataclass
class Env:
    store: SqlStore
    manager: SessionManager
    clock: FakeClock
    user: UserRecord

    async def rows(self) -> list[dict[str, Any]]:
        """The stored session rows, read straight from the database."""
        async with self.store.engine.connect() as conn:
            result = await conn.execute(sql("SELECT * FROM gatepass_sessions"))
            return [dict(row._mapping) for row in result]

    async def last_seen(self) -> float:
        (row,) = await self.rows()
        return float(row["last_seen_at"])


def files_bytes(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))


async def make_env(url: str, clock: FakeClock, idle: int, absolute: int) -> Env:
    store = SqlStore(url)
    await store.start()
    user = await store.create_user("ada@example.com", "$argon2id$fake", ("user",), clock())
    manager = SessionManager(store, CookieSigner([SECRET_A]), SessionPolicy(idle, absolute), clock)
    return Env(store, manager, clock, user)


@pytest.fixture
async def env(database_url: str, clock: FakeClock) -> AsyncIterator[Env]:
    # Once on SQLite, once on PostgreSQL (tests/servers.py).
    environment = await make_env(database_url, clock, idle=100, absolute=1000)
    yield environment
    await environment.store.close()


async def create(env: Env) -> IssuedSession:
    issued, _ = await env.manager.create(
        env.user, ip="192.0.2.1", user_agent="pytest", max_per_user=100
    )
    return issued


@pytest.mark.anyio
async def test_store_keeps_only_sha256_of_session_id(env: Env) -> None:
    issued = await create(env)
    session_id, _ = split_cookie(issued.cookie_value)
    (row,) = await env.rows()
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    assert row["id_hash"][SLOT_TAG_LENGTH:] == digest[SLOT_TAG_LENGTH:]
    for value in dict(row).values():
        assert session_id not in str(value)
        assert issued.cookie_value not in str(value)


@pytest.mark.anyio
async def test_session_id_appears_nowhere_in_database_file(
    tmp_path: Path, clock: FakeClock
) -> None:
    env = await make_env(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}", clock, 100, 1000)
    issued = await create(env)
    session_id, _ = split_cookie(issued.cookie_value)
    await env.store.close()
    raw = files_bytes(tmp_path, "sessions.db*")
    assert hash_session_id(session_id).encode() in raw  # the file really holds the session
    assert session_id.encode() not in raw


@pytest.mark.anyio
async def test_session_id_is_256_bit_random(env: Env) -> None:
    ids = {split_cookie((await create(env)).cookie_value)[0] for _ in range(5)}
    assert len(ids) == 5
    for session_id in ids:
        assert len(session_id) >= 43  # 32 bytes, URL-safe base64


@pytest.mark.anyio
async def test_handle_and_csrf_token_differ_from_session_id(env: Env) -> None:
    issued = await create(env)
    session_id, _ = split_cookie(issued.cookie_value)
    assert issued.record.handle not in (session_id, issued.record.id_hash)
    assert issued.record.csrf_token not in (session_id, issued.record.id_hash)


@pytest.mark.anyio
async def test_created_session_loads_with_its_user(env: Env) -> None:
    issued = await create(env)
    active = await env.manager.load(issued.cookie_value)
    assert active is not None
    assert active.user.id == env.user.id
    assert active.record.handle == issued.record.handle
    assert active.record.ip == "192.0.2.1"
    assert active.record.user_agent == "pytest"


@pytest.mark.anyio
async def test_load_rejects_missing_or_forged_cookie(env: Env) -> None:
    issued = await create(env)
    session_id, _ = split_cookie(issued.cookie_value)
    assert await env.manager.load(None) is None
    assert await env.manager.load(session_id) is None
    assert await env.manager.load(CookieSigner([SECRET_C]).sign(session_id)) is None


@pytest.mark.anyio
async def test_load_touches_last_seen_at_at_most_every_touch_interval(env: Env) -> None:
    issued = await create(env)
    start = env.clock()
    assert env.manager.policy.touch_interval == 10
    writes = 0
    previous = await env.last_seen()
    for _ in range(60):  # one request per second for a minute
        env.clock.advance(1)
        active = await env.manager.load(issued.cookie_value)
        assert active is not None
        seen = await env.last_seen()
        if seen != previous:
            writes += 1
            assert seen - previous >= 10
            assert seen == env.clock()
            previous = seen
    assert writes == 6
    assert await env.last_seen() == start + 60


@pytest.mark.anyio
async def test_load_does_not_write_before_touch_interval(env: Env) -> None:
    issued = await create(env)
    created = await env.last_seen()
    env.clock.advance(9.9)
    active = await env.manager.load(issued.cookie_value)
    assert active is not None
    assert active.record.last_seen_at == created
    assert await env.last_seen() == created


@pytest.mark.anyio
async def test_load_returns_touched_record(env: Env) -> None:
    issued = await create(env)
    env.clock.advance(10)
    active = await env.manager.load(issued.cookie_value)
    assert active is not None
    assert active.record.last_seen_at == env.clock()


@pytest.mark.anyio
async def test_default_idle_timeout_touches_every_60_seconds(
    database_url: str, clock: FakeClock
) -> None:
    env = await make_env(database_url, clock, idle=1800, absolute=86_400)
    try:
        issued = await create(env)
        created = await env.last_seen()
        clock.advance(59)
        assert await env.manager.load(issued.cookie_value) is not None
        assert await env.last_seen() == created
        clock.advance(1)
        assert await env.manager.load(issued.cookie_value) is not None
        assert await env.last_seen() == created + 60
    finally:
        await env.store.close()


@pytest.mark.anyio
async def test_session_in_use_never_reaches_idle_timeout(env: Env) -> None:
    issued = await create(env)
    for _ in range(90):  # 900 s of use, a request every 10 s: far past the 100 s idle timeout
        env.clock.advance(10)
        assert await env.manager.load(issued.cookie_value) is not None


@pytest.mark.anyio
async def test_idle_expired_session_is_refused_and_deleted(env: Env) -> None:
    issued = await create(env)
    env.clock.advance(99)
    assert await env.rows()
    env.clock.advance(1)
    assert await env.manager.load(issued.cookie_value) is None
    assert await env.rows() == []


@pytest.mark.anyio
async def test_absolute_expired_session_is_refused_and_deleted_despite_activity(env: Env) -> None:
    issued = await create(env)
    for _ in range(99):
        env.clock.advance(10)
        assert await env.manager.load(issued.cookie_value) is not None
    env.clock.advance(10)  # 1000 s after creation
    assert await env.manager.load(issued.cookie_value) is None
    assert await env.rows() == []
    env.clock.advance(-500)  # even a clock going back does not bring it back
    assert await env.manager.load(issued.cookie_value) is None


@pytest.mark.anyio
async def test_destroyed_session_no_longer_loads(env: Env) -> None:
    issued = await create(env)
    assert await env.manager.destroy(issued.record)
    assert await env.manager.load(issued.cookie_value) is None
    assert await env.rows() == []
    assert not await env.manager.destroy(issued.record)


@pytest.mark.anyio
async def test_destroy_cookie_ends_the_named_session_only(env: Env) -> None:
    first = await create(env)
    second = await create(env)
    assert await env.manager.destroy_cookie(first.cookie_value)
    assert await env.manager.load(first.cookie_value) is None
    assert await env.manager.load(second.cookie_value) is not None


@pytest.mark.anyio
async def test_destroy_cookie_ignores_forged_or_missing_cookie(env: Env) -> None:
    issued = await create(env)
    session_id, _ = split_cookie(issued.cookie_value)
    assert not await env.manager.destroy_cookie(None)
    assert not await env.manager.destroy_cookie(CookieSigner([SECRET_C]).sign(session_id))
    assert await env.manager.load(issued.cookie_value) is not None


@pytest.mark.anyio
async def test_regenerated_session_keeps_handle_and_login_time_with_new_secrets(env: Env) -> None:
    issued = await create(env)
    env.clock.advance(30)
    fresh = env.manager.regenerated(issued.record)
    assert fresh.record.handle == issued.record.handle
    assert fresh.record.created_at == issued.record.created_at
    assert fresh.record.last_seen_at == env.clock()
    assert fresh.cookie_value != issued.cookie_value
    assert fresh.record.id_hash != issued.record.id_hash
    assert fresh.record.csrf_token != issued.record.csrf_token


@pytest.mark.anyio
async def test_long_user_agent_is_truncated(env: Env) -> None:
    issued, _ = await env.manager.create(env.user, ip=None, user_agent="x" * 5000, max_per_user=100)
    assert issued.record.user_agent == "x" * 512
    assert (await env.rows())[0]["user_agent"] == "x" * 512


# repr never shows a secret -------------------------------------------------


@pytest.mark.anyio
async def test_repr_of_sessions_hides_id_cookie_and_csrf_token(env: Env) -> None:
    issued = await create(env)
    session_id, signature = split_cookie(issued.cookie_value)
    active = await env.manager.load(issued.cookie_value)
    assert active is not None
    secrets = [session_id, signature, issued.cookie_value, issued.record.csrf_token]
    texts = [
        repr(issued),
        str(issued),
        repr(issued.record),
        repr(active),
        repr(active.record),
        repr(ActiveSession(replace(active.record), active.user)),
        repr(env.manager),
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert issued.record.handle in repr(issued)


def test_user_record_repr_hides_password_hash() -> None:
    user = UserRecord("id", "ada@example.com", "$argon2id$secret-hash", ("user",), 0.0)
    assert "$argon2id$secret-hash" not in repr(user)

"""Browser sessions in a real Redis (standalone and Cluster): what the key layout
promises (a TTL on every key, one slot per user, nothing that names a user), one
round trip per session check, durability across a restart, and failing closed
while Redis is down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import StoreUnavailable
from gatepass.passwords import PasswordHasher
from gatepass.sessions import IssuedSession
from gatepass.stores.base import SLOT_TAG_LENGTH
from gatepass.stores.redis_connection import MAX_CONNECTIONS, connect
from gatepass.stores.split import SplitStore
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD, FakeClock
from tests.servers import RedisServer, start_redis_cluster

IP = "203.0.113.9"
RESUME_DEADLINE = 10.0
KEY_GONE = -2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


@pytest.fixture
async def open_node(
    make_settings: Callable[..., Settings], clock: FakeClock, tmp_path: Any
) -> AsyncIterator[Callable[..., Any]]:
    nodes: list[Gatepass] = []

    async def start(redis_url: str, **env: str) -> Gatepass:
        env.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'gatepass.db'}")
        node = await Gatepass.open(
            make_settings(redis_url=redis_url, **env),
            clock=clock,
            hasher=PasswordHasher(**FAST_HASHER_PARAMS),
        )
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.close()


async def sign_in(gp: Gatepass, email: str = "ada@example.com") -> IssuedSession:
    user = await gp.accounts.verify_password_login(email, PASSWORD, IP)
    return await gp.accounts.start_web_session(
        user, presented_cookie=None, ip=IP, user_agent="Firefox"
    )


def keys_of(urls: list[str]) -> list[str]:
    """Every key on every node, through redis-cli (the test may scan; gatepass never does)."""
    found: list[str] = []
    for address in urls:
        host, port = address.rsplit(":", 1)
        out = subprocess.run(
            ["redis-cli", "-h", host, "-p", port, "--scan"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found += [line for line in out.splitlines() if line]
    return found


def cli(address: str, *args: str) -> str:
    host, port = address.rsplit(":", 1)
    return subprocess.run(
        ["redis-cli", "-h", host, "-p", port, "-c", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def addresses(url: str) -> list[str]:
    return url.split("://", 1)[1].split("/", 1)[0].split(",")


async def test_the_scaled_out_store_keeps_sessions_in_redis(
    any_redis_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(any_redis_url)
    assert isinstance(gp.store, SplitStore)
    await gp.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(gp)
    keys = keys_of(addresses(any_redis_url))
    assert any(issued.record.id_hash in key for key in keys)
    assert await gp.store.database.list_sessions(issued.record.user_id) == []


async def test_every_key_expires_and_none_names_the_user(
    any_redis_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(any_redis_url)
    # Letters that are no hex digits: a key's hashes cannot spell them by chance.
    email = "zoe.quill@example.org"
    await gp.accounts.register(email, PASSWORD)
    first = await sign_in(gp, email)
    await sign_in(gp, email)
    active = await gp.sessions.load(first.cookie_value)
    assert active is not None
    await gp.accounts.logout_all(Identity(active.user, "session", active.record))
    await sign_in(gp, email)
    keys = keys_of(addresses(any_redis_url))
    assert keys
    for key in keys:
        ttl = int(cli(addresses(any_redis_url)[0], "TTL", key))
        # -1 is a key without a TTL; -2 one that went between the scan and now.
        assert ttl > 0 or ttl == KEY_GONE, f"{key} has no TTL ({ttl})"
        assert "zoe" not in key
        assert "quill" not in key
        assert "example.org" not in key


async def test_one_users_keys_share_one_cluster_slot(
    redis_cluster_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(redis_cluster_url)
    for email in ("ada@example.com", "bob@example.com"):
        await gp.accounts.register(email, PASSWORD)
        for _ in range(3):
            await sign_in(gp, email)
    keys = keys_of(addresses(redis_cluster_url))
    first = addresses(redis_cluster_url)[0]
    by_user: dict[str, set[int]] = {}
    for key in keys:
        tag = key.split("{", 1)[1].split("}", 1)[0]
        if len(tag) != SLOT_TAG_LENGTH:
            continue  # the login counters' and revocations' keys: tagged on their own
        by_user.setdefault(tag, set()).add(int(cli(first, "CLUSTER", "KEYSLOT", key)))
    assert len(by_user) == 2
    assert all(len(slots) == 1 for slots in by_user.values())


async def test_a_session_check_is_one_redis_round_trip(
    redis_server: RedisServer, redis_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(redis_url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(gp)
    assert await gp.sessions.load(issued.cookie_value) is not None  # the user is cached now
    redis_server.command("CONFIG", "RESETSTAT")
    for _ in range(5):
        assert await gp.sessions.load(issued.cookie_value) is not None
    stats = redis_server.command("INFO", "commandstats")
    calls = {
        line.split(":")[0].removeprefix("cmdstat_"): int(line.split("calls=")[1].split(",")[0])
        for line in stats.splitlines()
        if line.startswith("cmdstat_")
    }
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    assert calls == {"get": 5}


async def test_a_session_ended_on_one_node_is_refused_on_another_at_once(
    any_redis_url: str, open_node: Callable[..., Any]
) -> None:
    node_a = await open_node(any_redis_url)
    node_b = await open_node(any_redis_url)
    await node_a.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(node_a)
    assert await node_b.sessions.load(issued.cookie_value) is not None
    await node_a.sessions.destroy(issued.record)
    assert await node_b.sessions.load(issued.cookie_value) is None


async def test_sessions_survive_a_redis_restart(
    own_redis: RedisServer, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(own_redis.url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(gp)
    own_redis.stop()
    own_redis.start()
    active = await gp.sessions.load(issued.cookie_value)
    assert active is not None
    assert active.record.handle == issued.record.handle


async def test_while_redis_is_down_no_session_is_accepted_and_service_resumes_alone(
    own_redis: RedisServer, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(own_redis.url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(gp)
    assert await gp.sessions.load(issued.cookie_value) is not None
    own_redis.kill()
    with pytest.raises(StoreUnavailable):
        await gp.sessions.load(issued.cookie_value)
    with pytest.raises(StoreUnavailable):
        await sign_in(gp)
    with pytest.raises(StoreUnavailable, match="redis"):
        await gp.store.ping()
    own_redis.start()
    deadline = time.monotonic() + RESUME_DEADLINE
    while True:
        try:
            assert await gp.sessions.load(issued.cookie_value) is not None
            break
        except StoreUnavailable:
            # The node resubscribes and catches up from the feed before it serves.
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    await gp.store.ping()


async def test_a_burst_beyond_the_connection_pool_waits_instead_of_failing(
    any_redis_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(any_redis_url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    issued = await sign_in(gp)
    burst = 3 * MAX_CONNECTIONS
    loaded = await asyncio.gather(*(gp.sessions.load(issued.cookie_value) for _ in range(burst)))
    assert all(active is not None for active in loaded)


def test_a_whole_redis_cluster_down_is_503_never_500(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """redis-py's cluster errors do not derive from RedisError: they are mapped too."""
    cluster = start_redis_cluster(tmp_path / "cluster")
    try:
        client = make_client(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'gatepass.db'}",
            redis_url=cluster.url,
        )
        body = {"email": "ada@example.com", "password": PASSWORD}
        assert client.post("/auth/register", json=body).status_code == 201
        login = client.post("/auth/login", json=body)
        assert login.status_code == 200
        assert client.get("/auth/me").status_code == 200  # the jar's session cookie
        for node in cluster.nodes:
            node.kill()
        for response in (
            client.post("/auth/login", json=body),
            client.get("/auth/me"),
            client.get("/healthz"),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    finally:
        for node in cluster.nodes:
            node.kill()


async def dump_all(url: str) -> dict[bytes, bytes]:
    """Every key's DUMP: what a replica that was behind would still hold."""
    client = connect(url)
    try:
        return {key: await client.dump(key) async for key in client.scan_iter()}
    finally:
        await client.aclose()


async def restore_all(url: str, snapshot: dict[bytes, bytes]) -> None:
    client = connect(url)
    try:
        for key, value in snapshot.items():
            await client.restore(key, 0, value, replace=True)
    finally:
        await client.aclose()


async def test_a_session_brought_back_by_a_redis_rollback_stays_dead(
    redis_url: str, open_node: Callable[..., Any]
) -> None:
    """A failover to a replica that was behind, or a restore from a backup, brings
    back what a password change deleted in Redis; the database's credential
    version still refuses the sessions that change ended."""
    gp = await open_node(redis_url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    stolen = await sign_in(gp)
    victim = await sign_in(gp)
    snapshot = await dump_all(redis_url)
    active = await gp.sessions.load(victim.cookie_value)
    assert active is not None
    renewed = await gp.accounts.change_password(
        Identity(active.user, "session", active.record), PASSWORD, "a brand new password 1"
    )
    assert await gp.sessions.load(stolen.cookie_value) is None
    await restore_all(redis_url, snapshot)
    assert await gp.sessions.load(stolen.cookie_value) is None
    assert await gp.sessions.load(victim.cookie_value) is None
    assert renewed is not None
    assert await gp.sessions.load(renewed.cookie_value) is not None
    listed = {r.handle for r in await gp.store.list_sessions(active.user.id)}
    assert not listed & {stolen.record.handle, victim.record.handle}


async def test_logout_all_holds_when_redis_lost_the_users_session_index(
    redis_url: str, open_node: Callable[..., Any]
) -> None:
    gp = await open_node(redis_url)
    await gp.accounts.register("ada@example.com", PASSWORD)
    other = await sign_in(gp)
    mine = await sign_in(gp)
    client = connect(redis_url)
    try:
        # What an eviction under memory pressure would do: the index goes.
        async for key in client.scan_iter(match="gatepass:*:idx"):
            await client.delete(key)
    finally:
        await client.aclose()
    active = await gp.sessions.load(mine.cookie_value)
    assert active is not None
    await gp.accounts.logout_all(Identity(active.user, "session", active.record))
    assert await gp.sessions.load(other.cookie_value) is None


async def test_a_session_value_rewritten_in_redis_grants_nothing(
    redis_url: str, open_node: Callable[..., Any]
) -> None:
    """Someone who can write to Redis but holds no key turns their own session into
    the victim's by swapping the user ID: refused."""
    gp = await open_node(redis_url)
    victim = await gp.accounts.register("victim@example.com", PASSWORD)
    await gp.accounts.register("eve@example.com", PASSWORD)
    eves = await sign_in(gp, "eve@example.com")
    client = connect(redis_url)
    try:
        (key,) = [k async for k in client.scan_iter(match=f"*:s:{eves.record.id_hash}")]
        fields = json.loads(await client.get(key))
        fields[1] = victim.id
        await client.set(key, json.dumps(fields), keepttl=True)
    finally:
        await client.aclose()
    assert await gp.sessions.load(eves.cookie_value) is None


def test_a_session_value_stored_before_sign_in_proofs_still_loads() -> None:
    """Values written by a node from before sessions kept ``auth_time``/``amr`` (9
    fields) are read as sessions with no proof (never fresh), not dropped; a forged
    proof added to such a value breaks its MAC."""
    from gatepass.stores.base import SessionRecord
    from gatepass.stores.redis_sessions import _decode, _mac, _signed_fields

    key = b"k" * 32
    record = SessionRecord("h" * 64, "handle", "user-1", "csrf", 1.0, 2.0, None, None)
    old_fields = _signed_fields(record, 3, with_proof=False)
    old = json.dumps(["handle", "user-1", "csrf", "1.0", "2.0", "", "", "3", _mac(key, old_fields)])
    stored = _decode("h" * 64, old, key)
    assert stored is not None
    assert (stored.record.auth_time, stored.record.amr, stored.credential_version) == (0.0, (), 3)
    forged = json.loads(old)
    forged[8:8] = ["9999999999.0", "pwd otp mfa"]
    assert _decode("h" * 64, json.dumps(forged), key) is None

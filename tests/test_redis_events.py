"""Revocations and session ends pushed to every node over Redis pub/sub, and the
node that loses Redis failing closed, then recovering by itself.

Two :class:`Gatepass` instances ("nodes") share one database and one real Redis
(standalone and Cluster). The injected clock is frozen, so a node's poll of the
revocation feed never reads (``sync_if_stale`` sees a fresh view) and its caches
never expire: whatever a node refuses right after the other's call returned, it
learned from the message. Waits are bounded by the 1 s contract and assert no
speed beyond it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import AuthenticationFailed, StoreUnavailable
from gatepass.events import EventBus
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app
from gatepass.stores.redis_connection import RedisClient, connect
from gatepass.stores.redis_events import RedisEventBus
from gatepass.stores.sql import SqlStore, users
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD, FakeClock
from tests.servers import RedisServer

#: The contract: a node refuses within this long of the other's call returning.
PUSH_BOUND = 1.0
#: How long a node may take to come back once Redis is back (backoff + catch-up).
RECOVERY_BOUND = 15.0

Node = Gatepass
OpenNode = Callable[..., Awaitable[Gatepass]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def feed_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The durable feed both nodes share: once SQLite, once PostgreSQL."""
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def open_node(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[OpenNode]:
    """Start nodes on one database; with ``redis`` each gets a bus on that Redis."""
    nodes: list[Gatepass] = []
    clients: list[RedisClient] = []

    async def start(database: str, redis: str | None) -> Gatepass:
        bus: EventBus | None = None
        if redis is not None:
            client = connect(redis)
            clients.append(client)
            bus = RedisEventBus(client)
        node = await Gatepass.open(
            make_settings(database_url=database),
            clock=clock,
            hasher=PasswordHasher(**FAST_HASHER_PARAMS),
            bus=bus,
        )
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.close()
    for client in clients:
        await client.aclose()


async def token_user(node: Node, email: str = "ada@example.com") -> tuple[Identity, str]:
    """Register ``email`` and sign in as a mobile client: the caller and its header."""
    user = await node.accounts.register(email, PASSWORD)
    return await token_login(node, user.email)


async def token_login(node: Node, email: str) -> tuple[Identity, str]:
    user = await node.store.get_user_by_email(email)
    assert user is not None
    pair = await node.accounts.start_token_family(user, ip=None, user_agent=None)
    header = f"Bearer {pair.access_token}"
    return await node.authenticator.authenticate(header, None), header


async def verdict(node: Node, header: str | None, cookie: str | None = None) -> str:
    """``accepted``, ``refused`` (401) or ``unavailable`` (fail closed, 503)."""
    try:
        await node.authenticator.authenticate(header, cookie)
    except AuthenticationFailed:
        return "refused"
    except StoreUnavailable:
        return "unavailable"
    return "accepted"


async def becomes(
    node: Node, header: str | None, expected: str, *, within: float, cookie: str | None = None
) -> str:
    """Poll ``node`` (real time, bounded) until it gives ``expected``; the last verdict."""
    deadline = time.monotonic() + within
    while True:
        seen = await verdict(node, header, cookie)
        if seen == expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.01)


def frozen_poll(node: Node) -> int:
    """How many feed entries ``node`` has read from the feed (not from the bus)."""
    return node.revocations.applied


# -- revocations reach the other node through the push ------------------------------


@pytest.mark.anyio
async def test_bearer_logout_on_one_node_is_refused_on_another_at_once(
    open_node: OpenNode, feed_url: str, any_redis_url: str
) -> None:
    a = await open_node(feed_url, any_redis_url)
    b = await open_node(feed_url, any_redis_url)
    identity, header = await token_user(a)
    assert await verdict(b, header) == "accepted"
    read_by_b = frozen_poll(b)

    await a.accounts.logout(identity)

    assert await becomes(b, header, "refused", within=PUSH_BOUND) == "refused"
    assert frozen_poll(b) == read_by_b, "B read the feed: this was the poll, not the push"


@pytest.mark.anyio
async def test_without_a_bus_the_frozen_poll_still_accepts_a_revoked_token(
    open_node: OpenNode, sqlite_url: str
) -> None:
    """The control for the tests above: with the clock frozen, only a push can tell B."""
    a = await open_node(sqlite_url, None)
    b = await open_node(sqlite_url, None)
    identity, header = await token_user(a)
    assert await verdict(b, header) == "accepted"

    await a.accounts.logout(identity)

    assert await verdict(b, header) == "accepted"


@pytest.mark.anyio
async def test_logout_all_on_one_node_is_refused_on_another_at_once(
    open_node: OpenNode, sqlite_url: str, any_redis_url: str
) -> None:
    a = await open_node(sqlite_url, any_redis_url)
    b = await open_node(sqlite_url, any_redis_url)
    identity, header = await token_user(a)
    _, other_header = await token_login(a, identity.user.email)
    assert await verdict(b, header) == "accepted"
    assert await verdict(b, other_header) == "accepted"

    await a.accounts.logout_all(identity)

    assert await becomes(b, other_header, "refused", within=PUSH_BOUND) == "refused"
    assert await verdict(b, header) == "refused"


@pytest.mark.anyio
async def test_family_ended_on_one_node_is_refused_on_another_at_once(
    open_node: OpenNode, sqlite_url: str, any_redis_url: str
) -> None:
    a = await open_node(sqlite_url, any_redis_url)
    b = await open_node(sqlite_url, any_redis_url)
    identity, _ = await token_user(a)
    victim, victim_header = await token_login(a, identity.user.email)
    assert await verdict(b, victim_header) == "accepted"
    assert victim.family_id is not None

    await a.accounts.end_session(identity, victim.family_id)

    assert await becomes(b, victim_header, "refused", within=PUSH_BOUND) == "refused"


@pytest.mark.anyio
async def test_refresh_reuse_on_one_node_kills_the_family_on_another_at_once(
    open_node: OpenNode, sqlite_url: str, redis_url: str
) -> None:
    a = await open_node(sqlite_url, redis_url)
    b = await open_node(sqlite_url, redis_url)
    user = await a.accounts.register("ada@example.com", PASSWORD)
    first = await a.accounts.start_token_family(user, ip=None, user_agent=None)
    second = await a.refresh_tokens.rotate(first.refresh_token)
    header = f"Bearer {second.access_token}"
    assert await verdict(b, header) == "accepted"

    with pytest.raises(AuthenticationFailed):
        await a.refresh_tokens.rotate(first.refresh_token)  # the thief's replay

    assert await becomes(b, header, "refused", within=PUSH_BOUND) == "refused"


# -- user and session caches ---------------------------------------------------------


@pytest.mark.anyio
async def test_user_changed_on_one_node_drops_the_cached_user_on_another(
    open_node: OpenNode, sqlite_url: str, any_redis_url: str
) -> None:
    """A role taken away must not linger in another node's 30 s user cache."""
    a = await open_node(sqlite_url, any_redis_url)
    b = await open_node(sqlite_url, any_redis_url)
    identity, header = await token_user(a)
    store = a.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(users).where(users.c.id == identity.user.id).values(roles="user admin")
        )
    before = await b.authenticator.authenticate(header, None)
    async with store.engine.begin() as conn:
        await conn.execute(update(users).where(users.c.id == identity.user.id).values(roles="user"))
    cached = await b.authenticator.authenticate(header, None)
    assert cached.user.roles == before.user.roles  # B serves its cached record

    a.bearer.forget_user(identity.user.id)

    deadline = time.monotonic() + PUSH_BOUND
    while (await b.authenticator.authenticate(header, None)).user.roles == before.user.roles:
        assert time.monotonic() < deadline, "B still serves the user it cached"
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_cookie_logout_on_one_node_ends_the_cached_session_on_another(
    open_node: OpenNode, sqlite_url: str, any_redis_url: str
) -> None:
    a = await open_node(sqlite_url, any_redis_url)
    b = await open_node(sqlite_url, any_redis_url)
    user = await a.accounts.register("ada@example.com", PASSWORD)
    issued = await a.accounts.start_web_session(
        user, presented_cookie=None, ip=None, user_agent=None
    )
    cookie = issued.cookie_value
    assert await verdict(b, None, cookie) == "accepted"  # cached on B (clock frozen)
    identity = await a.authenticator.authenticate(None, cookie)

    await a.accounts.logout(identity)

    assert await becomes(b, None, "refused", within=PUSH_BOUND, cookie=cookie) == "refused"


# -- fast-path keys -------------------------------------------------------------------


async def fast_path_keys(client: RedisClient) -> dict[str, int]:
    """Every ``gatepass:revoked:*`` key and its TTL (every node of a Cluster)."""
    found: dict[str, int] = {}
    async for key in client.scan_iter(match="gatepass:revoked:*"):
        found[key.decode()] = await client.ttl(key)
    return found


@pytest.mark.anyio
async def test_every_fast_path_key_has_a_ttl_and_no_command_crosses_slots(
    open_node: OpenNode,
    sqlite_url: str,
    any_redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gatepass.events")
    a = await open_node(sqlite_url, any_redis_url)
    identity, _ = await token_user(a)
    other, _ = await token_login(a, identity.user.email)
    third, _ = await token_login(a, identity.user.email)
    assert third.family_id is not None

    await a.accounts.logout(identity)  # jti + family
    await a.accounts.end_session(other, third.family_id)  # family
    await a.accounts.logout_all(other)  # epoch + families

    bus = a.bus
    assert isinstance(bus, RedisEventBus)
    client = connect(any_redis_url)
    try:
        keys = await fast_path_keys(client)
    finally:
        await client.aclose()
    retention = a.settings.access_token_ttl + a.settings.leeway
    assert identity.token_id is not None
    assert identity.family_id is not None
    assert bus.key("jti", identity.token_id) in keys
    assert bus.key("family", identity.family_id) in keys
    assert bus.key("family", third.family_id) in keys
    assert bus.key("epoch", identity.user.id) in keys
    assert all(0 < ttl <= retention for ttl in keys.values()), keys
    assert not [r for r in caplog.records if "not announced" in r.getMessage()]


# -- fail closed, recover alone -------------------------------------------------------


async def healthz(node: Node) -> httpx.Response:
    app = create_app(gatepass=node)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        return await http.get("/healthz")


@pytest.mark.anyio
async def test_killed_redis_stops_a_cached_token_within_a_second_and_recovery_catches_up(
    open_node: OpenNode, sqlite_url: str, own_redis: RedisServer
) -> None:
    a = await open_node(sqlite_url, own_redis.url)
    b = await open_node(sqlite_url, own_redis.url)
    identity, header = await token_user(a)
    revoked_meanwhile, revoked_header = await token_login(a, identity.user.email)
    web = await a.accounts.start_web_session(
        identity.user, presented_cookie=None, ip=None, user_agent=None
    )
    assert await verdict(b, header) == "accepted"
    assert await verdict(b, revoked_header) == "accepted"
    assert await verdict(b, None, web.cookie_value) == "accepted"
    assert (await healthz(b)).status_code == 200

    own_redis.kill()

    # A token and a session B accepted (and cached) a moment ago fail closed.
    assert await becomes(b, header, "unavailable", within=PUSH_BOUND) == "unavailable"
    assert await verdict(b, None, web.cookie_value) == "unavailable"
    down = await healthz(b)
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert "redis" in down.json()["detail"]
    # Revoked while B could hear nothing: only the durable feed has it.
    await a.accounts.logout(revoked_meanwhile)

    own_redis.start()

    assert await becomes(b, header, "accepted", within=RECOVERY_BOUND) == "accepted"
    assert await verdict(b, revoked_header) == "refused"  # the catch-up read it
    assert await verdict(b, None, web.cookie_value) == "accepted"
    assert (await healthz(b)).status_code == 200


@pytest.mark.anyio
async def test_silent_redis_stops_bearer_auth_within_a_second(
    open_node: OpenNode, sqlite_url: str, own_redis: RedisServer
) -> None:
    """A connection that stays open but gets no answer (a paused or half-dead
    server) is caught by the heartbeat, not only a connection that resets."""
    b = await open_node(sqlite_url, own_redis.url)
    _, header = await token_user(b)
    assert await verdict(b, header) == "accepted"

    own_redis.command("CLIENT", "PAUSE", "3000", "ALL")

    assert await becomes(b, header, "unavailable", within=PUSH_BOUND + 0.5) == "unavailable"
    assert await becomes(b, header, "accepted", within=RECOVERY_BOUND) == "accepted"


@pytest.mark.anyio
async def test_forged_message_on_the_channel_is_ignored(
    open_node: OpenNode, sqlite_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = await open_node(sqlite_url, redis_url)
    _, header = await token_user(b)
    client = connect(redis_url)
    try:
        for junk in (b"not json", b'{"v": 1, "type": "revoked", "events": [["x"]]}', b"[]"):
            await client.publish("gatepass:events", junk)
        await client.publish("gatepass:events", b'{"v":1,"node":"x","type":"user","user_id":1}')
    finally:
        await client.aclose()

    deadline = time.monotonic() + PUSH_BOUND
    while len([r for r in caplog.records if "malformed" in r.getMessage()]) < 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert await verdict(b, header) == "accepted"
    assert "not json" not in caplog.text


@pytest.mark.anyio
async def test_a_message_nested_past_the_parsers_depth_does_not_take_the_bus_down(
    open_node: OpenNode, sqlite_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = await open_node(sqlite_url, redis_url)
    _, header = await token_user(b)
    client = connect(redis_url)
    try:
        await client.publish("gatepass:events", b"[" * 200_000)
        await client.publish("gatepass:events", b" " * (2 << 20))
    finally:
        await client.aclose()
    deadline = time.monotonic() + PUSH_BOUND
    while len([r for r in caplog.records if "malformed" in r.getMessage()]) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    b.bus.check_live()
    assert await verdict(b, header) == "accepted"


@pytest.mark.anyio
async def test_a_forged_announcement_does_not_silence_the_real_revocation_with_its_id(
    open_node: OpenNode, sqlite_url: str, redis_url: str, clock: FakeClock
) -> None:
    """Feed IDs come in order, so a forger can guess the next one. Node A must still
    announce its real revocation under that ID, and a future-dated forgery must not
    linger in any node's memory."""
    a = await open_node(sqlite_url, redis_url)
    b = await open_node(sqlite_url, redis_url)
    identity, header = await token_user(a)
    assert await verdict(b, header) == "accepted"
    next_id = a.revocations.floor + a.revocations.pending_ids + 1
    forged = (
        '{"v":1,"node":"forger","type":"revoked","events":'
        # A Bearer logout writes two rows (its jti, its family): forge both IDs.
        f'[[{next_id},"jti","not-a-real-jti",0,{clock()}],'
        f'[{next_id + 1},"jti","not-a-real-jti-either",0,{clock()}],'
        f'[{next_id + 2},"jti","from-the-future",0,{clock() + 86_400}]]}}'
    )
    client = connect(redis_url)
    try:
        await client.publish("gatepass:events", forged.encode())
    finally:
        await client.aclose()
    deadline = time.monotonic() + PUSH_BOUND
    while not a.revocations.jti_revoked("not-a-real-jti"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert not a.revocations.jti_revoked("from-the-future")
    await a.accounts.logout(identity)  # the real revocation takes ID next_id
    deadline = time.monotonic() + PUSH_BOUND
    while await verdict(b, header) == "accepted":
        assert time.monotonic() < deadline, "B never heard of the real revocation"
        await asyncio.sleep(0.01)

"""Throttle counters in a shared Redis: what many nodes (or ``--workers N``) see,
what is left in Redis, and what an outage does to logins.

Every test runs on real servers: a standalone Redis and a real 3-primary Redis
Cluster (``any_redis_url``), or a Redis of the test's own that it kills.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import RateLimited, StoreUnavailable
from gatepass.passwords import PasswordHasher
from gatepass.ratelimit import CredentialGuard, LoginThrottle, ip_key, throttle_counters
from gatepass.server.app import create_app
from gatepass.stores.redis_connection import RedisClient, connect
from gatepass.stores.redis_counters import PENDING_SECONDS, RedisCounters
from tests.conftest import BASE_URL, PASSWORD, FakeClock
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio

EMAIL = "ada@example.com"
IP = "203.0.113.77"
IPV6 = "2001:db8:42:7::1"
KEY_SECRET = b"counter names key shared by the nodes"
PROBLEM = "application/problem+json"


@pytest.fixture
async def clients(any_redis_url: str) -> AsyncIterator[list[RedisClient]]:
    """Two clients of one Redis: the connections of two nodes."""
    made = [connect(any_redis_url), connect(any_redis_url)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def node(
    client: RedisClient, clock: FakeClock, *, max_failures: int = 3, ip_limit: int = 1000
) -> LoginThrottle:
    return LoginThrottle(
        max_failures=max_failures,
        lockout=60,
        ip_limit=ip_limit,
        clock=clock,
        counters=throttle_counters(client, key_secret=KEY_SECRET),
    )


async def refused(limiter: LoginThrottle, account: str, ip: str | None, **kw: str) -> int:
    with pytest.raises(RateLimited) as info:
        await limiter.check(account, ip, kw.get("device"))
    return info.value.retry_after


async def all_keys(client: RedisClient) -> list[bytes]:
    return [key async for key in client.scan_iter(match="*")]


# many nodes ------------------------------------------------------------------------


async def test_spreading_guesses_over_nodes_is_refused(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    node_a, node_b = node(clients[0], clock), node(clients[1], clock)
    for limiter in (node_a, node_b, node_a):
        await limiter.check(EMAIL, None)
        await limiter.record_failure(EMAIL)
    assert await refused(node_b, EMAIL, None) == 60
    assert await refused(node_a, EMAIL, None) == 60


async def test_parallel_guesses_on_two_nodes_cannot_slip_past_the_lockout(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    node_a, node_b = node(clients[0], clock), node(clients[1], clock)
    await node_a.check(EMAIL, None)
    await node_b.check(EMAIL, None)
    await node_a.check(EMAIL, None)
    assert await refused(node_b, EMAIL, None) == 1  # three in flight on two nodes


async def test_spreading_one_ip_over_nodes_is_limited(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    node_a, node_b = node(clients[0], clock, ip_limit=4), node(clients[1], clock, ip_limit=4)
    for n in range(4):
        await (node_a, node_b)[n % 2].check(f"user{n}@example.com", IP)
    assert await refused(node_a, "next@example.com", IP) >= 299
    assert await refused(node_b, "next@example.com", IP) >= 299


async def test_ipv6_rotation_over_nodes_is_limited_per_64(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    node_a, node_b = node(clients[0], clock, ip_limit=2), node(clients[1], clock, ip_limit=2)
    await node_a.check("a@example.com", "2001:db8:42:7::1")
    await node_b.check("b@example.com", "2001:db8:42:7:dead:beef:0:1")
    await refused(node_a, "c@example.com", "2001:db8:42:7:ffff:ffff:ffff:ffff")
    await node_b.check("c@example.com", "2001:db8:42:8::1")  # another /64


async def test_lockout_made_on_other_nodes_does_not_lock_out_a_trusted_device(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    node_a, node_b = node(clients[0], clock), node(clients[1], clock)
    for _ in range(3):
        await node_a.check(EMAIL, IP)
        await node_a.record_failure(EMAIL)
    assert await refused(node_b, EMAIL, IP) == 60
    await node_b.check(EMAIL, IP, "owners-device")
    await node_b.record_success(EMAIL, "owners-device")
    assert await refused(node_a, EMAIL, IP) == 60  # the guessers stay locked


async def test_attempts_left_in_flight_by_a_dead_node_stop_counting(
    any_redis_url: str, clients: list[RedisClient], clock: FakeClock
) -> None:
    dying = connect(any_redis_url)
    node_a = node(dying, clock)
    for _ in range(3):
        await node_a.check(EMAIL, None)  # never settled: the node dies here
    await dying.aclose()
    node_b = node(clients[1], clock)
    assert await refused(node_b, EMAIL, None) == 1
    clock.advance(PENDING_SECONDS)
    await node_b.check(EMAIL, None)


async def test_node_with_another_key_secret_counts_apart(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    """The secret names the keys: nodes must share it (documented), and one that
    does not cannot read or disturb the others' counts."""
    node_a = node(clients[0], clock)
    other = LoginThrottle(
        max_failures=3,
        lockout=60,
        ip_limit=1000,
        clock=clock,
        counters=RedisCounters(clients[1], key_secret=b"another secret"),
    )
    for _ in range(3):
        await node_a.check(EMAIL, None)
        await node_a.record_failure(EMAIL)
    await other.check(EMAIL, None)


# what is left in Redis ---------------------------------------------------------------


async def _every_step(client: RedisClient, clock: FakeClock) -> None:
    limiter = node(client, clock, ip_limit=50)
    wrong = CredentialGuard(
        max_failures=3,
        retention=86_400,
        clock=clock,
        counters=RedisCounters(client, key_secret=KEY_SECRET),
    )
    for _ in range(3):
        await limiter.check(EMAIL, IP)
        await limiter.record_failure(EMAIL)  # the third locks
    await limiter.check(EMAIL, IPV6, "a-device")
    await limiter.record_failure(EMAIL, "a-device")
    await limiter.check("bob@example.com", IPV6)
    await limiter.abandon("bob@example.com")
    await limiter.check("carol@example.com", IP)  # left in flight
    await limiter.check("dave@example.com", IP)
    await limiter.record_success("dave@example.com")
    await wrong.check("session:h1")
    await wrong.record_failure("session:h1")
    await wrong.check("session:h2")  # left in flight


async def test_every_key_has_a_ttl(clients: list[RedisClient], clock: FakeClock) -> None:
    await _every_step(clients[0], clock)
    keys = await all_keys(clients[0])
    assert len(keys) >= 6
    for key in keys:
        ttl = await clients[0].pttl(key)
        assert ttl > 0, key
        # No longer than the longest-lived count (the 1-day credential retention).
        assert ttl <= (86_400 + 60) * 1000, key


async def test_a_redis_dump_lists_no_email_or_client_address(
    clients: list[RedisClient], clock: FakeClock
) -> None:
    await _every_step(clients[0], clock)
    names = b" ".join(await all_keys(clients[0])).decode()
    assert names
    readable = [EMAIL, "bob@example.com", "session:h1", IP, ip_key(IPV6), "2001:db8", "a-device"]
    # A plain hash of an address would be a lookup away (all IPv4 addresses can be tried).
    for subject in list(readable):
        for form in (subject, f"account:{subject}", f"device:{subject}"):
            digest = hashlib.sha256(form.encode())
            readable += [digest.hexdigest(), digest.hexdigest()[:32]]
    for text in readable:
        assert text not in names, text


async def test_every_step_runs_on_a_cluster_without_crossslot(
    redis_cluster_url: str, clock: FakeClock
) -> None:
    client = connect(redis_cluster_url)
    try:
        await _every_step(client, clock)  # a CROSSSLOT would raise StoreUnavailable
        keys = await all_keys(client)
        slots = {await client.cluster_keyslot(key) for key in keys}
        by_tag: dict[bytes, set[int]] = {}
        for key in keys:
            by_tag.setdefault(key.split(b"}")[0], set()).add(await client.cluster_keyslot(key))
    finally:
        await client.aclose()
    assert len(slots) > 1  # the counters spread over the cluster
    assert all(len(tag_slots) == 1 for tag_slots in by_tag.values())


# outage --------------------------------------------------------------------------


async def test_attempts_during_a_redis_outage_are_refused_then_served_again(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    client = connect(own_redis.url)
    try:
        limiter = node(client, clock)
        wrong = CredentialGuard(
            max_failures=3,
            retention=60,
            clock=clock,
            counters=RedisCounters(client, key_secret=KEY_SECRET),
        )
        await limiter.check(EMAIL, IP)
        await limiter.record_failure(EMAIL)
        own_redis.kill()
        with pytest.raises(StoreUnavailable) as caught:
            await limiter.check(EMAIL, IP)
        assert EMAIL not in str(caught.value)
        assert IP not in str(caught.value)
        await limiter.abandon(EMAIL)  # settling during the outage does not raise
        with pytest.raises(StoreUnavailable):
            await wrong.check("session:h1")
        own_redis.start()  # its scripts are gone: they are loaded again
        await limiter.check(EMAIL, IP)
        await limiter.record_failure(EMAIL)
        await limiter.check(EMAIL, IP)
        assert await limiter.record_failure(EMAIL)  # the count survived the restart
        await wrong.check("session:h1")
    finally:
        await client.aclose()


@pytest.fixture
async def redis_node(
    make_settings: Callable[..., Settings],
    fast_hasher: PasswordHasher,
    clock: FakeClock,
) -> AsyncIterator[Callable[[str], Awaitable[Gatepass]]]:
    """Open nodes of one deployment: one SQLite database, counters in a Redis."""
    opened: list[tuple[Gatepass, RedisClient]] = []

    async def open_node(url: str) -> Gatepass:
        client = connect(url)
        counters = throttle_counters(client, key_secret=KEY_SECRET)
        gp = await Gatepass.open(
            make_settings(login_max_failures="3"),
            clock=clock,
            hasher=fast_hasher,
            counters=counters,
        )
        opened.append((gp, client))
        return gp

    yield open_node
    for gp, client in opened:
        await gp.close()
        await client.aclose()


def http(gp: Gatepass) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(gatepass=gp), client=("192.0.2.10", 1234))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


async def _login(client: httpx.AsyncClient, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"email": EMAIL, "password": password})


async def test_guessing_over_http_on_two_nodes_locks_the_account_on_both(
    redis_node: Callable[[str], Awaitable[Gatepass]], any_redis_url: str
) -> None:
    gp_a = await redis_node(any_redis_url)
    gp_b = await redis_node(any_redis_url)
    async with http(gp_a) as node_a, http(gp_b) as node_b:
        assert (
            await node_a.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        ).status_code == 201
        statuses = [(await _login(c, "wrong guess")).status_code for c in (node_a, node_b, node_a)]
        assert statuses == [401, 401, 401]
        locked = await _login(node_b, PASSWORD)
    assert locked.status_code == 429
    assert locked.headers["retry-after"]


async def test_login_during_a_redis_outage_is_503_then_served_when_it_is_back(
    redis_node: Callable[[str], Awaitable[Gatepass]], own_redis: RedisServer
) -> None:
    gp = await redis_node(own_redis.url)
    async with http(gp) as client:
        assert (
            await client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        ).status_code == 201
        own_redis.kill()
        response = await _login(client, PASSWORD)
        assert response.status_code == 503
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["detail"] == "A store is unreachable. Try again later."
        assert response.headers["retry-after"]
        assert "set-cookie" not in response.headers
        own_redis.start()
        assert (await _login(client, PASSWORD)).status_code == 200

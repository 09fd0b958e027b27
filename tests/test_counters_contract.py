"""The throttle's contract, once per counter store: process memory, a standalone
Redis and a real Redis Cluster (the policy of gatepass.ratelimit over each).

Time is a fake clock: the stores count by the instant they are given, so lockouts
and windows are crossed without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gatepass.errors import RateLimited
from gatepass.ratelimit import IP_WINDOW_SECONDS, CredentialGuard, LoginThrottle
from gatepass.stores.base import CounterStore
from gatepass.stores.memory_counters import MemoryCounters
from gatepass.stores.redis_connection import connect
from gatepass.stores.redis_counters import RedisCounters
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

ACCOUNT = "ada@example.com"
IP = "192.0.2.1"
DEVICE = "device-of-ada"
KEY_SECRET = b"counter names key shared by the nodes"


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """``None`` for process memory, else the URL of a Redis emptied for this test."""
    if request.param == "memory":
        return None
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def counters(backend: str | None) -> AsyncIterator[CounterStore]:
    if backend is None:
        yield MemoryCounters()
        return
    client = connect(backend)
    try:
        yield RedisCounters(client, key_secret=KEY_SECRET)
    finally:
        await client.aclose()


def throttle(
    counters: CounterStore,
    clock: FakeClock,
    *,
    max_failures: int = 3,
    lockout: float = 60,
    ip_limit: int = 1000,
) -> LoginThrottle:
    return LoginThrottle(
        max_failures=max_failures,
        lockout=lockout,
        ip_limit=ip_limit,
        clock=clock,
        counters=counters,
    )


async def retry_after(
    limiter: LoginThrottle,
    account: str = ACCOUNT,
    ip: str | None = IP,
    device: str | None = None,
) -> int:
    with pytest.raises(RateLimited) as info:
        await limiter.check(account, ip, device)
    assert info.value.status == 429
    return info.value.retry_after


async def fail(limiter: LoginThrottle, times: int, account: str = ACCOUNT) -> list[bool]:
    """``times`` attempts, each let through and settled as a failure."""
    locked = []
    for _ in range(times):
        await limiter.check(account, None)
        locked.append(await limiter.record_failure(account))
    return locked


# account lockout -----------------------------------------------------------


async def test_attempts_allowed_below_max_failures(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    assert await fail(limiter, 2) == [False, False]
    await limiter.check(ACCOUNT, IP)


async def test_guessing_past_max_failures_locks_the_account(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    assert await fail(limiter, 1) == [False]
    clock.advance(10)
    assert await fail(limiter, 1) == [False]
    clock.advance(10)
    assert await fail(limiter, 1) == [True]
    assert await retry_after(limiter) == 60


async def test_lockout_refuses_every_attempt_with_retry_after_counting_down(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    # ``check`` runs before the password is looked at: a correct password is refused too.
    assert await retry_after(limiter) == 60
    clock.advance(20)
    assert await retry_after(limiter) == 40
    clock.advance(39.5)
    assert await retry_after(limiter) == 1
    clock.advance(0.4)
    assert await retry_after(limiter) == 1


async def test_lockout_applies_from_any_ip_and_without_ip(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    for ip in ("192.0.2.1", "198.51.100.7", "2001:db8::1", None):
        assert await retry_after(limiter, ip=ip) == 60


async def test_account_unlocked_after_lockout_and_relocked_by_more_guesses(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    clock.advance(60)
    assert await fail(limiter, 1) == [False]  # one failure after unlock does not relock
    await limiter.check(ACCOUNT, IP)
    await limiter.abandon(ACCOUNT)
    assert await fail(limiter, 2) == [False, True]
    assert await retry_after(limiter) == 60


async def test_failures_outside_window_do_not_count(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 1)
    clock.advance(30)
    await fail(limiter, 1)
    clock.advance(31)  # the first failure is now more than 60 s old
    assert await fail(limiter, 1) == [False]
    await limiter.check(ACCOUNT, IP)


async def test_success_resets_failure_count(counters: CounterStore, clock: FakeClock) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 2)
    await limiter.check(ACCOUNT, IP)
    await limiter.record_success(ACCOUNT)
    assert await fail(limiter, 2) == [False, False]
    await limiter.check(ACCOUNT, IP)


async def test_clear_forgets_the_untrusted_clients_counts(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    await limiter.clear(ACCOUNT)
    await limiter.check(ACCOUNT, IP)


async def test_lockout_is_per_account(counters: CounterStore, clock: FakeClock) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    await limiter.check("bob@example.com", IP)
    assert await retry_after(limiter) == 60


async def test_retry_after_is_whole_seconds_rounded_up(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, lockout=2.5)
    await fail(limiter, 3)
    assert await retry_after(limiter) == 3
    clock.advance(2.49)
    assert await retry_after(limiter) == 1
    clock.advance(0.01)
    await limiter.check(ACCOUNT, IP)


async def test_parallel_guesses_cannot_slip_past_the_lockout(
    counters: CounterStore, clock: FakeClock
) -> None:
    """Parallel guesses all pass check() before any fails: they must not exceed the limit."""
    limiter = throttle(counters, clock, max_failures=3)
    for _ in range(3):
        await limiter.check(ACCOUNT, IP)
    assert await retry_after(limiter) == 1
    assert [await limiter.record_failure(ACCOUNT) for _ in range(3)] == [False, False, True]
    assert await retry_after(limiter) == 60  # now a real lockout


async def test_abandoned_attempt_frees_its_place(counters: CounterStore, clock: FakeClock) -> None:
    limiter = throttle(counters, clock, max_failures=2)
    await limiter.check(ACCOUNT, IP)
    await limiter.check(ACCOUNT, IP)
    await retry_after(limiter)
    await limiter.abandon(ACCOUNT)
    await limiter.check(ACCOUNT, IP)


# trusted devices -------------------------------------------------------------


async def test_lockout_made_by_guessing_does_not_lock_out_a_trusted_device(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    await fail(limiter, 3)
    assert await retry_after(limiter) == 60
    await limiter.check(ACCOUNT, IP, DEVICE)
    await limiter.record_success(ACCOUNT, DEVICE)
    assert await retry_after(limiter) == 60  # the guessers stay locked


async def test_guessing_from_a_trusted_device_locks_only_that_device(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock)
    for _ in range(3):
        await limiter.check(ACCOUNT, IP, DEVICE)
        await limiter.record_failure(ACCOUNT, DEVICE)
    assert await retry_after(limiter, device=DEVICE) == 60
    await limiter.check(ACCOUNT, IP)
    await limiter.check(ACCOUNT, IP, "another-device")


# per-IP limit --------------------------------------------------------------


async def test_per_ip_limit_refuses_with_retry_after(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, ip_limit=5)
    for n in range(5):
        await limiter.check(f"user{n}@example.com", IP)
        clock.advance(1)
    # five attempts at t=0..4, now t=5: the oldest leaves the window at t=300
    assert await retry_after(limiter, account="other@example.com") == IP_WINDOW_SECONDS - 5
    clock.advance(100)
    assert await retry_after(limiter, account="other@example.com") == IP_WINDOW_SECONDS - 105


async def test_per_ip_limit_frees_slots_as_window_slides(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, ip_limit=2, max_failures=100)
    await limiter.check(ACCOUNT, IP)
    clock.advance(10)
    await limiter.check(ACCOUNT, IP)
    clock.advance(289)
    await retry_after(limiter)
    clock.advance(1)  # the first attempt is 300 s old
    await limiter.check(ACCOUNT, IP)
    await retry_after(limiter)


async def test_per_ip_limit_counts_successful_attempts_too(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, ip_limit=3)
    for _ in range(3):
        await limiter.check(ACCOUNT, IP)
        await limiter.record_success(ACCOUNT)
    await retry_after(limiter)


async def test_refused_attempts_do_not_extend_ip_block(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, ip_limit=1)
    await limiter.check(ACCOUNT, IP)
    for _ in range(50):
        clock.advance(1)
        await retry_after(limiter)
    clock.advance(250)
    await limiter.check(ACCOUNT, IP)


async def test_per_ip_limit_is_per_address(counters: CounterStore, clock: FakeClock) -> None:
    limiter = throttle(counters, clock, ip_limit=1)
    await limiter.check(ACCOUNT, "192.0.2.1")
    await limiter.check(ACCOUNT, "192.0.2.2")
    await retry_after(limiter, ip="192.0.2.1")


async def test_no_ip_limit_without_client_address(counters: CounterStore, clock: FakeClock) -> None:
    limiter = throttle(counters, clock, ip_limit=1)
    for _ in range(10):
        await limiter.check(ACCOUNT, None)
        await limiter.record_success(ACCOUNT)


async def test_ipv6_rotation_within_one_64_is_limited(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, max_failures=100, ip_limit=3)
    for n in range(3):
        await limiter.check(f"user{n}@example.com", f"2001:db8:1:2::{n + 1:x}")
    await retry_after(limiter, account="next@example.com", ip="2001:db8:1:2:ffff:ffff:ffff:ffff")
    await limiter.check("next@example.com", "2001:db8:1:3::1")  # another /64


async def test_ipv4_mapped_address_counts_as_its_ipv4_address(
    counters: CounterStore, clock: FakeClock
) -> None:
    limiter = throttle(counters, clock, ip_limit=1)
    await limiter.check(ACCOUNT, "192.0.2.9")
    await retry_after(limiter, ip="::ffff:192.0.2.9")


# wrong current passwords -------------------------------------------------------


def guard(counters: CounterStore, clock: FakeClock, max_failures: int = 3) -> CredentialGuard:
    return CredentialGuard(
        max_failures=max_failures, retention=86_400, clock=clock, counters=counters
    )


async def test_wrong_current_passwords_end_the_credential_at_the_limit(
    counters: CounterStore, clock: FakeClock
) -> None:
    wrong = guard(counters, clock)
    ended = []
    for _ in range(3):
        await wrong.check("session:a")
        ended.append(await wrong.record_failure("session:a"))
    assert ended == [False, False, True]
    await wrong.check("session:a")  # the count went with the credential


async def test_parallel_current_password_guesses_cannot_exceed_the_limit(
    counters: CounterStore, clock: FakeClock
) -> None:
    wrong = guard(counters, clock, max_failures=2)
    await wrong.check("session:a")
    await wrong.check("session:a")
    with pytest.raises(RateLimited):
        await wrong.check("session:a")
    await wrong.check("session:other")  # only the guessing credential is held back
    await wrong.abandon("session:a")
    await wrong.check("session:a")


async def test_right_current_password_forgives_the_credentials_failures(
    counters: CounterStore, clock: FakeClock
) -> None:
    wrong = guard(counters, clock)
    for _ in range(2):
        await wrong.check("session:a")
        await wrong.record_failure("session:a")
    await wrong.check("session:a")
    await wrong.record_success("session:a")
    for _ in range(2):
        await wrong.check("session:a")
        assert not await wrong.record_failure("session:a")

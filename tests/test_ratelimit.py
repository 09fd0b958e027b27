"""gatepass.ratelimit in process memory: construction, and bounded tables.

What the throttle counts is tested once per counter store in
tests/test_counters_contract.py.
"""

from __future__ import annotations

import pytest

from gatepass.errors import RateLimited
from gatepass.ratelimit import LoginThrottle, ip_key
from gatepass.stores.memory_counters import MemoryCounters
from tests.conftest import FakeClock
from tests.test_counters_contract import throttle

pytestmark = pytest.mark.anyio

ACCOUNT = "ada@example.com"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0, "lockout": 60, "ip_limit": 5},
        {"max_failures": 3, "lockout": 0, "ip_limit": 5},
        {"max_failures": 3, "lockout": 60, "ip_limit": 0},
        {"max_failures": 3, "lockout": 60, "ip_limit": 5, "ip_window": 0},
    ],
)
def test_non_positive_limits_rejected(clock: FakeClock, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        LoginThrottle(clock=clock, **kwargs)  # type: ignore[arg-type]


def test_ip_key_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert ip_key("2001:db8:1:2::1") == ip_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert ip_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert ip_key("testclient") == "testclient"


async def test_memory_stays_bounded_under_many_accounts_and_ips(clock: FakeClock) -> None:
    counters = MemoryCounters(max_keys=10)
    limiter = throttle(counters, clock, ip_limit=5)
    for n in range(1000):
        await limiter.check(f"user{n}@example.com", f"10.0.{n // 256}.{n % 256}")
        await limiter.record_failure(f"user{n}@example.com")
        assert len(counters._accounts) <= 10
        assert all(len(table) <= 10 for table in counters._windows.values())


async def test_a_short_window_filling_up_does_not_forget_a_longer_windows_count(
    clock: FakeClock,
) -> None:
    """Sign-ups count per hour, logins per 300 s: flooding the short window with new
    keys must not drop the hourly count of an address that is still over its limit."""
    counters = MemoryCounters(max_keys=10)
    for _ in range(3):
        assert await counters.count_attempt("register:10.0.0.1", clock(), limit=3, window=3600) == 0
    clock.advance(400)  # past the short window, well inside the long one
    for n in range(50):
        await counters.count_attempt(f"10.9.0.{n}", clock(), limit=5, window=300)
    assert await counters.count_attempt("register:10.0.0.1", clock(), limit=3, window=3600) > 0


async def test_pruning_prefers_idle_entries_over_locked_accounts(clock: FakeClock) -> None:
    counters = MemoryCounters(max_keys=10)
    limiter = throttle(counters, clock, max_failures=3, lockout=100)
    for n in range(9):
        await limiter.record_failure(f"stale{n}@example.com")
    clock.advance(50)
    for _ in range(3):
        await limiter.record_failure(ACCOUNT)  # locked until t=150
    clock.advance(51)  # t=101: the stale failures have left the window
    await limiter.record_failure("new@example.com")  # the table is full: prune
    assert len(counters._accounts) <= 10
    with pytest.raises(RateLimited) as info:
        await limiter.check(ACCOUNT, None)
    assert info.value.retry_after == 49

"""Unit tests of gatepass.ratelimit: account lockout and per-IP limit on a fake clock."""

from __future__ import annotations

import pytest

from gatepass.errors import RateLimited
from gatepass.ratelimit import IP_WINDOW_SECONDS, LoginThrottle
from tests.conftest import FakeClock

ACCOUNT = "ada@example.com"
IP = "192.0.2.1"


def throttle(
    clock: FakeClock,
    *,
    max_failures: int = 3,
    lockout: float = 60,
    ip_limit: int = 1000,
    max_keys: int = 100_000,
) -> LoginThrottle:
    return LoginThrottle(
        max_failures=max_failures,
        lockout=lockout,
        ip_limit=ip_limit,
        clock=clock,
        max_keys=max_keys,
    )


def retry_after(limiter: LoginThrottle, account: str = ACCOUNT, ip: str | None = IP) -> int:
    with pytest.raises(RateLimited) as info:
        limiter.check(account, ip)
    assert info.value.status == 429
    return info.value.retry_after


# account lockout -----------------------------------------------------------


def test_attempts_allowed_below_max_failures(clock: FakeClock) -> None:
    limiter = throttle(clock)
    assert limiter.record_failure(ACCOUNT) is False
    assert limiter.record_failure(ACCOUNT) is False
    limiter.check(ACCOUNT, IP)


def test_account_locked_after_max_failures_within_window(clock: FakeClock) -> None:
    limiter = throttle(clock)
    assert limiter.record_failure(ACCOUNT) is False
    clock.advance(10)
    assert limiter.record_failure(ACCOUNT) is False
    clock.advance(10)
    assert limiter.record_failure(ACCOUNT) is True
    assert retry_after(limiter) == 60


def test_lockout_refuses_every_attempt_with_retry_after_counting_down(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    # ``check`` runs before the password is looked at: a correct password is refused too.
    assert retry_after(limiter) == 60
    clock.advance(20)
    assert retry_after(limiter) == 40
    clock.advance(39.5)
    assert retry_after(limiter) == 1
    clock.advance(0.4)
    assert retry_after(limiter) == 1


def test_lockout_applies_from_any_ip_and_without_ip(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    for ip in ("192.0.2.1", "198.51.100.7", "2001:db8::1", None):
        assert retry_after(limiter, ip=ip) == 60


def test_account_unlocked_after_lockout(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    clock.advance(60)
    limiter.check(ACCOUNT, IP)


def test_one_failure_after_unlock_does_not_relock(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    clock.advance(60)
    assert limiter.record_failure(ACCOUNT) is False
    limiter.check(ACCOUNT, IP)


def test_repeated_failures_after_unlock_lock_again(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    clock.advance(60)
    assert [limiter.record_failure(ACCOUNT) for _ in range(3)] == [False, False, True]
    assert retry_after(limiter) == 60


def test_failures_outside_window_do_not_count(clock: FakeClock) -> None:
    limiter = throttle(clock)
    limiter.record_failure(ACCOUNT)
    clock.advance(30)
    limiter.record_failure(ACCOUNT)
    clock.advance(31)  # the first failure is now more than 60 s old
    assert limiter.record_failure(ACCOUNT) is False
    limiter.check(ACCOUNT, IP)


def test_success_resets_failure_count(clock: FakeClock) -> None:
    limiter = throttle(clock)
    limiter.record_failure(ACCOUNT)
    limiter.record_failure(ACCOUNT)
    limiter.record_success(ACCOUNT)
    assert limiter.record_failure(ACCOUNT) is False
    assert limiter.record_failure(ACCOUNT) is False
    limiter.check(ACCOUNT, IP)


def test_lockout_is_per_account(clock: FakeClock) -> None:
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    limiter.check("bob@example.com", IP)
    assert retry_after(limiter) == 60


def test_max_failures_of_one_locks_on_first_failure(clock: FakeClock) -> None:
    limiter = throttle(clock, max_failures=1, lockout=1)
    assert limiter.record_failure(ACCOUNT) is True
    assert retry_after(limiter) == 1
    clock.advance(1)
    limiter.check(ACCOUNT, IP)


def test_retry_after_is_whole_seconds_rounded_up(clock: FakeClock) -> None:
    limiter = throttle(clock, lockout=2.5)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    assert retry_after(limiter) == 3
    clock.advance(2.49)
    assert retry_after(limiter) == 1


# per-IP limit --------------------------------------------------------------


def test_per_ip_limit_refuses_with_retry_after(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=5)
    for n in range(5):
        limiter.check(f"user{n}@example.com", IP)
        clock.advance(1)
    # five attempts at t=0..4, now t=5: the oldest leaves the window at t=300
    assert retry_after(limiter, account="other@example.com") == IP_WINDOW_SECONDS - 5
    clock.advance(100)
    assert retry_after(limiter, account="other@example.com") == IP_WINDOW_SECONDS - 105


def test_per_ip_limit_frees_slots_as_window_slides(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=2)
    limiter.check(ACCOUNT, IP)
    clock.advance(10)
    limiter.check(ACCOUNT, IP)
    clock.advance(289)
    retry_after(limiter)
    clock.advance(1)  # the first attempt is 300 s old
    limiter.check(ACCOUNT, IP)
    retry_after(limiter)


def test_per_ip_limit_counts_successful_attempts_too(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=3)
    for _ in range(3):
        limiter.check(ACCOUNT, IP)
        limiter.record_success(ACCOUNT)
    retry_after(limiter)


def test_refused_attempts_do_not_extend_ip_block(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=1)
    limiter.check(ACCOUNT, IP)
    for _ in range(50):
        clock.advance(1)
        retry_after(limiter)
    clock.advance(250)
    limiter.check(ACCOUNT, IP)


def test_per_ip_limit_is_per_address(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=1)
    limiter.check(ACCOUNT, "192.0.2.1")
    limiter.check(ACCOUNT, "192.0.2.2")
    retry_after(limiter, ip="192.0.2.1")


def test_no_ip_limit_without_client_address(clock: FakeClock) -> None:
    limiter = throttle(clock, ip_limit=1)
    for _ in range(10):
        limiter.check(ACCOUNT, None)
        limiter.record_success(ACCOUNT)


def test_attempts_in_flight_count_against_the_lockout(clock: FakeClock) -> None:
    """Parallel guesses all pass check() before any fails: they must not exceed the limit."""
    limiter = throttle(clock, max_failures=3, ip_limit=100)
    for _ in range(3):
        limiter.check(ACCOUNT, IP)
    assert retry_after(limiter) >= 1
    for _ in range(3):
        limiter.record_failure(ACCOUNT)
    assert retry_after(limiter) > 1  # now a real lockout


def test_abandoned_attempt_frees_its_place(clock: FakeClock) -> None:
    limiter = throttle(clock, max_failures=2, ip_limit=100)
    limiter.check(ACCOUNT, IP)
    limiter.check(ACCOUNT, IP)
    retry_after(limiter)
    limiter.abandon(ACCOUNT)
    limiter.check(ACCOUNT, IP)


# construction and memory ---------------------------------------------------


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


def test_memory_stays_bounded_under_many_accounts_and_ips(clock: FakeClock) -> None:
    limiter = throttle(clock, max_keys=10, ip_limit=5)
    for n in range(1000):
        limiter.check(f"user{n}@example.com", f"10.0.{n // 256}.{n % 256}")
        limiter.record_failure(f"user{n}@example.com")
        assert len(limiter._accounts) <= 10
        assert len(limiter._ips) <= 10


def test_pruning_prefers_idle_entries_over_locked_accounts(clock: FakeClock) -> None:
    limiter = throttle(clock, max_keys=10, max_failures=3, lockout=100)
    for n in range(9):
        limiter.record_failure(f"stale{n}@example.com")
    clock.advance(50)
    for _ in range(3):
        limiter.record_failure(ACCOUNT)  # locked until t=150
    clock.advance(51)  # t=101: the stale failures have left the window
    limiter.record_failure("new@example.com")  # the table is full: prune
    assert len(limiter._accounts) <= 10
    assert retry_after(limiter, ip=None) == 49

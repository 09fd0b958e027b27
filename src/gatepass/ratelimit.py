"""Login throttling: per account (lockout) and per client IP (rate).

*Account*: after ``max_failures`` failed logins within ``lockout`` seconds, the
account is locked for ``lockout`` seconds; every attempt meanwhile, a correct
password included, is refused with the time left. Unknown emails are counted
exactly like real ones, so lockouts do not reveal which accounts exist.

*IP*: at most ``ip_limit`` attempts per ``ip_window`` seconds from one client
address, successful or not.

This implementation keeps its counters in process memory, bounded in size.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

from gatepass.clock import Clock
from gatepass.errors import RateLimited

IP_WINDOW_SECONDS = 300
#: Entries kept per table before idle ones are pruned.
MAX_TRACKED_KEYS = 100_000


@dataclass(slots=True)
class _Account:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    #: Attempts let through by check() whose password is still being verified.
    pending: int = 0


class LoginThrottle:
    """In-memory account lockout and per-IP rate limit for password logins."""

    def __init__(
        self,
        *,
        max_failures: int,
        lockout: float,
        ip_limit: int,
        clock: Clock,
        ip_window: float = IP_WINDOW_SECONDS,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        if max_failures < 1 or ip_limit < 1 or lockout <= 0 or ip_window <= 0:
            raise ValueError("throttle limits must be positive")
        self._max_failures = max_failures
        self._lockout = lockout
        self._ip_limit = ip_limit
        self._ip_window = ip_window
        self._clock = clock
        self._max_keys = max_keys
        # Keyed by SHA-256 of the account, so a long junk email costs 32 bytes.
        self._accounts: dict[bytes, _Account] = {}
        self._ips: dict[str, deque[float]] = {}

    def check(self, account: str, ip: str | None) -> None:
        """Count this attempt against ``ip`` and ``account``, or raise :class:`RateLimited`.

        Every attempt let through must be settled by :meth:`record_failure`,
        :meth:`record_success` or :meth:`abandon`. Attempts still in flight count
        against the account, so parallel guesses cannot slip past the lockout.
        """
        now = self._clock()
        if ip is not None:
            self._check_ip(ip, now)
        state = self._account(_key(account), now)
        if state.locked_until > now:
            raise RateLimited(_whole_seconds(state.locked_until - now))
        self._expire_failures(state, now)
        if len(state.failures) + state.pending >= self._max_failures:
            raise RateLimited(1)
        state.pending += 1

    def _account(self, key: bytes, now: float) -> _Account:
        state = self._accounts.get(key)
        if state is None:
            self._prune(now)
            state = self._accounts[key] = _Account()
        return state

    def _expire_failures(self, state: _Account, now: float) -> None:
        while state.failures and state.failures[0] <= now - self._lockout:
            state.failures.popleft()

    def _check_ip(self, ip: str, now: float) -> None:
        attempts = self._ips.get(ip)
        if attempts is None:
            self._prune(now)
            attempts = self._ips[ip] = deque(maxlen=self._ip_limit)
        while attempts and attempts[0] <= now - self._ip_window:
            attempts.popleft()
        if len(attempts) >= self._ip_limit:
            raise RateLimited(_whole_seconds(attempts[0] + self._ip_window - now))
        attempts.append(now)

    def record_failure(self, account: str) -> bool:
        """Count a failed login; return ``True`` when it locks the account."""
        now = self._clock()
        state = self._account(_key(account), now)
        state.pending = max(0, state.pending - 1)
        self._expire_failures(state, now)
        state.failures.append(now)
        if len(state.failures) >= self._max_failures:
            state.failures.clear()
            state.locked_until = now + self._lockout
            return True
        return False

    def record_success(self, account: str) -> None:
        """A correct password: the account's failures are forgiven."""
        self._accounts.pop(_key(account), None)

    def abandon(self, account: str) -> None:
        """Settle an attempt that ended in neither success nor failure (an error)."""
        state = self._accounts.get(_key(account))
        if state is not None:
            state.pending = max(0, state.pending - 1)

    def _prune(self, now: float) -> None:
        """Drop idle entries once a table is full, so memory stays bounded."""
        if len(self._accounts) >= self._max_keys:
            horizon = now - self._lockout
            for account in [
                k
                for k, s in self._accounts.items()
                if s.locked_until <= now
                and not s.pending
                and (not s.failures or s.failures[-1] <= horizon)
            ]:
                del self._accounts[account]
            while len(self._accounts) >= self._max_keys:
                del self._accounts[next(iter(self._accounts))]
        if len(self._ips) >= self._max_keys:
            horizon = now - self._ip_window
            for ip in [k for k, a in self._ips.items() if not a or a[-1] <= horizon]:
                del self._ips[ip]
            while len(self._ips) >= self._max_keys:
                del self._ips[next(iter(self._ips))]


def _key(account: str) -> bytes:
    return hashlib.sha256(account.encode("utf-8", "surrogatepass")).digest()


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))

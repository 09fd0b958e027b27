"""Login throttling: per account (lockout), per trusted device, per client network,
and wrong current passwords per session.

*Account*: after ``max_failures`` failed logins within ``lockout`` seconds, the
account is locked for ``lockout`` seconds against *untrusted* clients; every
attempt from one meanwhile, a correct password included, is refused with the
time left. Unknown emails are counted exactly like real ones, so lockouts do
not reveal which accounts exist.

*Device*: a client that presents a device cookie for the account (one that
signed in there before, OWASP "device cookies") is counted on its own: the
account's lockout does not refuse it, so guessing from elsewhere cannot lock the
owner out, and its own failures lock only that device.

*IP*: at most ``ip_limit`` attempts per ``ip_window`` seconds from one client
address, successful or not. IPv6 clients are counted per /64, the block a single
subscriber is usually given, so rotating through one's own addresses buys nothing.

This implementation keeps its counters in process memory, bounded in size; a
locked account or device is never evicted to make room.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections import deque
from dataclasses import dataclass, field

from gatepass.clock import Clock
from gatepass.errors import RateLimited

IP_WINDOW_SECONDS = 300
#: Entries kept per table before idle ones are pruned.
MAX_TRACKED_KEYS = 100_000
#: When a table is full, evictions bring it down to this share of its size at once,
#: so the scan that picks them is paid once per many new entries, not per entry.
PRUNE_TO = 0.9
#: IPv6 addresses are counted per network of this prefix length.
IPV6_PREFIX = 64


@dataclass(slots=True)
class _Account:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    #: Attempts let through by check() whose password is still being verified.
    pending: int = 0


def ip_key(ip: str) -> str:
    """What the per-IP limit counts: the address, or its /64 for IPv6.

    An IPv4-mapped IPv6 address counts as its IPv4 address. A peer that is not
    an IP address (a Unix socket, a test client) counts as itself.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class LoginThrottle:
    """In-memory account and device lockout and per-IP rate limit for password logins.

    ``device`` arguments are the verified ID of a device cookie bound to the
    account (see :mod:`gatepass.devices`), or ``None`` for an untrusted client.
    """

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
        # Keyed by SHA-256 of the account (or device), so a long junk email costs 32 bytes.
        self._accounts: dict[bytes, _Account] = {}
        self._ips: dict[str, deque[float]] = {}

    def check(self, account: str, ip: str | None, device: str | None = None) -> None:
        """Count this attempt against ``ip`` and the account (or the trusted device),
        or raise :class:`RateLimited`.

        Every attempt let through must be settled by :meth:`record_failure`,
        :meth:`record_success` or :meth:`abandon` with the same ``device``.
        Attempts still in flight count against the lockout, so parallel guesses
        cannot slip past it.
        """
        now = self._clock()
        if ip is not None:
            self._check_ip(ip_key(ip), now)
        state = self._entry(_key(account, device), now)
        if state.locked_until > now:
            raise RateLimited(_whole_seconds(state.locked_until - now))
        self._expire_failures(state, now)
        if len(state.failures) + state.pending >= self._max_failures:
            raise RateLimited(1)
        state.pending += 1

    def _entry(self, key: bytes, now: float) -> _Account:
        state = self._accounts.get(key)
        if state is None:
            self._prune(now)
            state = self._accounts[key] = _Account()
        return state

    def _expire_failures(self, state: _Account, now: float) -> None:
        while state.failures and state.failures[0] <= now - self._lockout:
            state.failures.popleft()

    def _check_ip(self, key: str, now: float) -> None:
        attempts = self._ips.get(key)
        if attempts is None:
            self._prune(now)
            attempts = self._ips[key] = deque(maxlen=self._ip_limit)
        while attempts and attempts[0] <= now - self._ip_window:
            attempts.popleft()
        if len(attempts) >= self._ip_limit:
            raise RateLimited(_whole_seconds(attempts[0] + self._ip_window - now))
        attempts.append(now)

    def record_failure(self, account: str, device: str | None = None) -> bool:
        """Count a failed login; return ``True`` when it locks the account (or device)."""
        now = self._clock()
        state = self._entry(_key(account, device), now)
        state.pending = max(0, state.pending - 1)
        self._expire_failures(state, now)
        state.failures.append(now)
        if len(state.failures) >= self._max_failures:
            state.failures.clear()
            state.locked_until = now + self._lockout
            return True
        return False

    def record_success(self, account: str, device: str | None = None) -> None:
        """A correct password: the failures of this account (or device) are forgiven.

        A trusted device's success forgives only that device: the untrusted
        clients guessing meanwhile stay counted.
        """
        self._accounts.pop(_key(account, device), None)

    def abandon(self, account: str, device: str | None = None) -> None:
        """Settle an attempt that ended in neither success nor failure (an error)."""
        state = self._accounts.get(_key(account, device))
        if state is not None:
            state.pending = max(0, state.pending - 1)

    def clear(self, account: str) -> None:
        """Forget every count of the untrusted clients of ``account`` (e.g. after a reset)."""
        self._accounts.pop(_key(account, None), None)

    def _prune(self, now: float) -> None:
        """Make room once a table is full, so memory stays bounded.

        Down to :data:`PRUNE_TO` of the size, in one pass: idle entries first
        (every one of them), then those with the fewest and oldest failures. A
        locked entry or one with attempts in flight is never evicted: that would
        unlock it. If nothing else is left, the table grows past its size
        (bounded all the same: each lock costs ``max_failures`` attempts, which the
        per-IP limit meters).
        """
        target = int(self._max_keys * PRUNE_TO)
        if len(self._accounts) >= self._max_keys:
            horizon = now - self._lockout
            evictable = []
            for key, state in self._accounts.items():
                if state.locked_until > now or state.pending:
                    continue
                self._expire_failures(state, now)
                last = state.failures[-1] if state.failures else horizon
                evictable.append((bool(state.failures), len(state.failures), last, key))
            evictable.sort()
            for active, _, _, key in evictable:
                if active and len(self._accounts) <= target:
                    break
                del self._accounts[key]
        if len(self._ips) >= self._max_keys:
            horizon = now - self._ip_window
            for ip in [k for k, a in self._ips.items() if not a or a[-1] <= horizon]:
                del self._ips[ip]
            while len(self._ips) > target:
                del self._ips[next(iter(self._ips))]


@dataclass(slots=True)
class _Guess:
    failures: int = 0
    pending: int = 0
    last: float = 0.0


class CredentialGuard:
    """Wrong current passwords on authenticated routes, counted per session or family.

    Routes that ask a signed-in caller for the current password (password change,
    later e-mail change, deletion, reauthentication) are never refused because of
    failures made by others; their own wrong attempts count against the caller's
    session or token family, which the caller ends after ``max_failures`` of them.
    Attempts in flight count, so parallel guesses cannot exceed the limit.

    Memory is bounded without ever refusing an innocent caller: an entry outlives
    ``retention`` (the longest a session or family can live) by nothing, and when
    the table is full, entries without a count go first, then the least recently
    active ones (an attacker would need to fill the whole table with guesses of
    their own, each from a credential of their own, to push a count out).
    """

    def __init__(
        self,
        *,
        max_failures: int,
        retention: float,
        clock: Clock,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        if max_failures < 1 or retention <= 0:
            raise ValueError("max_failures and retention must be positive")
        self._max_failures = max_failures
        self._retention = retention
        self._clock = clock
        self._max_keys = max_keys
        self._counts: dict[str, _Guess] = {}

    def check(self, credential: str) -> None:
        """Let one attempt through for ``credential`` or raise :class:`RateLimited`
        (only while that credential's own failures and attempts in flight are at
        the limit)."""
        now = self._clock()
        guess = self._counts.get(credential)
        if guess is None:
            if len(self._counts) >= self._max_keys:
                self._prune(now)
            guess = self._counts[credential] = _Guess()
        if guess.failures + guess.pending >= self._max_failures:
            raise RateLimited(1)
        guess.pending += 1
        guess.last = now

    def record_failure(self, credential: str) -> bool:
        """Count a wrong password; ``True`` when the credential must now be ended."""
        guess = self._counts.setdefault(credential, _Guess(pending=1))
        guess.pending = max(0, guess.pending - 1)
        guess.failures += 1
        guess.last = self._clock()
        if guess.failures >= self._max_failures:
            del self._counts[credential]
            return True
        return False

    def record_success(self, credential: str) -> None:
        self._counts.pop(credential, None)

    def abandon(self, credential: str) -> None:
        guess = self._counts.get(credential)
        if guess is not None:
            guess.pending = max(0, guess.pending - 1)

    def _prune(self, now: float) -> None:
        """Down to :data:`PRUNE_TO` of the size in one pass: entries past ``retention``
        or holding no count, then the least recently active (never one in flight)."""
        horizon = now - self._retention
        for key in [
            k
            for k, g in self._counts.items()
            if not g.pending and (g.last <= horizon or not g.failures)
        ]:
            del self._counts[key]
        target = int(self._max_keys * PRUNE_TO)
        if len(self._counts) > target:
            idle = sorted((g.last, k) for k, g in self._counts.items() if not g.pending)
            for _, key in idle[: len(self._counts) - target]:
                del self._counts[key]


def _key(account: str, device: str | None = None) -> bytes:
    subject = f"device:{device}" if device is not None else f"account:{account}"
    return hashlib.sha256(subject.encode("utf-8", "surrogatepass")).digest()


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))

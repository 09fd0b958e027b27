"""Throttle counters in process memory (the embedded default), bounded in size.

Each table holds at most ``max_keys`` entries before it is pruned; a locked
account or device, or one with attempts in flight, is never evicted to make room
(that would unlock it). Counts are not shared between processes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: Entries kept per table before idle ones are pruned.
MAX_TRACKED_KEYS = 100_000
#: When a table is full, evictions bring it down to this share of its size at once,
#: so the scan that picks them is paid once per many new entries, not per entry.
PRUNE_TO = 0.9


@dataclass(slots=True)
class _Account:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    #: Attempts let through by begin_login() whose password is still being verified.
    pending: int = 0


@dataclass(slots=True)
class _Guess:
    failures: int = 0
    pending: int = 0
    last: float = 0.0


class MemoryCounters:
    """:class:`~gatepass.stores.base.CounterStore` in this process's memory."""

    def __init__(self, *, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self._max_keys = max_keys
        self._accounts: dict[bytes, _Account] = {}
        # One table per window length, so pruning one limit's stale keys never
        # drops a key of a longer window that is still counting.
        self._windows: dict[float, dict[str, deque[float]]] = {}
        self._guesses: dict[str, _Guess] = {}

    def __repr__(self) -> str:
        return f"MemoryCounters(max_keys={self._max_keys})"

    # sliding windows -----------------------------------------------------------

    async def count_attempt(self, key: str, now: float, *, limit: int, window: float) -> float:
        table = self._windows.setdefault(window, {})
        attempts = table.get(key)
        if attempts is None:
            self._prune_window(table, now, window)
            attempts = table[key] = deque(maxlen=limit)
        while attempts and attempts[0] <= now - window:
            attempts.popleft()
        if len(attempts) >= limit:
            return attempts[0] + window - now
        attempts.append(now)
        return 0.0

    # account and device lockout -------------------------------------------------

    async def begin_login(
        self, key: bytes, now: float, *, max_failures: int, window: float
    ) -> float | None:
        state = self._account(key, now, window)
        if state.locked_until > now:
            return state.locked_until - now
        _expire(state, now, window)
        if len(state.failures) + state.pending >= max_failures:
            return 0.0
        state.pending += 1
        return None

    async def fail_login(self, key: bytes, now: float, *, max_failures: int, window: float) -> bool:
        state = self._account(key, now, window)
        state.pending = max(0, state.pending - 1)
        _expire(state, now, window)
        state.failures.append(now)
        if len(state.failures) >= max_failures:
            state.failures.clear()
            state.locked_until = now + window
            return True
        return False

    async def forget_login(self, key: bytes) -> None:
        self._accounts.pop(key, None)

    async def abandon_login(self, key: bytes) -> None:
        state = self._accounts.get(key)
        if state is not None:
            state.pending = max(0, state.pending - 1)

    def _account(self, key: bytes, now: float, window: float) -> _Account:
        state = self._accounts.get(key)
        if state is None:
            self._prune_accounts(now, window)
            state = self._accounts[key] = _Account()
        return state

    def _prune_accounts(self, now: float, window: float) -> None:
        """Make room once the table is full, so memory stays bounded.

        Down to :data:`PRUNE_TO` of the size, in one pass: idle entries first
        (every one of them), then those with the fewest and oldest failures. A
        locked entry or one with attempts in flight is never evicted. If nothing
        else is left, the table grows past its size (bounded all the same: each
        lock costs ``max_failures`` attempts, which the per-IP limit meters).
        """
        if len(self._accounts) < self._max_keys:
            return
        target = int(self._max_keys * PRUNE_TO)
        horizon = now - window
        evictable = []
        for key, state in self._accounts.items():
            if state.locked_until > now or state.pending:
                continue
            _expire(state, now, window)
            last = state.failures[-1] if state.failures else horizon
            evictable.append((bool(state.failures), len(state.failures), last, key))
        evictable.sort()
        for active, _, _, key in evictable:
            if active and len(self._accounts) <= target:
                break
            del self._accounts[key]

    def _prune_window(self, table: dict[str, deque[float]], now: float, window: float) -> None:
        if len(table) < self._max_keys:
            return
        target = int(self._max_keys * PRUNE_TO)
        horizon = now - window
        for key in [k for k, a in table.items() if not a or a[-1] <= horizon]:
            del table[key]
        while len(table) > target:
            del table[next(iter(table))]

    # wrong current passwords -----------------------------------------------------

    async def begin_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        guess = self._guesses.get(key)
        if guess is None:
            if len(self._guesses) >= self._max_keys:
                self._prune_guesses(now, retention)
            guess = self._guesses[key] = _Guess()
        if guess.failures + guess.pending >= max_failures:
            return False
        guess.pending += 1
        guess.last = now
        return True

    async def fail_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        guess = self._guesses.setdefault(key, _Guess(pending=1))
        guess.pending = max(0, guess.pending - 1)
        guess.failures += 1
        guess.last = now
        if guess.failures >= max_failures:
            del self._guesses[key]
            return True
        return False

    async def forget_guess(self, key: str) -> None:
        self._guesses.pop(key, None)

    async def abandon_guess(self, key: str) -> None:
        guess = self._guesses.get(key)
        if guess is not None:
            guess.pending = max(0, guess.pending - 1)

    def _prune_guesses(self, now: float, retention: float) -> None:
        """Down to :data:`PRUNE_TO` of the size in one pass: entries past ``retention``
        or holding no count, then the least recently active (never one in flight)."""
        horizon = now - retention
        for key in [
            k
            for k, g in self._guesses.items()
            if not g.pending and (g.last <= horizon or not g.failures)
        ]:
            del self._guesses[key]
        target = int(self._max_keys * PRUNE_TO)
        if len(self._guesses) > target:
            idle = sorted((g.last, k) for k, g in self._guesses.items() if not g.pending)
            for _, key in idle[: len(self._guesses) - target]:
                del self._guesses[key]


def _expire(state: _Account, now: float, window: float) -> None:
    while state.failures and state.failures[0] <= now - window:
        state.failures.popleft()

"""Coalesce concurrent identical reads: the first caller reads, the others wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs at most one ``read`` per key at a time; concurrent callers share its result
    (or its exception, so a failed store read fails every waiter closed).

    A cache refresh under load is then one store round trip, not one per request.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            self._running[key] = future
            future.add_done_callback(lambda _done: self._running.pop(key, None))
        # shield: one waiter being cancelled must not cancel the read for the others.
        return await asyncio.shield(future)

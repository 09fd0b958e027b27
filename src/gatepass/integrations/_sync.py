"""One long-lived event loop per process, for frameworks whose views are sync.

gatepass's stores are async, and their pools (asyncpg, redis-py) belong to the loop
that opened them. Starting a loop per request would pay a pool per request and, on
PostgreSQL, break on the second one. So sync adapters (Flask, Django) hand every
coroutine to one loop running in a daemon thread, and wait for its result.

A forked child (gunicorn's pre-fork workers) inherits the parent's memory but not
its threads: a loop started before the fork has no thread in the child. The loop is
therefore started lazily, on the first call in each process, and a runner that
notices it now lives in another process starts a fresh loop there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
#: How long a sync caller waits for one coroutine before giving up on it.
DEFAULT_TIMEOUT_SECONDS = 30.0


class LoopThread:
    """Runs coroutines on one event loop in a daemon thread of this process.

    Thread-safe: any number of request threads (gunicorn ``gthread``, Django's
    threaded dev server) may call :meth:`run` at once; the coroutines interleave on
    the one loop as they would under an ASGI server.
    """

    def __init__(self, name: str = "gatepass-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._on_start: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def __repr__(self) -> str:
        state = "running" if self._loop is not None and self._pid == os.getpid() else "idle"
        return f"LoopThread({self._name!r}, {state})"

    def on_start(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Await ``hook()`` on the loop each time it starts (once per process), before
        any other coroutine runs there: opening stores belongs here."""
        self._on_start.append(hook)

    def running_here(self) -> bool:
        """Whether the loop runs in this process (not a copy inherited through fork):
        only then may objects opened on it be read from a request thread."""
        return self._loop is not None and self._pid == os.getpid()

    def loop(self) -> asyncio.AbstractEventLoop:
        """This process's loop, started (and its start hooks run) on first use."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                return self._start()
            return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        # A fork copied the parent's loop object, but its thread did not come along;
        # the copy is dropped, not closed (closing it would touch the parent's fds).
        self._loop, self._thread, self._pid = loop, thread, os.getpid()
        for hook in self._on_start:
            asyncio.run_coroutine_threadsafe(hook(), loop).result()
        return loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT_SECONDS) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its exception).

        Called from the loop's own thread it would wait for itself forever, so that
        is refused.
        """
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("LoopThread.run() called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("gatepass did not answer in time") from None

    def stop(self, closing: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``closing()`` on the loop (closing stores), then stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None or self._pid != os.getpid():
                self._loop = self._thread = None
                return
            if closing is not None:
                asyncio.run_coroutine_threadsafe(closing(), loop).result(DEFAULT_TIMEOUT_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(DEFAULT_TIMEOUT_SECONDS)
            loop.close()
            self._loop = self._thread = None

"""One thread and one plain ``sqlite3`` connection for a process's hot write
transactions (refresh rotation), each run whole in that thread.

Why not the SQLAlchemy engine: aiosqlite hands every cursor operation (open,
execute, fetch, close, commit) to its connection's thread and back, about
twenty hops for a rotation; each hop waits for the event loop's turn, and on a
busy loop a thread waiting for the GIL waits out the switch interval (5 ms).
Several pooled connections writing at once also meet SQLite's write lock and
poll for it in SQLite's busy handler, sleeping up to 100 ms a try, until the
busy timeout ends in "database is locked" (a 503). Measured on the auth server,
32 clients rotating: 300-450 rotations/s, p99 0.5-0.9 s.

Here a transaction is one function run in one hop, opened with
``BEGIN IMMEDIATE`` (the write lock at once, so a read in it is never a stale
snapshot and a lock held by another process is waited for by the busy timeout,
in this thread). The process's transactions queue in order instead of polling.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar

from gatepass.errors import StoreUnavailable

T = TypeVar("T")
Configure = Callable[[sqlite3.Connection], None]


def _named_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> SimpleNamespace:
    """Rows whose columns read as attributes, as SQLAlchemy's rows do."""
    return SimpleNamespace(**{d[0]: v for d, v in zip(cursor.description, row, strict=True)})


class SqliteWriter:
    """Runs write transactions on one SQLite file, one at a time, off the event loop."""

    def __init__(self, path: str, configure: Configure) -> None:
        self._path = path
        self._configure = configure
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gatepass-sqlite-writer")
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return "SqliteWriter()"

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back
        when it raises); a SQLite error is :class:`StoreUnavailable`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            # The driver's own words ("database is locked"), never the statement.
            raise StoreUnavailable(f"database error: {type(exc).__name__}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Autocommit mode: this class writes BEGIN and COMMIT itself.
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            try:
                self._configure(connection)
            except BaseException:
                connection.close()
                raise
            connection.row_factory = _named_row
            self._connection = connection
        return self._connection

    async def close(self) -> None:
        """Close the connection in its thread and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

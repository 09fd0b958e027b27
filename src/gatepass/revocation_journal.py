"""The revocations one auth-server process has applied, in the order it applied them.

Resource servers follow them over HTTP (``GET /auth/revocations``,
docs/revocation-feed.md) with a *cursor*. The durable feed's IDs cannot be that
cursor: on PostgreSQL they do not commit in order (:mod:`gatepass.revocation`),
so "every ID above mine" would skip one that commits late. Instead each process
numbers the entries its :class:`~gatepass.revocation.RevocationView` applies,
whatever their source (its own writes, the event bus, its poll of the feed):
that sequence only grows, and an entry applied here after a reader's cursor gets
a higher number than the cursor, however late it committed.

A cursor is ``<boot>-<sequence>``, where ``boot`` is random per journal (per
process start): a cursor from another process, or one whose entries this journal
no longer holds (older than :data:`MAX_JOURNAL_ENTRIES` entries, or past their
expiry), cannot be continued, and its holder gets a *snapshot* instead: every
live entry of the view. Readers treat the cursor as opaque.

Entries carry ``expires_at``, when every token they could concern has expired
(``created_at`` + access-token TTL + leeway), so a reader prunes them without
knowing the server's settings.

This module imports no store and no web framework: the page format it defines
is read by :mod:`gatepass.verifier.revocations` as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatepass.clock import Clock
from gatepass.stores.base import RevocationKind

_KINDS: dict[str, RevocationKind] = {"jti": "jti", "family": "family", "epoch": "epoch"}
#: Entries the journal keeps for readers to continue from; an older cursor gets a
#: snapshot. (A logout-all writes one entry per family of the user, 101 at most.)
MAX_JOURNAL_ENTRIES = 50_000
#: The longest cursor anyone may send (16 hex characters, a dash, 19 digits).
MAX_CURSOR_LENGTH = 36
_CURSOR = re.compile(r"([0-9a-f]{16})-(0|[1-9][0-9]{0,18})")
#: The longest subject a page may carry (token and family IDs, user IDs).
MAX_SUBJECT_LENGTH = 256


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One revocation as a resource server needs it.

    ``kind`` ``jti`` (subject: a token ID) and ``family`` (a refresh family, the
    token's ``sid``) refuse the tokens they name; ``epoch`` (subject: a user ID)
    refuses that user's tokens whose ``iat`` is before ``floor(value)``.
    """

    kind: RevocationKind
    subject: str
    value: float
    #: Seconds since the epoch after which no token this entry concerns is alive.
    expires_at: float


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One answer of the feed: the entries after the reader's cursor (or, when
    ``snapshot``, every live entry) and the cursor to continue from."""

    cursor: str
    snapshot: bool
    entries: tuple[FeedEntry, ...]
    #: Seconds an entry concerns live tokens after it was written (the server's
    #: access-token TTL plus leeway): how long to keep one heard of elsewhere.
    retention: float


def parse_cursor(text: str) -> tuple[str, int]:
    """``(boot, sequence)`` of a cursor; :class:`ValueError` when it is malformed."""
    match = _CURSOR.fullmatch(text) if len(text) <= MAX_CURSOR_LENGTH else None
    if match is None:
        raise ValueError("malformed cursor")
    return match.group(1), int(match.group(2))


class RevocationJournal:
    """The numbered entries of one process's revocation view, for readers to follow.

    Driven from the event loop that runs the view; :meth:`wait` lets a reader's
    long poll sleep until something is recorded.
    """

    def __init__(self, *, clock: Clock, max_entries: int = MAX_JOURNAL_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._clock = clock
        self._max_entries = max_entries
        self.boot = secrets.token_hex(8)
        self._sequence = 0
        #: Every entry numbered at or below this has been dropped.
        self._dropped_through = 0
        self._entries: deque[tuple[int, FeedEntry]] = deque()
        self._waiters: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"RevocationJournal(boot={self.boot!r}, sequence={self._sequence})"

    @property
    def cursor(self) -> str:
        """The cursor of everything recorded so far."""
        return f"{self.boot}-{self._sequence}"

    def record(self, entry: FeedEntry) -> None:
        """Number ``entry`` and wake every reader waiting for news."""
        self._sequence += 1
        self._entries.append((self._sequence, entry))
        self._drop_old()
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def since(self, cursor: str | None) -> tuple[FeedEntry, ...] | None:
        """The entries recorded after ``cursor``, or ``None`` when it cannot be
        continued here (absent, from another process, older than what is kept, or
        ahead of this journal): the reader needs a snapshot.

        Raises :class:`ValueError` for a malformed cursor."""
        if cursor is None:
            return None
        boot, position = parse_cursor(cursor)
        self._drop_old()
        if boot != self.boot or not self._dropped_through <= position <= self._sequence:
            return None
        # Readers are mostly at the tail: walk back over the new entries only.
        newest_first = itertools.islice(reversed(self._entries), self._sequence - position)
        return tuple(reversed([entry for _, entry in newest_first]))

    async def wait(self, cursor: str, at_most: float) -> None:
        """Return once something is recorded after ``cursor`` (a cursor of this
        journal), or after ``at_most`` seconds."""
        if parse_cursor(cursor) != (self.boot, self._sequence) or at_most <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, at_most)
        finally:
            self._waiters.discard(waiter)

    def _drop_old(self) -> None:
        # Expired entries concern no live token; a reader that had not read them yet
        # gets a snapshot, which holds everything still alive.
        now = self._clock()
        entries = self._entries
        while entries and (len(entries) > self._max_entries or entries[0][1].expires_at < now):
            self._dropped_through = entries.popleft()[0]


# -- the page format (server writes, resource servers read) -----------------------------


def page_json(page: FeedPage) -> dict[str, Any]:
    """``page`` as the JSON body of a feed answer."""
    return {
        "cursor": page.cursor,
        "snapshot": page.snapshot,
        "retention": page.retention,
        "revocations": [_entry_json(entry) for entry in page.entries],
    }


def _entry_json(entry: FeedEntry) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": entry.kind, "subject": entry.subject}
    if entry.kind == "epoch":
        body["value"] = entry.value
    body["expires_at"] = entry.expires_at
    return body


def page_from_json(body: object) -> FeedPage:
    """Read a feed answer strictly; :class:`ValueError` when it is not one."""
    if not isinstance(body, Mapping):
        raise ValueError("not a feed page")
    cursor = body.get("cursor")
    snapshot = body.get("snapshot")
    rows = body.get("revocations")
    if not isinstance(cursor, str):
        raise ValueError("feed page without a cursor")
    parse_cursor(cursor)
    if not isinstance(snapshot, bool):
        raise ValueError("feed page without a snapshot flag")
    if not isinstance(rows, list):
        raise ValueError("feed page without revocations")
    retention = _number(body.get("retention"))
    if retention <= 0:
        raise ValueError("feed page with a non-positive retention")
    return FeedPage(cursor, snapshot, tuple(_entry(row) for row in rows), retention)


def _entry(row: object) -> FeedEntry:
    if not isinstance(row, Mapping):
        raise ValueError("malformed revocation")
    name = row.get("kind")
    kind = _KINDS.get(name) if isinstance(name, str) else None
    subject = row.get("subject")
    if kind is None:
        raise ValueError("unknown revocation kind")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise ValueError("malformed revocation subject")
    value = _number(row.get("value")) if kind == "epoch" else 0.0
    return FeedEntry(kind, subject, value, _number(row.get("expires_at")))


def _number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("expected a finite number")
    return float(value)

"""Revocation of access tokens: the live feed every process holds.

Three independent reasons kill an access token before its ``exp``:

* its ``jti`` is on the denylist (Bearer logout);
* its refresh family (``sid``) is revoked (logout, reuse, deletion, logout-all);
* it was issued before the user's *tokens valid after* epoch (logout-all,
  password change).

Every revocation is written to a feed in the database (one row each), and
every process keeps the live part of that feed in memory
(:class:`RevocationView`): the check on the request path is three dictionary
look-ups, whatever the number of revoked tokens, and needs no store round
trip. A process applies its own revocations at once and reads the others' at
most :data:`REVOCATION_POLL_SECONDS` later. Entries are dropped once every
token they could concern has expired (access-token TTL + leeway).

Feed IDs do not commit in order. On PostgreSQL a writer takes its ID from the
sequence when it inserts, and commits later: a revocation holding ID 7 may
become visible after ID 8 was read. A reader that kept only "the highest ID
seen" would skip 7 for good, and its token would live until ``exp``. So the
view reads from a *floor*: every ID at or below it has been applied (or given
up, below). Each poll asks for every row above the floor, applies the IDs it
has not applied yet, remembers them, and moves the floor up over the IDs seen
without a hole. A missing ID (a hole) holds the floor, so every poll reads
again from there, until the lowest ID seen above the hole has been known here
for :data:`REVOCATION_GAP_SECONDS` (60 s); then the floor passes the hole.
Holes are normal and mostly permanent: a rolled-back transaction's ID never
commits, PostgreSQL may skip sequence values after a crash, and pruning leaves
one below the oldest live row. The rule misses only a revocation whose
transaction stays open more than 60 s after a higher-numbered one was read
here; revoking transactions run a few short statements, so the bound is
generous on purpose. (A commit-ordered cursor, the writer's transaction ID
against the reader's snapshot xmin, would need no bound but a PostgreSQL-only
column; SQLite serialises writers, so its IDs commit in order anyway.)

Costs: the poll stays one query; while a hole holds the floor it returns the
rows above it again, and IDs already applied are skipped, so each event is
applied once. Memory beyond the live entries is the set of IDs above the
floor: at most the events of one window (60 s plus a poll).

Other processes learn of a revocation at once when an event bus carries it
(:mod:`gatepass.events`; Redis pub/sub when scaled out): after every local
revoking write, :meth:`RevocationView.sync_quietly` reads the feed and announces
the entries it read there, and the others apply them from the message, with no
read of the feed each. The poll stays, as the net under the bus: an entry whose
announcement was lost is still read within :data:`REVOCATION_POLL_SECONDS`, and a
process that (re)subscribes reads the feed before it trusts its view again.
While the bus cannot vouch that events reach this process
(:meth:`~gatepass.events.EventBus.check_live`), no access token is accepted.

Resource servers follow this process's view over HTTP: every entry it applies
(from any source) is also numbered in its :class:`RevocationJournal`
(:mod:`gatepass.revocation_journal`), whose cursor, unlike feed IDs, only ever
moves forward in the order entries became known here.

The epoch is compared in whole seconds (``iat`` is a whole number) so that a
token issued just *after* a logout-all in the same second stays valid; a token
issued just *before* it in that second is still refused, because logout-all
also revokes every family of the user.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from gatepass._singleflight import SingleFlight
from gatepass.clock import Clock
from gatepass.errors import InvalidToken, StoreUnavailable
from gatepass.events import EventBus, LocalEventBus
from gatepass.revocation_journal import FeedEntry, RevocationJournal
from gatepass.stores.base import (
    BearerState,
    RevocationEvent,
    RevocationStore,
    UserRecord,
)
from gatepass.tokens import AccessClaims

logger = logging.getLogger("gatepass.revocation")

#: How stale another process's revocations may be here, normally.
REVOCATION_POLL_SECONDS = 1.0
#: How long a hole in the feed IDs may hold the floor before it is passed: a
#: revoking transaction that commits later than this after a higher-numbered one
#: was read would be missed (see the module docstring).
REVOCATION_GAP_SECONDS = 60.0
#: A pushed entry dated further ahead than this is refused (clocks of nodes differ
#: by less; a forged one would otherwise never be pruned).
PUSH_CLOCK_SKEW_SECONDS = 60.0
#: How often expired feed entries are dropped from memory and from the store.
PRUNE_SECONDS = 60.0
#: Feed entries read here are announced on the bus by the next local revoking write
#: within this long: the entry that write committed may have been read by a
#: concurrent poll just before, and must still be announced.
ANNOUNCE_WINDOW_SECONDS = 5.0


def check_not_revoked(claims: AccessClaims, state: BearerState) -> UserRecord:
    """The token's user, or :class:`InvalidToken` when ``state`` says the token is dead. Pure."""
    if state.user is None:
        raise InvalidToken("user no longer exists")
    if state.jti_revoked:
        raise InvalidToken("token revoked")
    if not state.family_live:
        raise InvalidToken("family revoked")
    if claims.iat < math.floor(max(state.user.tokens_valid_after, state.epoch)):
        raise InvalidToken("issued before the user's token epoch")
    return state.user


class RevocationView:
    """This process's copy of the live revocation feed.

    It reads the feed from a floor below which it has applied every ID, and
    remembers the IDs it has applied above it, so rows that commit out of ID
    order are still applied, once each (the module docstring gives the rule).
    """

    def __init__(
        self,
        store: RevocationStore,
        *,
        retention: float,
        clock: Clock,
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock
        self.bus: EventBus = bus if bus is not None else LocalEventBus()
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}
        self._epochs: dict[str, float] = {}
        self._created: dict[tuple[str, str], float] = {}
        #: Every feed ID at or below this has been applied or given up as a hole.
        self._floor = 0
        #: IDs above the floor already applied, with when they were first read here.
        self._seen: dict[int, float] = {}
        self._applied = 0
        self._synced_at = float("-inf")
        self._pruned_at = float("-inf")
        self._reads: SingleFlight[None, None] = SingleFlight()
        #: Entries read from the feed here and not announced on the bus yet, and
        #: entries received from the bus (no need to announce those again, once the
        #: feed shows the very same entry: a forged message must not silence a real
        #: one), each with when; both kept for :data:`ANNOUNCE_WINDOW_SECONDS`.
        self._unannounced: dict[int, tuple[RevocationEvent, float]] = {}
        self._pushed: dict[int, tuple[RevocationEvent, float]] = {}
        #: What resource servers follow: each change to this view, numbered.
        self.journal = RevocationJournal(clock=clock)

    async def sync(self) -> None:
        """Read feed entries this process has not applied yet (one query)."""
        events = await self._store.revocation_events(self._floor)
        now = self._clock()
        for event in events:
            if event.id > self._floor and event.id not in self._seen:
                self._seen[event.id] = now
                self._applied += 1
                self._apply(event)
                pushed = self._pushed.get(event.id)
                if pushed is None or pushed[0] != event:
                    self._unannounced[event.id] = (event, now)
        self._raise_floor(now)
        self._forget_announcements(now)
        self._synced_at = now
        if self._synced_at - self._pruned_at >= PRUNE_SECONDS:
            await self._prune()

    async def sync_if_stale(self) -> None:
        """Keep the view within :data:`REVOCATION_POLL_SECONDS` of the feed.

        Concurrent callers share one read of the feed and all wait for it, so no
        request is judged on a view older than that; if the read fails, every one
        of them fails (closed) with :class:`StoreUnavailable`.
        """
        if self._clock() - self._synced_at < REVOCATION_POLL_SECONDS:
            return
        await self._reads.run(None, self.sync)

    async def ensure_current(self) -> None:
        """Fail closed unless this view may judge a token now: the bus vouches that
        other processes' events reach it, and the feed was read within
        :data:`REVOCATION_POLL_SECONDS` (see :meth:`sync_if_stale`)."""
        self.bus.check_live()
        await self.sync_if_stale()

    def is_current(self) -> bool:
        """Whether :meth:`ensure_current` would pass now without reading the feed: the
        bus is live and the feed was read within :data:`REVOCATION_POLL_SECONDS`.
        Reads memory only, so a request thread may ask while the loop thread writes."""
        try:
            self.bus.check_live()
        except StoreUnavailable:
            return False
        return self._clock() - self._synced_at < REVOCATION_POLL_SECONDS

    async def sync_quietly(self) -> None:
        """Read the feed after a local write and announce what was read on the bus;
        a failure is logged, not raised.

        The write has committed, so the caller's request succeeded; if the feed
        cannot be read now, :meth:`sync_if_stale` fails closed until it can, and
        the other processes read the entry from the feed themselves.
        """
        try:
            await self.sync()
        except StoreUnavailable as exc:
            logger.warning("revocation feed not read after a revocation: %s", exc)
            return
        fresh = [event for event, _ in self._unannounced.values()]
        self._unannounced.clear()
        if fresh:
            await self.bus.publish_revocations(fresh, retention=self._retention, now=self._clock())

    def receive(self, events: Sequence[RevocationEvent]) -> None:
        """Apply entries another process announced (their feed rows are read again
        by the next poll, and applied idempotently)."""
        now = self._clock()
        for event in events:
            if event.created_at > now + PUSH_CLOCK_SKEW_SECONDS:
                # Never pruned if believed: a real entry is not from the future.
                logger.warning("ignored a pushed revocation dated in the future")
                continue
            if event.id > self._floor and event.id not in self._seen:
                self._apply(event)
            self._pushed[event.id] = (event, now)

    def _forget_announcements(self, now: float) -> None:
        horizon = now - ANNOUNCE_WINDOW_SECONDS
        for event_id in [i for i, (_, at) in self._unannounced.items() if at < horizon]:
            del self._unannounced[event_id]
        for event_id in [i for i, (_, at) in self._pushed.items() if at < horizon]:
            del self._pushed[event_id]

    def _raise_floor(self, now: float) -> None:
        """Move the floor over the IDs seen without a hole, and over a hole once
        the lowest ID seen above it is :data:`REVOCATION_GAP_SECONDS` old."""
        if not self._seen:
            return
        for event_id in sorted(self._seen):
            hole = event_id != self._floor + 1
            if hole and now - self._seen[event_id] < REVOCATION_GAP_SECONDS:
                break  # a lower ID may still commit: read again from the floor
            self._floor = event_id
            del self._seen[event_id]

    @property
    def floor(self) -> int:
        """The feed ID at or below which every entry has been applied (or given up)."""
        return self._floor

    @property
    def pending_ids(self) -> int:
        """How many IDs above the floor are remembered (bounded by one window)."""
        return len(self._seen)

    @property
    def applied(self) -> int:
        """How many feed entries this view has applied (each at most once)."""
        return self._applied

    def _apply(self, event: RevocationEvent) -> None:
        # The same entry often arrives twice (pushed, then read from the feed): the
        # journal gets it once, when it changes what this view refuses.
        changed = True
        if event.kind == "jti":
            changed = event.subject not in self._jtis
            self._jtis[event.subject] = event.created_at
        elif event.kind == "family":
            changed = event.subject not in self._families
            self._families[event.subject] = event.created_at
        elif event.kind == "epoch":
            current = self._epochs.get(event.subject)
            highest = max(0.0 if current is None else current, event.value)
            changed = current is None or highest > current
            self._epochs[event.subject] = highest
            self._created[("epoch", event.subject)] = event.created_at
        if changed:
            value = self._epochs[event.subject] if event.kind == "epoch" else 0.0
            expires_at = event.created_at + self._retention
            self.journal.record(FeedEntry(event.kind, event.subject, value, expires_at))

    def live_entries(self) -> tuple[FeedEntry, ...]:
        """Every entry of this view that still concerns a live token (a snapshot
        for resource servers), each with when it stops mattering."""
        horizon = self._clock() - self._retention
        entries = [
            FeedEntry("jti", jti, 0.0, created + self._retention)
            for jti, created in self._jtis.items()
            if created >= horizon
        ]
        entries += [
            FeedEntry("family", family, 0.0, created + self._retention)
            for family, created in self._families.items()
            if created >= horizon
        ]
        for user, value in self._epochs.items():
            created = self._created.get(("epoch", user), 0.0)
            if created >= horizon:
                entries.append(FeedEntry("epoch", user, value, created + self._retention))
        return tuple(entries)

    @property
    def retention(self) -> float:
        """Seconds after it was written that an entry still concerns a live token."""
        return self._retention

    async def _prune(self) -> None:
        horizon = self._clock() - self._retention
        self._jtis = {k: v for k, v in self._jtis.items() if v >= horizon}
        self._families = {k: v for k, v in self._families.items() if v >= horizon}
        stale = [k for k, v in self._created.items() if v < horizon]
        for key in stale:
            del self._created[key]
            self._epochs.pop(key[1], None)
        self._pruned_at = self._clock()
        await self._store.prune_revocations(horizon)

    def jti_revoked(self, jti: str) -> bool:
        return jti in self._jtis

    def family_revoked(self, family_id: str) -> bool:
        return family_id in self._families

    def epoch(self, user_id: str) -> float:
        return self._epochs.get(user_id, 0.0)

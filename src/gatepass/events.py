"""The event bus: how one process tells the others to drop what they cached.

Three events cross it:

* :class:`Revoked` carries revocation-feed entries (jti, family, epoch) a process
  has just written, so the others apply them at once instead of at their next
  poll of the feed;
* :class:`UserChanged` names a user whose credentials, roles or existence
  changed: every process drops that user's cached record and sessions;
* :class:`SessionsEnded` names browser sessions that ended (by ID hash, public
  handle or user): every process drops them from its session cache.

The bus is a fast path, never the record: the durable revocation feed in the
database stays authoritative, and a process that (re)subscribes reads it first
(:meth:`EventListener.catch_up`), so an event missed while it was away is not
lost. Every event only ever makes a process trust *less* (drop a cache, refuse a
token): a forged or replayed one cannot grant anything.

:class:`LocalEventBus` is the embedded default (one process, or several that
follow the feed by polling every second, as before): it publishes nothing and is
always live. :class:`gatepass.stores.redis_events.RedisEventBus` is the
scaled-out one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gatepass.stores.base import RevocationEvent


@dataclass(frozen=True, slots=True)
class Revoked:
    """Revocation-feed entries, as committed to the durable feed."""

    events: tuple[RevocationEvent, ...]


@dataclass(frozen=True, slots=True)
class UserChanged:
    """A user's credentials, roles or existence changed."""

    user_id: str


@dataclass(frozen=True, slots=True)
class SessionsEnded:
    """Browser sessions that ended: by ID hash (SHA-256 of the secret ID, never the
    ID), by public handle, or every session of ``user_id``."""

    id_hashes: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    user_id: str | None = None


Event = Revoked | UserChanged | SessionsEnded


class EventListener(Protocol):
    """What a process does with the events of the others."""

    async def catch_up(self) -> None:
        """Read whatever may have been missed (the durable feed) and drop every
        cache that events could have invalidated meanwhile. Called after every
        (re)subscription, before the bus reports itself live; raises
        :class:`~gatepass.errors.StoreUnavailable` when that read fails."""
        ...

    def receive(self, event: Event) -> None:
        """Apply another process's event (never blocks, never raises)."""
        ...


class EventBus(Protocol):
    """Publishes this process's events and delivers the others' to a listener."""

    #: Names the backend in health reports (``/healthz``).
    name: str

    async def start(self, listener: EventListener) -> None:
        """Subscribe, delivering events to ``listener`` until :meth:`close`."""
        ...

    async def close(self) -> None: ...

    async def publish_revocations(
        self, events: Sequence[RevocationEvent], *, retention: float, now: float
    ) -> None:
        """Announce feed entries that are committed to the durable feed.

        ``retention`` is how long after its ``created_at`` an entry still concerns
        a live token (the access-token TTL plus leeway). Never raises: the entries
        are committed, and the others read them from the feed anyway.
        """
        ...

    def announce(self, event: UserChanged | SessionsEnded) -> None:
        """Publish ``event`` in the background (called from sync code paths)."""
        ...

    def check_live(self) -> None:
        """Raise :class:`~gatepass.errors.StoreUnavailable` (naming the bus) when
        events from other processes may not be reaching this one right now, so no
        request is judged on caches they could have invalidated."""
        ...


class LocalEventBus:
    """No bus: a single process needs none, and several on one database follow the
    revocation feed by polling (:data:`gatepass.revocation.REVOCATION_POLL_SECONDS`)."""

    name = "local"

    async def start(self, listener: EventListener) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish_revocations(
        self, events: Sequence[RevocationEvent], *, retention: float, now: float
    ) -> None:
        return None

    def announce(self, event: UserChanged | SessionsEnded) -> None:
        return None

    def check_live(self) -> None:
        return None

    def __repr__(self) -> str:
        return "LocalEventBus()"

"""The event bus over Redis pub/sub, and the revocation fast-path keys.

One channel (:data:`DEFAULT_CHANNEL`) carries every event as a small JSON
message (:mod:`gatepass.event_wire` writes and reads it). Plain ``PUBLISH``,
not sharded pub/sub: in a Redis Cluster a plain publish reaches the
subscribers of every node (the cluster bus forwards it), so a subscriber may
sit on any node and needs no slot ownership; sharded pub/sub
would confine the traffic to one shard, but its subscribers are unsubscribed on
every slot migration or failover. Revocations are rare, so forwarding each to
every node costs nothing worth that.

Each process keeps one subscriber task. It subscribes, then reads the durable
feed (the listener's catch-up, so nothing published while it was away is lost),
and only then reports itself live. While subscribed it sends ``PING`` through
the subscription connection every :data:`HEARTBEAT_SECONDS`; the bus is live
only while an answer (or a message) came within :data:`LIVENESS_SECONDS`, so a
connection that dies without a reset is noticed within a second, as is one that
drops. A connection error, a silent reconnect by the driver (it would resubscribe
without the catch-up) or a heartbeat left unanswered tears the subscription
down; the task subscribes again after a backoff, by itself, for as long as the
process runs.

Fast-path keys, written before each announcement (single-key commands, each key
hash-tagged on its own subject, so nothing ever spans two Cluster slots): the
jti denylist ``gatepass:revoked:jti:{<jti>}``, family flags
``gatepass:revoked:family:{<id>}`` and user epochs
``gatepass:revoked:epoch:{<user>}`` (the highest epoch, kept by a one-key
script). Each lives until every token it could concern has expired (its
``created_at`` + access-token TTL + leeway). They are for readers that share the
Redis but not the feed; the durable record stays the feed in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import RedisCluster

from gatepass import event_wire
from gatepass.errors import StoreUnavailable
from gatepass.event_wire import DEFAULT_CHANNEL as DEFAULT_CHANNEL  # re-exported
from gatepass.event_wire import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES  # re-exported
from gatepass.event_wire import WIRE_VERSION as WIRE_VERSION  # re-exported
from gatepass.events import EventListener, SessionsEnded, UserChanged
from gatepass.stores.base import RevocationEvent
from gatepass.stores.redis_connection import RedisClient, redis_errors_mapped

logger = logging.getLogger("gatepass.events")

DEFAULT_PREFIX = "gatepass"
#: How often the subscriber pings Redis through its own connection.
HEARTBEAT_SECONDS = 0.25
#: The bus is live only while Redis answered the subscriber this recently.
LIVENESS_SECONDS = 0.9
#: A subscription unanswered this long is torn down and made again.
RECONNECT_AFTER_SECONDS = 2.0
BACKOFF_MIN_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0
#: :meth:`RedisEventBus.start` waits this long for the first subscription.
START_TIMEOUT_SECONDS = 5.0
#: Background announcements in flight at most; beyond it they are dropped (the
#: caches they would clear expire by themselves within seconds).
MAX_PENDING_ANNOUNCEMENTS = 1000

# The epoch key keeps the highest value; its TTL only ever grows.
_KEEP_HIGHEST = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class RedisEventBus:
    """:class:`~gatepass.events.EventBus` over Redis pub/sub (standalone or Cluster).

    ``client`` comes from :func:`gatepass.stores.redis_connection.connect`; the bus
    does not close it (it may be shared with other stores) unless
    ``close_client`` is set.
    """

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        channel: str = DEFAULT_CHANNEL,
        key_prefix: str = DEFAULT_PREFIX,
        close_client: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._channel = channel
        self._prefix = key_prefix
        self._close_client = close_client
        self._monotonic = monotonic
        #: Our own messages come back to us; they are skipped by this tag.
        self._node = secrets.token_hex(8)
        self._listener: EventListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._live = False
        self._confirmed_at = -math.inf
        self._down_reason = "not subscribed yet"
        self._reconnected = False
        self._became_live: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"RedisEventBus(channel={self._channel!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EventListener) -> None:
        """Start the subscriber task and wait (a few seconds at most) until it is
        live; if Redis is not reachable yet, Bearer requests are refused until it is."""
        if self._task is not None:
            raise RuntimeError("the event bus is already started")
        self._listener = listener
        self._became_live = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="gatepass-redis-events")
        try:
            await asyncio.wait_for(self._became_live.wait(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning(
                "redis event bus not subscribed after %.0f s (%s); access tokens are "
                "refused until it is",
                START_TIMEOUT_SECONDS,
                self._down_reason,
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            # Announcements are quick; give them a moment, then stop waiting.
            _, late = await asyncio.wait(set(self._pending), timeout=1.0)
            for straggler in late:
                straggler.cancel()
        self._live = False
        self._down_reason = "closed"
        if self._close_client:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # -- health ----------------------------------------------------------------------

    def check_live(self) -> None:
        if not self._live:
            raise StoreUnavailable(f"redis pub/sub is down: {self._down_reason}")
        silent = self._monotonic() - self._confirmed_at
        if silent > LIVENESS_SECONDS:
            raise StoreUnavailable(f"redis pub/sub has not answered for {silent:.1f} s")

    @property
    def live(self) -> bool:
        """Whether :meth:`check_live` passes now."""
        try:
            self.check_live()
        except StoreUnavailable:
            return False
        return True

    # -- publishing ------------------------------------------------------------------

    def key(self, kind: str, subject: str) -> str:
        """The fast-path key of one revocation (``kind``: jti, family or epoch)."""
        return f"{self._prefix}:revoked:{kind}:{{{subject}}}"

    async def publish_revocations(
        self, events: Sequence[RevocationEvent], *, retention: float, now: float
    ) -> None:
        if not events:
            return
        # Announced first and on its own: the push is what other nodes act on at
        # once; the fast-path keys only serve readers without the database.
        try:
            with redis_errors_mapped():
                await self._client.publish(self._channel, self._encode_revoked(events))
        except StoreUnavailable as exc:
            logger.warning(
                "revocations not announced (other nodes read them from the feed): %s", exc
            )
        try:
            with redis_errors_mapped():
                await self._write_fast_path(events, retention, now)
        except StoreUnavailable as exc:
            logger.warning("revocation fast-path keys not written: %s", exc)

    async def _write_fast_path(
        self, events: Sequence[RevocationEvent], retention: float, now: float
    ) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in events:
            ttl = max(1, math.ceil(event.created_at + retention - now))
            key = self.key(event.kind, event.subject)
            if event.kind == "epoch":
                pipe.eval(_KEEP_HIGHEST, 1, key, repr(event.value), ttl)
            else:
                pipe.set(key, repr(event.created_at), ex=ttl)
        await pipe.execute()

    def announce(self, event: UserChanged | SessionsEnded) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no request in flight: nothing cached to tell about
        if len(self._pending) >= MAX_PENDING_ANNOUNCEMENTS:
            logger.warning("event not announced: too many announcements in flight")
            return
        task = loop.create_task(self._publish_quietly(self._encode(event)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish_quietly(self, payload: bytes) -> None:
        try:
            with redis_errors_mapped():
                await self._client.publish(self._channel, payload)
        except StoreUnavailable as exc:
            logger.warning(
                "event not announced (other nodes' caches expire by themselves): %s", exc
            )

    # -- wire format -----------------------------------------------------------------

    def _encode_revoked(self, events: Sequence[RevocationEvent]) -> bytes:
        return event_wire.encode_revoked(events, self._node)

    def _encode(self, event: UserChanged | SessionsEnded) -> bytes:
        return event_wire.encode(event, self._node)

    # -- subscribing -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN_SECONDS
        while True:
            was_live = False
            try:
                was_live = await self._subscribe_and_listen()
            except StoreUnavailable as exc:
                self._mark_down(str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever went wrong, the task must live on and try again: a dead
                # subscriber would leave this node refusing every token for good.
                # (The driver can fail this way while Redis restarts, e.g. a write to
                # a transport it closed: one line, the traceback only at debug level.)
                logger.warning(
                    "redis event subscriber failed: %s: %s", type(exc).__name__, str(exc)[:200]
                )
                logger.debug("redis event subscriber failure", exc_info=True)
                self._mark_down(f"subscriber failed: {type(exc).__name__}")
            if was_live:
                delay = BACKOFF_MIN_SECONDS
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _mark_down(self, reason: str) -> None:
        if self._live:
            logger.error("redis pub/sub lost (%s): access tokens refused until it is back", reason)
        self._live = False
        self._down_reason = reason

    async def _subscribe_and_listen(self) -> bool:
        """One subscription, from subscribe to teardown; returns (by raising) only when
        it ends. Reports whether it became live."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("the event bus is not started")
        if isinstance(self._client, RedisCluster):
            # The Cluster client picks the subscription's node from its slot map,
            # which it must have read first (a no-op once it has).
            with redis_errors_mapped():
                await self._client.initialize()
        pubsub: Any = self._client.pubsub()
        live = False
        try:
            with redis_errors_mapped():
                await pubsub.subscribe(self._channel)
                confirmation = await pubsub.get_message(timeout=RECONNECT_AFTER_SECONDS)
            if confirmation is None or confirmation["type"] != "subscribe":
                raise StoreUnavailable("redis pub/sub: no subscription confirmation")
            connection = pubsub.connection
            if connection is None:
                raise StoreUnavailable("redis pub/sub: no connection")
            # The driver reconnects and resubscribes by itself on some errors; that
            # would skip the catch-up, so any reconnect ends this subscription.
            self._reconnected = False
            connection.register_connect_callback(self._on_reconnect)
            # Subscribed first, then the feed: whatever is published from here on is
            # either in the read or waiting on the connection.
            await listener.catch_up()
            self._confirmed_at = self._monotonic()
            self._live = live = True
            self._down_reason = ""
            logger.info("redis pub/sub subscribed on %s", self._channel)
            if self._became_live is not None:
                self._became_live.set()
            await self._listen(pubsub)
        finally:
            self._live = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        return live

    async def _on_reconnect(self, connection: object) -> None:
        self._reconnected = True
        self._live = False

    async def _listen(self, pubsub: Any) -> None:
        next_ping = self._monotonic()
        while True:
            now = self._monotonic()
            if self._reconnected:
                raise StoreUnavailable("redis pub/sub connection was re-established")
            if now - self._confirmed_at > RECONNECT_AFTER_SECONDS:
                raise StoreUnavailable("redis pub/sub stopped answering")
            with redis_errors_mapped():
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + HEARTBEAT_SECONDS
                message = await pubsub.get_message(timeout=max(0.0, next_ping - now))
            if message is None or self._reconnected:
                continue
            kind = message["type"]
            if kind == "pong":
                self._confirmed_at = self._monotonic()
            elif kind == "message":
                self._confirmed_at = self._monotonic()
                self._deliver(message["data"])
            elif kind in ("unsubscribe", "sunsubscribe"):
                raise StoreUnavailable("redis pub/sub unsubscribed by the server")

    def _deliver(self, data: object) -> None:
        if self._listener is None:
            return
        try:
            parsed = event_wire.decode(data, self._node)
        except Exception:  # anyone who can publish on the channel can send anything
            # A message on our channel that is not ours (malformed, huge, nested
            # past the parser's depth): say so, never echo it, keep listening.
            logger.warning("ignored a malformed message on the redis event channel")
            return
        if parsed is not None:
            self._listener.receive(parsed)

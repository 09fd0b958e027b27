"""Revocations as a resource server learns them from the auth server.

:class:`RevocationFeed` follows the auth server's revocation feed
(``GET /auth/revocations``, docs/revocation-feed.md) from a daemon thread: a
long poll that the server answers at once when something is revoked, and
otherwise after the poll wait with no entries, which still proves the feed is
current. The entries land in memory (a jti denylist, revoked refresh families,
per-user epochs), so :meth:`RevocationFeed.check` is three dictionary look-ups
with no I/O, from any thread and from async code alike.

It fails closed: until the first snapshot has arrived, and whenever the last
answer from the server is older than ``max_staleness``, :meth:`~RevocationFeed.check`
raises :class:`~gatepass.errors.RevocationsStale` (a 503, like any store that
cannot be reached) instead of vouching for a token it might not know is dead.

With ``redis_url`` it also subscribes to the auth server's Redis channel
(:mod:`gatepass.event_wire`) and applies the revocations announced there as they
come; the HTTP feed stays the source of the snapshot and of the freshness
bound, so a lost Redis connection costs speed, never safety.

The thread starts with the feed and again, lazily, in a child after ``fork``
(gunicorn's pre-fork workers): the child keeps what the parent knew, and its own
thread carries on from the parent's cursor.

This module imports nothing of the server stack: no store, no settings, no web
framework.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol, Self
from urllib.parse import urlsplit

import httpx

from gatepass import event_wire
from gatepass.clock import Clock
from gatepass.errors import InvalidToken, RevocationsStale
from gatepass.events import Revoked
from gatepass.revocation_journal import FeedEntry, FeedPage, page_from_json
from gatepass.stores.base import RevocationEvent
from gatepass.tokens import AccessClaims

logger = logging.getLogger("gatepass.verifier.revocations")

#: The feed's path on the auth server.
FEED_PATH = "/auth/revocations"
#: How long after the server's last answer :meth:`RevocationFeed.check` still trusts
#: what it holds. An outage of the auth server longer than this makes every token
#: refused (503) until it answers again.
DEFAULT_MAX_STALENESS = 30.0
#: How long the server holds a poll open while nothing is new (it answers at once
#: when something is); well below :data:`DEFAULT_MAX_STALENESS`, so an answer
#: arrives several times within the bound.
DEFAULT_POLL_WAIT = 10.0
#: The longest poll wait the server accepts.
MAX_POLL_WAIT = 30.0
#: Entries are kept this long past the ``expires_at`` the server gave, against a
#: clock here running ahead of the server's.
EXPIRY_MARGIN_SECONDS = 60.0
#: How often expired entries are dropped from memory.
PRUNE_SECONDS = 60.0
#: A pushed entry dated further ahead than this is ignored (it would never expire).
PUSH_CLOCK_SKEW_SECONDS = 60.0
#: Until a feed answer gives the server's retention, pushed entries are kept this long.
FALLBACK_RETENTION_SECONDS = 86_400.0
CONNECT_TIMEOUT_SECONDS = 5.0
#: A poll is given up when its answer is this much later than the wait asked for.
READ_MARGIN_SECONDS = 5.0
BACKOFF_MIN_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0
#: How long :meth:`RevocationFeed.close` waits for the threads (they are daemons).
CLOSE_JOIN_SECONDS = 0.25
#: The Redis subscriber wakes this often to notice :meth:`RevocationFeed.close`.
REDIS_READ_SECONDS = 1.0


class _PollFailed(Exception):
    """One poll got no usable answer (``reason`` is for logs: no secret in it)."""


class RevocationFeed:
    """What the auth server revoked, kept current from its feed (thread-safe).

    ``url`` is the auth server's base URL (``http://host:port``, the feed is at
    :data:`FEED_PATH` below it) and ``token`` its ``GATEPASS_REVOCATION_FEED_TOKEN``.
    ``max_staleness`` bounds how old the last answer may be before every token is
    refused; ``poll_wait`` (default: the smaller of :data:`DEFAULT_POLL_WAIT` and a
    third of ``max_staleness``) must be at most half of it. ``redis_url``
    (``redis://``, ``rediss://``; in a Redis Cluster the URL of any one node)
    subscribes to the server's event channel as well.

    The thread starts at once unless ``start`` is false; :meth:`wait_until_ready`
    waits for the first snapshot. Use :meth:`close` (or ``with``) to stop it.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        poll_wait: float | None = None,
        redis_url: str | None = None,
        redis_channel: str = event_wire.DEFAULT_CHANNEL,
        start: bool = True,
        clock: Clock = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be the auth server's http(s) base URL")
        if parts.query or parts.fragment:
            raise ValueError("url must have no query or fragment")
        if not token or token != token.strip() or any(c in token for c in "\r\n"):
            raise ValueError("token must be the feed token, without white space")
        if not (math.isfinite(max_staleness) and max_staleness > 0):
            raise ValueError("max_staleness must be a positive number of seconds")
        wait = min(DEFAULT_POLL_WAIT, max_staleness / 3) if poll_wait is None else poll_wait
        if not (math.isfinite(wait) and 0 < wait <= MAX_POLL_WAIT):
            raise ValueError(f"poll_wait must be seconds in (0, {MAX_POLL_WAIT}]")
        if wait > max_staleness / 2:
            # Else an idle feed's heartbeat could come too late to keep it fresh.
            raise ValueError("poll_wait must be at most half of max_staleness")
        if redis_url is not None and urlsplit(redis_url).scheme not in (
            "redis",
            "rediss",
            "unix",
        ):
            raise ValueError(
                "redis_url must be redis://, rediss:// or unix:// (in a Redis Cluster, "
                "the URL of any one node: the server's plain PUBLISH reaches them all)"
            )
        self._url = url.rstrip("/") + FEED_PATH
        self._token = token
        self._max_staleness = float(max_staleness)
        self._poll_wait = round(wait, 3) or 0.001
        self._redis_url = redis_url
        self._redis_channel = redis_channel
        self._clock = clock
        self._monotonic = monotonic
        #: Our tag on the channel; we never publish, so no message carries it.
        self._node = secrets.token_hex(8)

        # What the feed says: subject -> keep until (seconds since the epoch); epochs
        # as user -> (value, keep until). Only the poller threads write them, under
        # the lock; check() reads without it (single look-ups are atomic).
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}
        self._epochs: dict[str, tuple[float, float]] = {}
        self._cursor: str | None = None
        self._retention: float | None = None
        self._fresh_at = -math.inf
        self._pruned_at = -math.inf
        self._down_reason: str | None = None
        self._closed = False
        self._init_process_state()
        _FEEDS.add(self)
        if start:
            self._ensure_running()

    def _init_process_state(self) -> None:
        """What belongs to one process: locks, threads, connections."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._ready = threading.Event()
        if self._fresh_at > -math.inf:
            self._ready.set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _after_fork_in_child(self) -> None:
        # The parent's threads did not come along; its connections are dropped, not
        # closed (closing them could end the parent's sessions).
        self._init_process_state()

    def __repr__(self) -> str:
        return f"RevocationFeed({self._url!r}, max_staleness={self._max_staleness})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the check on every request ----------------------------------------------------

    def check(self, claims: AccessClaims) -> None:
        """Raise :class:`InvalidToken` when the token was revoked, and
        :class:`RevocationsStale` when the feed cannot vouch for it (no snapshot yet,
        or the last answer older than ``max_staleness``)."""
        if not self._threads:
            self._ensure_running()
        age = self._monotonic() - self._fresh_at
        if age > self._max_staleness:
            if self._fresh_at == -math.inf:
                raise RevocationsStale("no revocation snapshot yet", store="revocation feed")
            raise RevocationsStale(
                f"revocation feed last heard from {age:.1f} s ago "
                f"(bound {self._max_staleness:g} s)",
                store="revocation feed",
            )
        if claims.jti in self._jtis:
            raise InvalidToken("token revoked")
        if claims.sid in self._families:
            raise InvalidToken("family revoked")
        epoch = self._epochs.get(claims.sub)
        # Whole seconds, as the server compares (gatepass.revocation.check_not_revoked).
        if epoch is not None and claims.iat < math.floor(epoch[0]):
            raise InvalidToken("issued before the user's token epoch")

    @property
    def staleness(self) -> float:
        """Seconds since the server last answered (``inf`` before the first answer)."""
        return self._monotonic() - self._fresh_at

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first snapshot; whether it came."""
        self._ensure_running()
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop the threads (a poll in flight is abandoned, not waited for)."""
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(CLOSE_JOIN_SECONDS)
        _FEEDS.discard(self)

    # -- threads -----------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._closed:
            raise RuntimeError("the revocation feed is closed")
        with self._start_lock:
            if self._threads:
                return
            stop = self._stop
            targets: list[tuple[str, Callable[[threading.Event], None]]] = [
                ("gatepass-revocations", self._poll_forever)
            ]
            if self._redis_url is not None:
                targets.append(("gatepass-revocations-redis", self._listen_forever))
            threads = [
                threading.Thread(target=target, args=(stop,), name=name, daemon=True)
                for name, target in targets
            ]
            for thread in threads:
                thread.start()
            self._threads = threads

    def _poll_forever(self, stop: threading.Event) -> None:
        delay = BACKOFF_MIN_SECONDS
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        with httpx.Client(headers=headers, follow_redirects=False, trust_env=False) as client:
            while not stop.is_set():
                try:
                    page = self._poll_once(client)
                except _PollFailed as exc:
                    self._note_down(str(exc))
                    stop.wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                    continue
                if stop.is_set():
                    return
                self._apply_page(page, self._monotonic())
                delay = BACKOFF_MIN_SECONDS

    def _poll_once(self, client: httpx.Client) -> FeedPage:
        cursor = self._cursor
        # The first poll, and the first after a failure, ask for an answer now: a
        # server that is back makes the feed fresh at once, not after a poll wait.
        steady = cursor is not None and self._ready.is_set() and self._down_reason is None
        wait = self._poll_wait if steady else 0.0
        params = {"wait": f"{wait:.3f}"}
        if cursor is not None:
            params["cursor"] = cursor
        timeout = httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=wait + READ_MARGIN_SECONDS)
        try:
            response = client.get(self._url, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _PollFailed(f"feed unreachable: {type(exc).__name__}") from None
        if response.status_code in (401, 403, 404):
            # A wrong token or a feed that is off: a setting to fix, said loudly.
            raise _PollFailed(f"feed refused this client: HTTP {response.status_code}")
        if response.status_code != 200:
            raise _PollFailed(f"feed answered HTTP {response.status_code}")
        try:
            return page_from_json(response.json())
        except ValueError:  # json's errors are ValueErrors too
            raise _PollFailed("feed answer is malformed") from None

    def _listen_forever(self, stop: threading.Event) -> None:
        import redis  # the verifier extra; loaded only by feeds that subscribe

        url = self._redis_url
        if url is None:
            return
        delay = BACKOFF_MIN_SECONDS
        while not stop.is_set():
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_keepalive=True,
                health_check_interval=5,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._redis_channel)
                delay = BACKOFF_MIN_SECONDS
                while not stop.is_set():
                    message = pubsub.get_message(timeout=REDIS_READ_SECONDS)
                    if message is not None and message.get("type") == "message":
                        self._receive(message.get("data"))
            except (redis.RedisError, OSError) as exc:
                logger.warning("revocation channel lost (%s); retrying", type(exc).__name__)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except (redis.RedisError, OSError):
                    pass
            stop.wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    # -- applying what the server says ---------------------------------------------------

    def _apply_page(self, page: FeedPage, received_at: float) -> None:
        with self._lock:
            # A snapshot is merged, never swapped in: no entry is ever taken back, and
            # one pushed over Redis may not have reached the answering node yet.
            for entry in page.entries:
                self._add(entry)
            self._cursor = page.cursor
            self._retention = page.retention
            self._fresh_at = received_at
            if self._clock() - self._pruned_at >= PRUNE_SECONDS:
                self._prune()
        self._ready.set()
        if self._down_reason is not None:
            logger.warning("revocation feed is answering again")
            self._down_reason = None

    def _receive(self, data: object) -> None:
        try:
            event = event_wire.decode(data, self._node)
        except Exception:  # anyone who can publish on the channel can send anything
            logger.warning("ignored a malformed message on the revocation channel")
            return
        if not isinstance(event, Revoked):
            return
        now = self._clock()
        with self._lock:
            retention = self._retention or FALLBACK_RETENTION_SECONDS
            for pushed in event.events:
                if pushed.created_at > now + PUSH_CLOCK_SKEW_SECONDS:
                    logger.warning("ignored a pushed revocation dated in the future")
                    continue
                self._add(_entry_of(pushed, retention))

    def _add(self, entry: FeedEntry) -> None:
        keep_until = entry.expires_at + EXPIRY_MARGIN_SECONDS
        if entry.kind == "jti":
            self._jtis[entry.subject] = max(keep_until, self._jtis.get(entry.subject, 0.0))
        elif entry.kind == "family":
            current = self._families.get(entry.subject, 0.0)
            self._families[entry.subject] = max(keep_until, current)
        else:
            value, until = self._epochs.get(entry.subject, (0.0, 0.0))
            self._epochs[entry.subject] = (max(value, entry.value), max(until, keep_until))

    def _prune(self) -> None:
        now = self._clock()
        # New dicts, swapped in whole: check() may be reading the old ones.
        self._jtis = {k: until for k, until in self._jtis.items() if until >= now}
        self._families = {k: until for k, until in self._families.items() if until >= now}
        self._epochs = {k: entry for k, entry in self._epochs.items() if entry[1] >= now}
        self._pruned_at = now

    def _note_down(self, reason: str) -> None:
        if self._down_reason != reason:
            logger.warning(
                "revocation feed: %s; tokens are refused once it is %g s stale",
                reason,
                self._max_staleness,
            )
            self._down_reason = reason


def _entry_of(event: RevocationEvent, retention: float) -> FeedEntry:
    value = event.value if event.kind == "epoch" else 0.0
    return FeedEntry(event.kind, event.subject, value, event.created_at + retention)


#: Every open feed of this process, so a forked child can restart them.
_FEEDS: weakref.WeakSet[RevocationFeed] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for feed in list(_FEEDS):
        feed._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)


class RevocationSource(Protocol):
    """What a verifier asks about a token whose signature and claims passed."""

    def check(self, claims: AccessClaims) -> None:
        """Raise :class:`~gatepass.errors.InvalidToken` when the token was revoked, and
        :class:`~gatepass.errors.RevocationsStale` when this source cannot vouch that
        it knows every revocation up to its bound."""
        ...

    def close(self) -> None:
        """Stop whatever the source runs in the background."""
        ...

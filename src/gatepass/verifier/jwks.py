"""The issuer's JWKS as a resource server holds it: fetched, cached, refreshed, bounded.

One key set is held in memory and read without I/O on every verification. It is
fetched again:

- ahead of expiry: once :data:`REFRESH_AHEAD` of its lifetime is left, by one
  caller while every other keeps using the current set;
- when a token names a ``kid`` the set lacks (a key rotated in at the issuer);
- when no usable set is held (first use, or past the stale limit).

Every fetch, whatever its reason, starts at most once per ``cooldown`` seconds,
and concurrent callers share the one in flight (threads for :class:`JwksCache`,
tasks for :class:`AsyncJwksCache`). So a flood of tokens with made-up ``kid``
values costs the issuer one request per cooldown, not one per token.

The lifetime is the response's ``Cache-Control: max-age``, clamped to
[``min_cache_seconds``, ``max_cache_seconds``] (defaults :data:`MIN_CACHE_SECONDS`,
:data:`MAX_CACHE_SECONDS`); :data:`DEFAULT_CACHE_SECONDS` without one. A failed
fetch (connection refused, timeout, a status other than 200, a redirect, a body
over :data:`MAX_JWKS_BYTES`, anything but a JSON object with a ``keys`` list)
keeps the last good set until ``stale_limit`` seconds past its expiry; after
that every verification fails closed with :class:`~gatepass.errors.KeysUnavailable`.

Each entry goes through :func:`gatepass.tokens.key_from_jwk`; one it refuses is
skipped with one log line (its position and the reason, never key material).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from gatepass._addresses import is_loopback_host
from gatepass.clock import Clock
from gatepass.errors import KeysUnavailable
from gatepass.tokens import PublicKey, key_from_jwk

logger = logging.getLogger("gatepass.verifier")

JWKS_PATH = "/.well-known/jwks.json"
#: Bounds on the cache lifetime the issuer's ``Cache-Control: max-age`` asks for:
#: below the lower one a JWKS endpoint could make every verifier poll it; above the
#: upper one a removed key would linger.
MIN_CACHE_SECONDS = 30.0
MAX_CACHE_SECONDS = 3600.0
#: Lifetime of a response without ``max-age``.
DEFAULT_CACHE_SECONDS = 300.0
#: The set is fetched again once this fraction of its lifetime is left.
REFRESH_AHEAD = 0.2
#: Fetches (for an unknown ``kid``, a retry after an error, or a due refresh) start
#: at most this often.
DEFAULT_COOLDOWN = 10.0
#: How long past its expiry the last good set is used while fetches fail. As long as
#: the default access-token lifetime: a token issued just before an outage of the
#: issuer still verifies for as long as it lives.
DEFAULT_STALE_LIMIT = 900.0
#: The largest JWKS body read; a longer one is a failed fetch.
MAX_JWKS_BYTES = 64 * 1024
#: Connect, read and write timeout of the HTTP client the cache creates.
DEFAULT_TIMEOUT = 5.0

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


def jwks_url_for(issuer: str) -> str:
    """Where gatepass publishes an issuer's keys: ``<issuer>/.well-known/jwks.json``."""
    return issuer.rstrip("/") + JWKS_PATH


def check_jwks_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """``url`` if keys may be fetched from it, else :class:`ValueError`.

    Only ``https``, or ``http`` to a loopback host; plain ``http`` elsewhere lets
    anyone on the path hand the verifier their own keys, so it takes an explicit
    ``allow_insecure_http=True``. Credentials in the URL are refused (they would
    reach logs).
    """
    return check_fetch_url(url, "the JWKS URL", allow_insecure_http=allow_insecure_http)


def check_fetch_url(url: str, what: str, *, allow_insecure_http: bool = False) -> str:
    """The rule of :func:`check_jwks_url` for any URL a verifier trusts the answers
    of (the JWKS, the revocation feed); ``what`` names it in the error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what} must be http or https")
    host = parts.hostname
    if not host:
        raise ValueError(f"{what} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not carry credentials")
    if parts.scheme == "http" and not is_loopback_host(host) and not allow_insecure_http:
        raise ValueError(
            f"{what} must be https unless its host is loopback "
            "(allow_insecure_http=True accepts plain http anyway)"
        )
    return url


def cache_seconds(cache_control: str | None, *, lower: float, upper: float) -> float:
    """The lifetime a ``Cache-Control`` value asks for, clamped to [lower, upper]."""
    if cache_control is None:
        return min(max(DEFAULT_CACHE_SECONDS, lower), upper)
    if _NO_CACHE.search(cache_control):
        return lower
    match = _MAX_AGE.search(cache_control)
    asked = float(match.group(1)) if match else DEFAULT_CACHE_SECONDS
    return min(max(asked, lower), upper)


class FetchFailed(Exception):
    """A JWKS fetch gave nothing usable; ``str()`` says why, for a log line."""


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def parse_jwks(body: bytes) -> dict[str, PublicKey]:
    """The usable keys of a JWKS document by ``kid``, or :class:`FetchFailed` when it
    is not a JSON object with a ``keys`` list. Entries are checked one by one."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise FetchFailed("the JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchFailed("the JWKS is not an object with a keys list")
    keys: dict[str, PublicKey] = {}
    ambiguous: set[str] = set()
    for position, entry in enumerate(document["keys"]):
        if not isinstance(entry, dict):
            logger.warning("JWKS entry %d skipped: not an object", position)
            continue
        try:
            key = key_from_jwk(entry)
        except ValueError as exc:
            logger.warning("JWKS entry %d skipped: %s", position, exc)
            continue
        if key.kid in keys or key.kid in ambiguous:
            # Two keys under one kid: which one a token means is anyone's guess.
            logger.warning("JWKS entry %d skipped: its kid is not unique", position)
            keys.pop(key.kid, None)
            ambiguous.add(key.kid)
            continue
        keys[key.kid] = key
    return keys


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    if response.status_code != 200:
        raise FetchFailed(f"HTTP status {response.status_code}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Asked for identity: a compressed body could inflate past any cap.
        raise FetchFailed("the JWKS came compressed")
    length = response.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise FetchFailed(f"the JWKS is over {max_bytes} bytes")


_REQUEST_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
_FETCH_ERRORS = (httpx.HTTPError, httpx.StreamError, OSError)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A good JWKS response: its keys and the lifetime it asked for (unclamped header)."""

    keys: dict[str, PublicKey]
    cache_control: str | None


def fetch_jwks(client: httpx.Client, url: str, max_bytes: int = MAX_JWKS_BYTES) -> Fetched:
    """One GET of the JWKS, body capped at ``max_bytes``; :class:`FetchFailed` otherwise."""
    try:
        with client.stream(
            "GET", url, headers=_REQUEST_HEADERS, follow_redirects=False
        ) as response:
            _check_response(response, max_bytes)
            body = bytearray()
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchFailed(f"the JWKS is over {max_bytes} bytes")
    except _FETCH_ERRORS as exc:
        raise FetchFailed(type(exc).__name__) from None
    return Fetched(parse_jwks(bytes(body)), response.headers.get("cache-control"))


async def afetch_jwks(
    client: httpx.AsyncClient, url: str, max_bytes: int = MAX_JWKS_BYTES
) -> Fetched:
    """:func:`fetch_jwks` over an :class:`httpx.AsyncClient`."""
    try:
        async with client.stream(
            "GET", url, headers=_REQUEST_HEADERS, follow_redirects=False
        ) as response:
            _check_response(response, max_bytes)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchFailed(f"the JWKS is over {max_bytes} bytes")
    except _FETCH_ERRORS as exc:
        raise FetchFailed(type(exc).__name__) from None
    return Fetched(parse_jwks(bytes(body)), response.headers.get("cache-control"))


F = TypeVar("F")
Need = Literal["due", "unknown_kid", "unusable"]


class _KeySetState(Generic[F]):
    """The cache's state and its decisions, shared by the sync and the async cache.

    ``F`` is the handle waiters block on (an event for threads, a task for asyncio);
    the wrappers only add the I/O. Every method takes ``_lock`` for a few
    assignments, never across a fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        cooldown: float,
        stale_limit: float,
        min_cache_seconds: float,
        max_cache_seconds: float,
    ) -> None:
        if not (math.isfinite(cooldown) and cooldown >= 0):
            raise ValueError("cooldown must be a finite number of seconds >= 0")
        if not (math.isfinite(stale_limit) and stale_limit >= 0):
            raise ValueError("stale_limit must be a finite number of seconds >= 0")
        if not (0 < min_cache_seconds <= max_cache_seconds < math.inf):
            raise ValueError("need 0 < min_cache_seconds <= max_cache_seconds < inf")
        self.url = url
        self._clock = clock
        self._cooldown = cooldown
        self._stale_limit = stale_limit
        self._min_cache = min_cache_seconds
        self._max_cache = max_cache_seconds
        # Replaced whole on every good fetch, so a reader sees one set or the other.
        self._keys: Mapping[str, PublicKey] = {}
        # Read without the lock on the hot path: single float loads.
        self._refresh_at = -math.inf
        self._usable_until = -math.inf
        self._last_attempt = -math.inf
        self._flight: F | None = None
        self._lock = threading.Lock()

    def get(self, kid: str) -> PublicKey | None:
        """The key for ``kid`` in the current set (no I/O): the :class:`KeySource`."""
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def needs(self) -> Need | None:
        """Why the set should be fetched now (hot path: no lock), or ``None``."""
        now = self._clock()
        if now < self._refresh_at:
            return None
        return "due" if now < self._usable_until else "unusable"

    def usable(self) -> bool:
        return self._clock() < self._usable_until

    def plan(self, need: Need, new_flight: Callable[[], F]) -> tuple[F | None, bool]:
        """``(flight, started)``: the fetch to wait for, and whether this caller must run it.

        ``(None, False)`` when none may start (cooldown) and none is in flight. A
        caller that needs no new keys (``due``) never waits for another's fetch.
        """
        with self._lock:
            if self._flight is not None:
                return (self._flight if need != "due" else None), False
            now = self._clock()
            if now - self._last_attempt < self._cooldown:
                return None, False
            self._last_attempt = now
            self._flight = new_flight()
            return self._flight, True

    def finish(self, fetched: Fetched | None, reason: str = "") -> None:
        """Install a good fetch (or log a failed one) and end the flight."""
        with self._lock:
            self._flight = None
            if fetched is None:
                logger.warning(
                    "JWKS fetch from %s failed (%s); %s",
                    self.url,
                    reason,
                    "keeping the last good key set" if self.usable() else "no usable key set",
                )
                return
            lifetime = cache_seconds(
                fetched.cache_control, lower=self._min_cache, upper=self._max_cache
            )
            now = self._clock()
            self._keys = fetched.keys
            self._usable_until = now + lifetime + self._stale_limit
            self._refresh_at = now + lifetime * (1 - REFRESH_AHEAD)

    def unavailable(self) -> KeysUnavailable:
        return KeysUnavailable("no JWKS usable within the stale limit", store="jwks")


class JwksCache:
    """The issuer's keys for a thread-safe :class:`~gatepass.verifier.Verifier`.

    A fetch runs in the thread that starts it; concurrent threads keep verifying
    with the current set while it is usable, and wait for that one fetch when it is
    not (or when their token names a ``kid`` the set lacks).
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client,
        clock: Clock,
        cooldown: float = DEFAULT_COOLDOWN,
        stale_limit: float = DEFAULT_STALE_LIMIT,
        min_cache_seconds: float = MIN_CACHE_SECONDS,
        max_cache_seconds: float = MAX_CACHE_SECONDS,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self._state: _KeySetState[threading.Event] = _KeySetState(
            url,
            clock=clock,
            cooldown=cooldown,
            stale_limit=stale_limit,
            min_cache_seconds=min_cache_seconds,
            max_cache_seconds=max_cache_seconds,
        )
        self._client = client
        self._max_bytes = max_bytes
        self.get = self._state.get

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every key held now."""
        return self._state.kids

    def ensure_usable(self) -> None:
        """Fetch if due (one thread) or needed; :class:`KeysUnavailable` if no set is
        usable afterwards."""
        need = self._state.needs()
        if need is None:
            return
        self._fetch(need)
        if not self._state.usable():
            raise self._state.unavailable()

    def refetch_for_unknown_kid(self) -> bool:
        """Fetch (or wait for the fetch in flight) because a token named a ``kid`` the
        set lacks; ``False`` when the cooldown allows none, so the token is refused."""
        return self._fetch("unknown_kid")

    def _fetch(self, need: Need) -> bool:
        flight, started = self._state.plan(need, threading.Event)
        if flight is None:
            return False
        if not started:
            flight.wait()
            return True
        with _finishing(self._state, flight.set):
            self._state.finish(fetch_jwks(self._client, self._state.url, self._max_bytes))
        return True


class AsyncJwksCache:
    """The issuer's keys for an :class:`~gatepass.verifier.AsyncVerifier` (one event loop).

    A fetch runs as its own task, which every task that needs it awaits (shielded:
    a cancelled waiter does not cancel the fetch for the others).
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        clock: Clock,
        cooldown: float = DEFAULT_COOLDOWN,
        stale_limit: float = DEFAULT_STALE_LIMIT,
        min_cache_seconds: float = MIN_CACHE_SECONDS,
        max_cache_seconds: float = MAX_CACHE_SECONDS,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self._state: _KeySetState[asyncio.Future[None]] = _KeySetState(
            url,
            clock=clock,
            cooldown=cooldown,
            stale_limit=stale_limit,
            min_cache_seconds=min_cache_seconds,
            max_cache_seconds=max_cache_seconds,
        )
        self._client = client
        self._max_bytes = max_bytes
        self.get = self._state.get

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every key held now."""
        return self._state.kids

    async def ensure_usable(self) -> None:
        """As :meth:`JwksCache.ensure_usable`."""
        need = self._state.needs()
        if need is None:
            return
        await self._fetch(need)
        if not self._state.usable():
            raise self._state.unavailable()

    async def refetch_for_unknown_kid(self) -> bool:
        """As :meth:`JwksCache.refetch_for_unknown_kid`."""
        return await self._fetch("unknown_kid")

    async def _fetch(self, need: Need) -> bool:
        flight, _started = self._state.plan(need, lambda: asyncio.ensure_future(self._run()))
        if flight is None:
            return False
        await asyncio.shield(flight)
        return True

    async def _run(self) -> None:
        with _finishing(self._state, None):
            fetched = await afetch_jwks(self._client, self._state.url, self._max_bytes)
            self._state.finish(fetched)


@contextmanager
def _finishing(state: _KeySetState[F], done: Callable[[], None] | None) -> Iterator[None]:
    """End the flight whatever happens: a failed fetch is logged and keeps the old set;
    an unexpected exception (a bug, a cancellation) still ends the flight, then rises."""
    try:
        yield
    except FetchFailed as exc:
        state.finish(None, str(exc))
    except BaseException:
        state.finish(None, "interrupted")
        raise
    finally:
        if done is not None:
            done()

"""Throttle counters in Redis, shared by every node and worker.

Each step is one Lua script (EVALSHA), so a check and its count are atomic across
nodes. A script touches only the keys of one hash tag, so it runs unchanged on a
Redis Cluster:

* ``gatepass:{acct:<h>}:f`` failures (sorted set, scored by time), ``…:l`` the
  lock's end, ``…:p`` attempts in flight (sorted set, scored by start);
* ``gatepass:{ip:<h>}:w`` the per-IP window (sorted set);
* ``gatepass:{cred:<h>}:f`` wrong current passwords (a count), ``…:p`` in flight.

``<h>`` is an HMAC of the account, device, client network or credential under a
secret shared by the nodes, so a dump of Redis lists no address (a plain hash of
an IPv4 address is reversed by trying all of them).

Every key has a TTL a little past the longest its content can matter. An attempt
in flight is a timestamped entry: one left behind by a node that died before
settling it stops counting after :data:`PENDING_SECONDS` and its key expires.
Settling removes the oldest entry in flight, which keeps the count right without
telling attempts apart.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

from redis.commands.core import AsyncScript

from gatepass.stores.redis_connection import RedisClient, mapped

PREFIX = "gatepass"
#: An attempt in flight longer than this no longer counts (a password check takes
#: well under a second; this covers a full hashing queue and a slow store).
PENDING_SECONDS = 120.0
#: Added to every TTL, so a key outlives its content even across small clock skew.
TTL_MARGIN_SECONDS = 60.0

# KEYS: window. ARGV: now, limit, window, member, ttl_ms.
_COUNT_IP = """
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return '0'
"""

# KEYS: failures, lock, pending. ARGV: now, max_failures, window, member,
# pending_seconds, pending_ttl_ms.
_BEGIN_LOGIN = """
local now, max_failures, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local locked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if locked_until > now then
  return tostring(locked_until - now)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[3]) >= max_failures then
  return '0'
end
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return false
"""

# KEYS: failures, lock, pending. ARGV: now, max_failures, window, member, ttl_ms.
_FAIL_LOGIN = """
local now, max_failures, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZPOPMIN', KEYS[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= max_failures then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], tostring(now + window), 'PX', ARGV[5])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
"""

# KEYS: count, pending. ARGV: now, max_failures, member, pending_seconds,
# pending_ttl_ms.
_BEGIN_GUESS = """
local now, max_failures = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures + redis.call('ZCARD', KEYS[2]) >= max_failures then
  return 0
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: count, pending. ARGV: max_failures, ttl_ms.
_FAIL_GUESS = """
redis.call('ZPOPMIN', KEYS[2])
local failures = redis.call('INCR', KEYS[1])
if failures >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""

# KEYS: every key of one tag.
_FORGET = """
redis.call('DEL', unpack(KEYS))
return 0
"""

# KEYS: pending.
_SETTLE = """
redis.call('ZPOPMIN', KEYS[1])
return 0
"""


class RedisCounters:
    """:class:`~gatepass.stores.base.CounterStore` in a shared Redis (or Cluster).

    ``key_secret`` keys the HMAC that names the keys; every node sharing the
    counters must use the same one. Every method raises
    :class:`~gatepass.errors.StoreUnavailable` when Redis cannot be reached, so
    the throttle fails closed.
    """

    def __init__(self, client: RedisClient, *, key_secret: bytes) -> None:
        if not key_secret:
            raise ValueError("key_secret must not be empty")
        self._client = client
        self._secret = key_secret
        self._count_ip = self._script(_COUNT_IP)
        self._begin_login = self._script(_BEGIN_LOGIN)
        self._fail_login = self._script(_FAIL_LOGIN)
        self._begin_guess = self._script(_BEGIN_GUESS)
        self._fail_guess = self._script(_FAIL_GUESS)
        self._settle = self._script(_SETTLE)
        self._forget = self._script(_FORGET)

    def __repr__(self) -> str:
        return "RedisCounters()"

    def _script(self, source: str) -> AsyncScript:
        # redis-py's Script runs EVALSHA and loads the script on NOSCRIPT (a restarted
        # server, or a Cluster node that never saw it).
        return self._client.register_script(source)

    def _tag(self, kind: str, subject: bytes | str) -> str:
        raw = subject.encode("utf-8", "surrogatepass") if isinstance(subject, str) else subject
        digest = hmac.new(self._secret, kind.encode() + b"\0" + raw, hashlib.sha256)
        return f"{PREFIX}:{{{kind}:{digest.hexdigest()[:32]}}}"

    def _account_keys(self, key: bytes) -> list[str]:
        tag = self._tag("acct", key)
        return [f"{tag}:f", f"{tag}:l", f"{tag}:p"]

    def _guess_keys(self, key: str) -> list[str]:
        tag = self._tag("cred", key)
        return [f"{tag}:f", f"{tag}:p"]

    # per-IP windows ------------------------------------------------------------

    async def count_attempt(self, key: str, now: float, *, limit: int, window: float) -> float:
        keys = [f"{self._tag('ip', key)}:w"]
        args: list[str | int] = [repr(now), limit, repr(window), _member(), _ttl_ms(window)]
        async with mapped():
            wait = await self._count_ip(keys=keys, args=args)
        return float(wait)

    # account and device lockout -------------------------------------------------

    async def begin_login(
        self, key: bytes, now: float, *, max_failures: int, window: float
    ) -> float | None:
        args: list[str | int] = [
            repr(now),
            max_failures,
            repr(window),
            _member(),
            repr(PENDING_SECONDS),
            _ttl_ms(PENDING_SECONDS),
        ]
        async with mapped():
            refused = await self._begin_login(keys=self._account_keys(key), args=args)
        return None if refused is None else float(refused)

    async def fail_login(self, key: bytes, now: float, *, max_failures: int, window: float) -> bool:
        args: list[str | int] = [repr(now), max_failures, repr(window), _member(), _ttl_ms(window)]
        async with mapped():
            locked = await self._fail_login(keys=self._account_keys(key), args=args)
        return bool(locked)

    async def forget_login(self, key: bytes) -> None:
        async with mapped():
            await self._forget(keys=self._account_keys(key))

    async def abandon_login(self, key: bytes) -> None:
        async with mapped():
            await self._settle(keys=self._account_keys(key)[2:])

    # wrong current passwords -----------------------------------------------------

    async def begin_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        args: list[str | int] = [
            repr(now),
            max_failures,
            _member(),
            repr(PENDING_SECONDS),
            _ttl_ms(PENDING_SECONDS),
        ]
        async with mapped():
            admitted = await self._begin_guess(keys=self._guess_keys(key), args=args)
        return bool(admitted)

    async def fail_guess(
        self, key: str, now: float, *, max_failures: int, retention: float
    ) -> bool:
        args: list[str | int] = [max_failures, _ttl_ms(retention)]
        async with mapped():
            ended = await self._fail_guess(keys=self._guess_keys(key), args=args)
        return bool(ended)

    async def forget_guess(self, key: str) -> None:
        async with mapped():
            await self._forget(keys=self._guess_keys(key))

    async def abandon_guess(self, key: str) -> None:
        async with mapped():
            await self._settle(keys=self._guess_keys(key)[1:])


def _member() -> str:
    """A unique member for a sorted set, so two entries at one instant both count."""
    return secrets.token_hex(8)


def _ttl_ms(seconds: float) -> int:
    return math.ceil((seconds + TTL_MARGIN_SECONDS) * 1000)

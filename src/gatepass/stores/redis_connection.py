"""Connecting to Redis (standalone or Cluster) from ``GATEPASS_REDIS_URL``, and the
one place Redis driver errors become gatepass errors.

``redis://`` and ``rediss://`` (TLS) name one server; ``redis+cluster://host:port,
host:port…`` names seed nodes of a Redis Cluster (``rediss+cluster://`` with TLS).
Every key gatepass writes is hash-tagged so that what one operation touches lives
in one slot: the same commands run on both kinds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from gatepass.errors import ConfigError, StoreUnavailable

RedisClient: TypeAlias = "Redis | RedisCluster"

SETTING = "GATEPASS_REDIS_URL"
PLAIN_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
#: A command that takes longer than this is a failure (fail closed, not hang).
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
#: Connections one process keeps to a standalone Redis. A command that finds them
#: all busy waits for one (up to :data:`POOL_WAIT`) instead of failing: a burst of
#: requests queues briefly, it does not turn into 503s.
MAX_CONNECTIONS = 128
POOL_WAIT = 2.0
#: Per Cluster node: redis-py's cluster client cannot wait for a free connection,
#: so its bound is set as high as one process's concurrent requests can go
#: (GATEPASS_MAX_CONNECTIONS, 1000 by default).
CLUSTER_MAX_CONNECTIONS = 1024
#: A command on a pooled connection the server closed (a restart, a failover) is
#: sent once more on a new one. A standalone client does not retry a timeout (fail
#: fast, closed); the Cluster client retries once on any node error, timeouts
#: included, to follow a failover to the new primary (so a stalled node costs up
#: to two socket timeouts, and a counter script may count twice: never less).
RECONNECT_RETRIES = 1
RECONNECT_BACKOFF = 0.01


def _retry() -> Retry:
    return Retry(
        ConstantBackoff(RECONNECT_BACKOFF),
        RECONNECT_RETRIES,
        supported_errors=(redis_errors.ConnectionError,),
    )


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` naming the setting when ``url`` is not one we read."""
    parts = urlsplit(url)
    if parts.scheme not in PLAIN_SCHEMES + CLUSTER_SCHEMES:
        raise ConfigError(
            SETTING,
            "must start with redis://, rediss:// or redis+cluster://host:port,host:port",
        )
    if parts.scheme in CLUSTER_SCHEMES:
        _cluster_nodes(parts.netloc)
    elif not parts.hostname:
        raise ConfigError(SETTING, "names no host")


def _cluster_nodes(netloc: str) -> list[ClusterNode]:
    hosts = netloc.rpartition("@")[2]
    nodes: list[ClusterNode] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(SETTING, "cluster nodes must be listed as host:port,host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    return nodes


def connect(url: str) -> RedisClient:
    """A client for ``url`` (no connection is made until the first command)."""
    check_redis_url(url)
    parts = urlsplit(url)
    if parts.scheme in PLAIN_SCHEMES:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=0,
            decode_responses=False,
            retry=_retry(),
        )
        return Redis.from_pool(pool)  # closing the client closes its pool
    userinfo = parts.netloc.rpartition("@")[0]
    username, _, password = userinfo.partition(":")
    return RedisCluster(
        startup_nodes=_cluster_nodes(parts.netloc),
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=parts.scheme == "rediss+cluster",
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        max_connections=CLUSTER_MAX_CONNECTIONS,
        decode_responses=False,
        retry=_retry(),
    )


@contextmanager
def redis_errors_mapped() -> Iterator[None]:
    """Driver errors become :class:`StoreUnavailable`, with the driver's words and
    never the command or its arguments (they hold session hashes)."""
    try:
        yield
    except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
        # RedisClusterException (no node reachable, a slot not covered during a
        # failover) does not derive from RedisError.
        raise StoreUnavailable(f"redis error: {type(exc).__name__}: {_words(exc)}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}: {exc}") from exc


@asynccontextmanager
async def mapped() -> AsyncIterator[None]:
    """:func:`redis_errors_mapped` for ``async with``."""
    with redis_errors_mapped():
        yield


def _words(exc: BaseException) -> str:
    # redis-py's ResponseError carries the server's words ("CROSSSLOT …", "NOSCRIPT
    # …"), which name no argument; connection errors name the address tried.
    text = str(exc)
    return text.split("\n", 1)[0][:200]

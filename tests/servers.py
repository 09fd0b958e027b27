"""Real servers the tests start on loopback: one PostgreSQL cluster per test session.

The cluster lives in a temporary folder, listens on 127.0.0.1 on a free port
(its unix socket in that folder too), runs without fsync (a test database need
not survive a power cut) and is stopped by its PID when the session ends, also
when tests failed. Each test gets its own database, so tests stay independent
without paying for a server start each.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres``
user that Debian's package creates. Missing binaries fail the test under
``CI=true`` and skip it elsewhere, saying why.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import on_ci

#: Debian installs the server binaries here, outside PATH.
DEBIAN_PG_BINS = "/usr/lib/postgresql/*/bin"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SUPERUSER = "gatepass_admin"
#: The migrated schema every ``pg_url`` database is copied from.
TEMPLATE = "gatepass_template"


def missing(reason: str) -> None:
    """A server the test needs is not there: a failure on CI, a skip elsewhere."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL, else whatever ``initdb`` is on PATH."""
    found = [Path(d) for d in glob.glob(DEBIAN_PG_BINS) if (Path(d) / "initdb").exists()]
    if found:
        return max(found, key=lambda d: int(re.sub(r"\D", "", d.parent.name) or 0))
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``postgres`` when we are root
    (setuid in the child itself, so the child's PID is the server's own)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        missing("running as root and there is no `postgres` user to run PostgreSQL as")
        raise  # unreachable: missing() raises
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": entry.pw_dir, "USER": "postgres"},
    }


@dataclass
class PostgresServer:
    """A running cluster: its address, its superuser, and the server process."""

    host: str
    port: int
    password: str
    process: subprocess.Popen[bytes]
    log: Path
    #: The folder of the unix socket: the admin connection needs no password there.
    socket_dir: Path

    def url(self, database: str, *, driver: str = "postgresql") -> str:
        return f"{driver}://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    async def admin_async(self, *statements: str) -> None:
        """Run statements as the superuser on the ``postgres`` database."""
        import asyncpg

        conn = await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, database="postgres"
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def admin(self, *statements: str) -> None:
        """:meth:`admin_async`, from outside an event loop."""
        asyncio.run(self.admin_async(*statements))

    def stop(self) -> None:
        """Fast shutdown by PID; a server that does not go in time is killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(root: Path, bin_dir: Path) -> PostgresServer:
    as_user = _as_server_user()
    data, log = root / "data", root / "server.log"
    password = secrets.token_hex(16)
    (root / "pwfile").write_text(password)
    if as_user:
        for path in (root, root / "pwfile"):
            os.chown(path, as_user["user"], as_user["group"])
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={root / 'pwfile'}",
            # Password logins over TCP (what the stores use); the socket in the
            # private folder needs none.
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        cwd=root,
        check=True,
        capture_output=True,
        **as_user,
    )
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={port}",
                "-c",
                f"unix_socket_directories={root}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **as_user,
        )
    server = PostgresServer("127.0.0.1", port, password, process, log, root)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited at start:\n{log.read_text()[-2000:]}")
        try:
            server.admin("SELECT 1")
            return server
        except (OSError, ConnectionError) as exc:
            failure: Exception = exc
        except Exception as exc:  # asyncpg's "the database system is starting up"
            if "starting up" not in str(exc):
                server.stop()
                raise
            failure = exc
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"PostgreSQL not ready after {START_TIMEOUT} s: {failure}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole test session."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "postgres").exists():
        missing(
            "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql"
        )
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        missing("the asyncpg driver is not installed")
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="gatepass-pg-"))
    server: PostgresServer | None = None
    try:
        server = _start(root, bin_dir)
        _make_template(server)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _make_template(server: PostgresServer) -> None:
    """A database migrated once, which ``pg_url`` copies: cheaper than migrating
    every test's database."""
    from gatepass.stores.sql import SqlStore

    async def migrate() -> None:
        store = SqlStore(server.url(TEMPLATE))
        try:
            await store.upgrade()
        finally:
            await store.close()

    server.admin(f"CREATE DATABASE {TEMPLATE}")
    asyncio.run(migrate())


_numbers = itertools.count()


def _database_name(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())
    return f"t{next(_numbers)}_{name}"[:63]


@pytest.fixture
def pg_empty_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database of its own for this test."""
    name = _database_name(request)
    postgres_server.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return postgres_server.url(name)


@pytest.fixture
def pg_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new database of its own for this test, at the newest schema."""
    name = _database_name(request)
    postgres_server.admin(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    return postgres_server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the newest schema for this test, once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gatepass.db'}"
    return str(request.getfixturevalue("pg_url"))


# Redis ---------------------------------------------------------------------------

#: The cluster's nodes: three primaries, no replicas (enough for keys to spread over
#: slots, so a multi-key command across slots fails as it would in production).
CLUSTER_PRIMARIES = 3
#: A cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000
CLUSTER_PORT_LOW, CLUSTER_PORT_HIGH = 20_000, 45_000


@dataclass
class RedisServer:
    """One ``redis-server`` on loopback, its data in a folder of its own.

    Append-only file with ``appendfsync always``: a graceful stop and start keeps
    every write, which the durability tests rely on (production uses ``everysec``;
    docs/scaling.md says why).
    """

    port: int
    root: Path
    cluster: bool = False
    #: ``always`` for the tests; the bench uses production's ``everysec``.
    appendfsync: str = "always"
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def start(self) -> None:
        """Start (or start again, on the same port and data) and wait until it answers."""
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--protected-mode",
            "no",
        ]
        if self.cluster:
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server not ready after {START_TIMEOUT} s")
            time.sleep(0.02)

    def log_tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-2000:]

    def _answers(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """One command through ``redis-cli``: what it prints, stripped."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0 or "Could not connect" in done.stdout + done.stderr:
            raise OSError(done.stderr.strip() or done.stdout.strip())
        return done.stdout.strip()

    def stop(self) -> None:
        """Graceful stop by PID (SIGTERM: Redis flushes its append-only file first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Stop at once by PID (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _redis_binaries() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing("redis-server / redis-cli not found: apt-get install redis-server")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (10000 above, so at most 55535) is free too."""
    for _ in range(1000):
        port = random.randint(CLUSTER_PORT_LOW, CLUSTER_PORT_HIGH)
        if _bindable(port) and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def start_redis(root: Path, *, cluster: bool = False, appendfsync: str = "always") -> RedisServer:
    """A new ``redis-server`` in ``root`` on a free port (the caller stops it)."""
    _redis_binaries()
    root.mkdir(parents=True, exist_ok=True)
    port = free_cluster_port() if cluster else free_port()
    server = RedisServer(port, root, cluster=cluster, appendfsync=appendfsync)
    server.start()
    return server


@dataclass
class RedisCluster:
    """A real Redis Cluster of :data:`CLUSTER_PRIMARIES` primaries on loopback."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(root: Path) -> RedisCluster:
    """Start the nodes, join them with ``redis-cli --cluster create`` and wait until
    every node reports ``cluster_state:ok``."""
    nodes: list[RedisServer] = []
    try:
        for index in range(CLUSTER_PRIMARIES):
            nodes.append(start_redis(root / f"node{index}", cluster=True))
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(node.address for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not all("cluster_state:ok" in node.command("CLUSTER", "INFO") for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return RedisCluster(nodes)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real standalone Redis for the whole test session."""
    root = Path(tempfile.mkdtemp(prefix="gatepass-redis-"))
    server: RedisServer | None = None
    try:
        server = start_redis(root)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One real 3-primary Redis Cluster for the whole test session."""
    _redis_binaries()
    root = Path(tempfile.mkdtemp(prefix="gatepass-redis-cluster-"))
    cluster: RedisCluster | None = None
    try:
        cluster = start_redis_cluster(root)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's standalone Redis, emptied for this test (tests run one at a time)."""
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The session's Redis Cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["redis", "redis-cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """Once a standalone Redis, once a Redis Cluster, each emptied for this test."""
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may stop, kill and start again."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.kill()


# Every backend combination ------------------------------------------------------

BACKENDS = ["sqlite", "postgresql", "postgresql+redis", "postgresql+redis-cluster"]


@dataclass(frozen=True)
class Backend:
    """Where a test's state lives: a database, and Redis when scaled out."""

    name: str
    database_url: str
    redis_url: str | None = None

    def env(self) -> dict[str, str]:
        """The settings that select this backend."""
        env = {"database_url": self.database_url}
        if self.redis_url:
            env["redis_url"] = self.redis_url
        return env


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Once per backend combination: SQLite; PostgreSQL; PostgreSQL + Redis;
    PostgreSQL + Redis Cluster (each a fresh database, each Redis emptied)."""
    name = str(request.param)
    if name == "sqlite":
        return Backend(name, f"sqlite+aiosqlite:///{tmp_path / 'gatepass.db'}")
    database = str(request.getfixturevalue("pg_url"))
    if name == "postgresql":
        return Backend(name, database)
    redis = "redis_url" if name == "postgresql+redis" else "redis_cluster_url"
    return Backend(name, database, str(request.getfixturevalue(redis)))

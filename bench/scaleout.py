"""Figures for running gatepass as many nodes on PostgreSQL + Redis.

Usage: python bench/scaleout.py [--sessions N] [--samples N]

Starts a throwaway PostgreSQL and Redis on loopback (as the tests do, stopped by
PID at the end) and prints:

* Redis memory per browser session: ``INFO memory`` before and after storing N
  sessions (default 100,000) through the real Redis session store, each with a
  realistic user agent and address, spread over N/4 users (the per-user index
  and version floor are counted too);
* Redis round trips per request, by credential and for a password login:
  ``MONITOR`` around a run of requests against a real `gatepass serve` node
  (commands a Lua script runs inside Redis are not round trips);
* the time from a revocation answered by node A to its refusal on node B, for a
  Bearer logout (two `gatepass serve` nodes, one database, one Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e_support import RunningServer, running_server  # noqa: E402
from tests.servers import (  # noqa: E402
    TEMPLATE,
    PostgresServer,
    RedisServer,
    _make_template,
    _start,
    postgres_bin_dir,
    start_redis,
)

from gatepass.sessions import hash_session_id, new_session_id  # noqa: E402
from gatepass.stores.base import SessionLimit, SessionRecord  # noqa: E402
from gatepass.stores.redis_connection import connect  # noqa: E402
from gatepass.stores.redis_sessions import RedisSessionStore  # noqa: E402

PASSWORD = "bench password 123"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
BATCH = 500


def used_memory(redis: RedisServer) -> int:
    info = redis.command("INFO", "memory")
    line = next(line for line in info.splitlines() if line.startswith("used_memory:"))
    return int(line.split(":")[1])


async def fill(url: str, count: int) -> None:
    client = connect(url)
    store = RedisSessionStore(
        client, idle_timeout=1800, absolute_timeout=86_400, mac_key=b"bench-only-key"
    )
    limit = SessionLimit(100, 1800, 86_400)
    users = [secrets.token_hex(16) for _ in range(max(1, count // 4))]
    now = time.time()
    try:
        for start in range(0, count, BATCH):
            records = []
            for index in range(start, min(count, start + BATCH)):
                user = users[index % len(users)]
                records.append(
                    SessionRecord(
                        id_hash=hash_session_id(new_session_id(user)),
                        handle=secrets.token_urlsafe(16),
                        user_id=user,
                        csrf_token=secrets.token_urlsafe(32),
                        created_at=now,
                        last_seen_at=now,
                        ip=f"198.51.{index % 250}.{index % 200}",
                        user_agent=USER_AGENT,
                    )
                )
            await asyncio.gather(
                *(store.insert_session(r, credential_version=0, limit=limit) for r in records)
            )
    finally:
        await client.aclose()


def memory_per_session(redis: RedisServer, count: int) -> float:
    redis.command("FLUSHALL")
    before = used_memory(redis)
    asyncio.run(fill(redis.url, count))
    after = used_memory(redis)
    return (after - before) / count


#: Commands that are not the request's: the event bus's heartbeat, this script's own.
NOT_THE_REQUEST = {"ping", "monitor", "config", "info"}


class Monitor:
    """``redis-cli MONITOR`` while a block runs: every command Redis received from a
    client, one line each. Commands a Lua script runs are shown as ``[0 lua]``:
    they are not round trips, so they are not counted (a script is one EVALSHA)."""

    def __init__(self, redis: RedisServer) -> None:
        self._redis = redis
        self._process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def __enter__(self) -> Monitor:
        self._process = subprocess.Popen(
            ["redis-cli", "-p", str(self._redis.port), "MONITOR"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self._process.stdout.readline()  # "OK": monitoring from here on
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        time.sleep(0.2)  # let the last commands reach the monitor
        self._process.terminate()
        out, _ = self._process.communicate()
        self.lines = out.splitlines()

    def round_trips(self) -> int:
        count = 0
        for line in self.lines:
            if "lua]" in line or '"' not in line:
                continue
            command = line.split('"', 2)[1].lower()
            if command not in NOT_THE_REQUEST:
                count += 1
        return count


def sign_in(node: RunningServer, email: str, client_type: str) -> httpx.Response:
    with httpx.Client(base_url=node.url, timeout=30) as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD})
        response = http.post(
            "/auth/login", json={"email": email, "password": PASSWORD, "client": client_type}
        )
        response.raise_for_status()
        return response


def round_trips(node: RunningServer, redis: RedisServer, samples: int) -> dict[str, float]:
    web = sign_in(node, "rt-web@example.com", "web")
    cookie = web.cookies["gatepass_session"]
    token = sign_in(node, "rt-api@example.com", "api").json()["access_token"]
    out = {}
    for name, headers in (
        ("session cookie", {"Cookie": f"gatepass_session={cookie}"}),
        ("Bearer", {"Authorization": f"Bearer {token}"}),
    ):
        with httpx.Client(base_url=node.url, timeout=30) as http:
            http.get("/auth/me", headers=headers).raise_for_status()  # warm the caches
            with Monitor(redis) as monitor:
                for _ in range(samples):
                    http.get("/auth/me", headers=headers).raise_for_status()
        out[name] = monitor.round_trips() / samples
    logins = max(10, samples // 20)
    with httpx.Client(base_url=node.url, timeout=30) as http:
        http.post("/auth/register", json={"email": "rt-login@example.com", "password": PASSWORD})
        with Monitor(redis) as monitor:
            for _ in range(logins):
                http.post(
                    "/auth/login", json={"email": "rt-login@example.com", "password": PASSWORD}
                ).raise_for_status()
                http.cookies.clear()
    out["password login (web)"] = monitor.round_trips() / logins
    return out


def propagation(a: RunningServer, b: RunningServer, samples: int) -> list[float]:
    delays = []
    for index in range(samples):
        token = sign_in(a, f"prop{index}@example.com", "api").json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=a.url, timeout=30) as on_a,
            httpx.Client(base_url=b.url, timeout=30) as on_b,
        ):
            on_b.get("/auth/me", headers=auth).raise_for_status()  # cached as valid on B
            on_a.post("/auth/logout", headers=auth).raise_for_status()
            answered = time.monotonic()
            while on_b.get("/auth/me", headers=auth).status_code == 200:
                pass
            delays.append(time.monotonic() - answered)
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    bin_dir = postgres_bin_dir()
    if bin_dir is None or shutil.which("redis-server") is None:
        print("needs Debian's postgresql and redis-server (make test installs them)")
        return 1
    root = Path(tempfile.mkdtemp(prefix="gatepass-scaleout-"))
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    try:
        # A folder of its own: the server may run as another user (postgres).
        pg = _start(Path(tempfile.mkdtemp(prefix="gatepass-scaleout-pg-")), bin_dir)
        _make_template(pg)
        pg.admin(f"CREATE DATABASE bench TEMPLATE {TEMPLATE}")
        redis = start_redis(root / "redis")
        per_session = memory_per_session(redis, args.sessions)
        print(f"Redis memory per session ({args.sessions:,} sessions): {per_session:,.0f} bytes")
        redis.command("FLUSHALL")
        env = {
            "GATEPASS_DEV": "1",
            "GATEPASS_DATABASE_URL": pg.url("bench"),
            "GATEPASS_REDIS_URL": redis.url,
            "GATEPASS_ISSUER": "http://gatepass.bench",
            "GATEPASS_LOGIN_IP_LIMIT": "1000000",  # every login comes from loopback
            "GATEPASS_REGISTER_IP_LIMIT": "1000000",  # and so does every sign-up
        }
        with running_server(root / "a", env) as a, running_server(root / "b", env) as b:
            for name, trips in round_trips(a, redis, args.samples).items():
                print(f"Redis round trips per request, {name}: {trips:.2f}")
            delays = propagation(a, b, max(10, args.samples // 10))
            print(
                "Bearer logout on node A refused on node B after: "
                f"median {statistics.median(delays) * 1000:.1f} ms, "
                f"max {max(delays) * 1000:.1f} ms over {len(delays)} logouts"
            )
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.socket_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

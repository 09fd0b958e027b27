"""Side-by-side HTTP benchmarks of gatepass and its peers, in one interleaved run.

Usage: python bench/run.py [--quick] [--rounds N] [--duration S]

Every server runs as one worker pinned to CPU 0; wrk (and the Python load
clients) run pinned to CPU 1. Before any load, each protected endpoint must
answer 200 with its credential and 401 without one and with a forged one.
Rounds interleave all configurations; the table shows medians with min–max.
A dropped connection or an error status during a measurement is counted in the
table's errors column (the sum over rounds), never the end of the run.

The refresh rows run wrk with bench/refresh.lua: 32 connections, each request
rotating a live token of a pool that every 200 answer refills. One row runs on
the embedded SQLite, one on a throwaway PostgreSQL started the way the tests
start theirs (tests/servers.py), pinned to the load CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The PostgreSQL the tests start (tests/servers.py), reused here as it is.
sys.path.insert(0, str(ROOT))
from tests.servers import PostgresServer, RedisServer, postgres_bin_dir, start_redis  # noqa: E402
from tests.servers import _start as start_postgres_server  # noqa: E402

BENCH = ROOT / "bench"
SERVERS = BENCH / "servers"
GATEPASS = ROOT / ".venv" / "bin" / "gatepass"
PEERS_PY = BENCH / ".env" / "bin" / "python"
SERVER_CPU = "0"
CLIENT_CPU = "1"
CONNECTIONS = 16
PASSWORD = "bench password 123"
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 30.0
REFRESH_CLIENTS = 32
REFRESH_SCRIPT = BENCH / "refresh.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live children, from /proc."""
    pids = {pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.add(int(entry))
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    ready_path: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.cwd / f"{self.name}.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.argv],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.cwd / (self.name + '.log')}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Row:
    name: str
    server: Server
    path: str
    headers: dict[str, str]
    forged: dict[str, str]
    method: str = "GET"
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    #: Non-2xx answers and socket errors (connect, read, write, timeout), per round.
    errors: list[int] = field(default_factory=list)


def uvicorn_argv(
    module: str, port: int, *, python: Path = PEERS_PY, factory: bool = False
) -> list[str]:
    return [
        str(python),
        "-m",
        "uvicorn",
        *(["--factory"] if factory else []),
        module,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def gatepass_server(name: str, workdir: Path, alg: str, **settings: str) -> Server:
    port = free_port()
    cwd = workdir / name
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}
    env.update(
        GATEPASS_DEV="1",
        GATEPASS_JWT_ALGORITHM=alg,
        GATEPASS_LOGIN_IP_LIMIT="1000000",
        # Every bench user signs up from loopback.
        GATEPASS_REGISTER_IP_LIMIT="1000000",
        GATEPASS_ACCESS_TOKEN_TTL="3600",
    )
    env.update({f"GATEPASS_{k.upper()}": v for k, v in settings.items()})
    argv = [str(GATEPASS), "serve", "--port", str(port), "--log-level", "warning"]
    return Server(name, argv, env, cwd, port, "/healthz")


def gatepass_login(server: Server, client: str, email: str) -> dict:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD})
        r = http.post("/auth/login", json={"email": email, "password": PASSWORD, "client": client})
        r.raise_for_status()
        body = r.json()
        if client == "web":
            body["cookie"] = http.cookies.get("gatepass_session")
        return body


def forge(token: str) -> str:
    """The same token with one signature character changed."""
    head, sig = token.rsplit(".", 1)
    swapped = ("A" if sig[0] != "A" else "B") + sig[1:]
    return f"{head}.{swapped}"


def check_credentials(row: Row) -> None:
    """Refuse to benchmark a row that does not actually check its credential."""
    url = row.server.url + row.path
    ok = httpx.request(row.method, url, headers=row.headers, timeout=10)
    missing = httpx.request(row.method, url, timeout=10)
    forged = httpx.request(row.method, url, headers=row.forged, timeout=10)
    if ok.status_code != 200 or missing.status_code != 401 or forged.status_code != 401:
        raise RuntimeError(
            f"{row.name}: expected 200/401/401, got {ok.status_code}/{missing.status_code}/"
            f"{forged.status_code}"
        )


_LAT = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@dataclass
class WrkResult:
    #: Answers per second that were 2xx (errors do not count as throughput).
    ok_rps: float
    p50: float
    p99: float
    ok: int
    errors: int


def run_wrk(
    url: str,
    headers: dict[str, str],
    duration: float,
    *,
    connections: int = CONNECTIONS,
    script: list[str] | None = None,
) -> WrkResult:
    """One wrk run; non-2xx answers and socket errors are counted, not raised."""
    argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    if script:
        argv += ["-s", script[0], url, "--", *script[1:]]
    else:
        argv.append(url)
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = int(m.group(1)) if (m := _NON_2XX.search(out)) else 0
    sockets = sum(map(int, m.groups())) if (m := _SOCKET_ERRORS.search(out)) else 0
    lat = {m.group(1): _ms(m.group(2), m.group(3)) for m in _LAT.finditer(out)}
    ok = total - non_2xx
    ok_rps = rps * ok / total if total else 0.0
    return WrkResult(
        ok_rps, lat.get("50", float("nan")), lat.get("99", float("nan")), ok, non_2xx + sockets
    )


def record(row: Row, result: WrkResult, cpu_seconds: float) -> None:
    row.rps.append(result.ok_rps)
    row.p50.append(result.p50)
    row.p99.append(result.p99)
    row.cpu_us.append(cpu_seconds / max(result.ok, 1) * 1e6)
    row.errors.append(result.errors)


def measure(row: Row, duration: float) -> None:
    assert row.server.proc is not None
    cpu0 = process_tree_cpu_seconds(row.server.proc.pid)
    result = run_wrk(row.server.url + row.path, row.headers, duration)
    record(row, result, process_tree_cpu_seconds(row.server.proc.pid) - cpu0)


# refresh under concurrency and bearer under a login burst --------------------------


def start_postgres() -> PostgresServer:
    """A throwaway PostgreSQL as tests/servers.py starts one (no fsync, loopback,
    stopped by PID), its processes pinned to the load CPU, away from the servers."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "postgres").exists():
        raise RuntimeError("PostgreSQL binaries not found: apt-get install postgresql")
    # A folder of its own: as root the server runs as `postgres`, which must own it.
    root = Path(tempfile.mkdtemp(prefix="gatepass-bench-pg-"))
    server = start_postgres_server(root, bin_dir)
    pin(server.process.pid, CLIENT_CPU)
    return server


def pin(pid: int, cpu: str) -> None:
    """Pin ``pid`` and its children to ``cpu`` (the load CPU, away from the servers)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        with contextlib.suppress(OSError):  # a process that went meanwhile
            os.sched_setaffinity(each, {int(cpu)})


def check_refresh(server: Server) -> None:
    """Refuse to benchmark a refresh endpoint that does not refuse a spent token."""
    token = gatepass_login(server, "mobile", "refresh-check@example.com")["refresh_token"]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        first = http.post("/auth/refresh", json={"refresh_token": token}).status_code
        again = http.post("/auth/refresh", json={"refresh_token": token}).status_code
        junk = http.post("/auth/refresh", json={"refresh_token": "A" * 43}).status_code
    if (first, again, junk) != (200, 401, 401):
        raise RuntimeError(
            f"{server.name}: refresh expected 200/401/401, got {first}/{again}/{junk}"
        )


def measure_refresh(row: Row, duration: float) -> None:
    """wrk with bench/refresh.lua: REFRESH_CLIENTS connections rotating live tokens."""
    server = row.server
    assert server.proc is not None
    # One spare: wrk calls request() once more than it sends (at thread start),
    # and the token that call takes is never presented.
    tokens = [
        gatepass_login(server, "mobile", f"refresh{i}@example.com")["refresh_token"]
        for i in range(REFRESH_CLIENTS + 1)
    ]
    token_file = server.cwd / "refresh-tokens.txt"
    token_file.write_text("\n".join(tokens) + "\n")
    cpu0 = process_tree_cpu_seconds(server.proc.pid)
    result = run_wrk(
        server.url + row.path,
        {},
        duration,
        connections=REFRESH_CLIENTS,
        script=[str(REFRESH_SCRIPT), str(token_file)],
    )
    record(row, result, process_tree_cpu_seconds(server.proc.pid) - cpu0)


def measure_during_logins(row: Row, duration: float, burst_clients: int = 4) -> None:
    stop = threading.Event()
    email = "burst@example.com"
    gatepass_login(row.server, "mobile", email)
    logins = 0

    def burst() -> None:
        nonlocal logins
        with httpx.Client(base_url=row.server.url, timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post(
                        "/auth/login",
                        json={"email": email, "password": PASSWORD, "client": "mobile"},
                    )
                except httpx.HTTPError:
                    continue  # the burst only makes load; the measured row counts errors
                if r.status_code == 200:
                    logins += 1

    threads = [threading.Thread(target=burst, daemon=True) for _ in range(burst_clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    try:
        measure(row, duration)
    finally:
        stop.set()
        for t in threads:
            t.join(70)
    if logins == 0:
        print("warning: the login burst did not log in", file=sys.stderr)


# table ------------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}–{max(values):.0f}" if values else "-"


def print_table(rows: list[Row], ceiling: Row) -> None:
    base = _med(ceiling.rps)
    header = (
        f"{'configuration':<56} {'req/s':>8} {'(min–max)':>13} {'× bare':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.name:<56} {_med(r.rps):>8.0f} {_spread(r.rps):>13} {_med(r.rps) / base:>7.2f} "
            f"{_med(r.p50):>7.2f} {_med(r.p99):>7.2f} {_med(r.cpu_us):>10.0f} "
            f"{sum(r.errors):>6}"
        )
    print("req/s counts 2xx answers only; errors: non-2xx answers + socket errors, all rounds")


# sections ---------------------------------------------------------------------------

#: What ``--only`` may name; the default runs them all.
SECTIONS = ("me", "pyjwt", "scaleout", "refresh", "burst", "adapters")


@dataclass
class Framework:
    """One framework's rows: without auth, with gatepass and with the peer users
    would pick instead; ``skipped`` says why the gatepass row is absent."""

    name: str
    bare: Row
    peer: Row
    gatepass: Row | None = None
    skipped: str | None = None


@dataclass
class Plan:
    """What one run measures: plain rows (wrk, the adapter groups' rows among them),
    refresh rows and the login-burst row."""

    rows: list[Row] = field(default_factory=list)
    refresh_rows: list[Row] = field(default_factory=list)
    burst: Row | None = None
    frameworks: list[Framework] = field(default_factory=list)


def bearer_row(name: str, server: Server, path: str, token: str) -> Row:
    return Row(
        name,
        server,
        path,
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"Bearer {forge(token)}"},
    )


def gunicorn_argv(python: Path, target: str, port: int) -> list[str]:
    """One sync gunicorn worker: how Flask and Django apps are usually deployed."""
    return [
        str(python),
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        target,
    ]


def servers_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SERVERS), **extra}


class Runner:
    """Starts servers (and stops every one it started) for the sections asked for."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        server.start()
        return server

    def own_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir()
        return path

    def uvicorn(self, name: str, module: str, ready: str, **env: str) -> Server:
        port = free_port()
        return self.add(
            Server(
                name,
                uvicorn_argv(module, port),
                servers_env(**env),
                self.own_dir(name),
                port,
                ready,
            )
        )

    def gunicorn(self, name: str, target: str, ready: str, **env: str) -> Server:
        port = free_port()
        argv = gunicorn_argv(PEERS_PY, target, port)
        return self.add(Server(name, argv, servers_env(**env), self.own_dir(name), port, ready))

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        if self.postgres is not None:
            self.postgres.stop()
            shutil.rmtree(self.postgres.socket_dir, ignore_errors=True)
        if self.redis is not None:
            self.redis.stop()

    def dump_logs(self) -> None:
        """Leave the evidence: the tail of every server's log."""
        for s in self.servers:
            log = s.cwd / f"{s.name}.log"
            if log.exists():
                print(f"--- {s.name} log (tail) ---", file=sys.stderr)
                print(log.read_text(errors="replace")[-2000:], file=sys.stderr)


def plan_me(run: Runner, plan: Plan) -> dict[str, Server]:
    """gatepass's own GET /auth/me on SQLite: Bearer (three algorithms) and cookie."""
    gp: dict[str, Server] = {}
    for alg in ("EdDSA", "ES256", "HS256"):
        gp[alg] = run.add(gatepass_server(f"gatepass-{alg}", run.workdir, alg))
        tok = gatepass_login(gp[alg], "mobile", "bench@example.com")["access_token"]
        plan.rows.append(
            bearer_row(f"gatepass GET /auth/me, Bearer {alg}", gp[alg], "/auth/me", tok)
        )
    cookie = gatepass_login(gp["EdDSA"], "web", "web@example.com")["cookie"]
    plan.rows.append(
        Row(
            "gatepass GET /auth/me, session cookie (SQLite)",
            gp["EdDSA"],
            "/auth/me",
            {"Cookie": f"gatepass_session={cookie}"},
            {"Cookie": f"gatepass_session={cookie[:-2]}AA"},
        )
    )
    return gp


def plan_pyjwt(run: Runner, plan: Plan) -> None:
    for alg in ("HS256", "EdDSA"):
        s = run.uvicorn(f"pyjwt-{alg}", "starlette_pyjwt:app", "/token", BENCH_ALG=alg)
        tok = httpx.get(s.url + "/token").json()["access_token"]
        plan.rows.append(bearer_row(f"Starlette + PyJWT middleware, {alg}", s, "/me", tok))


def plan_scaleout(run: Runner, plan: Plan) -> tuple[Server, Server]:
    """The PostgreSQL server, and the PostgreSQL + Redis one with its /auth/me rows."""
    pg = start_postgres()
    run.postgres = pg
    pg.admin("CREATE DATABASE bench")
    gp_pg = run.add(
        gatepass_server(
            "gatepass-HS256-postgres",
            run.workdir,
            "HS256",
            database_url=pg.url("bench"),
            db_auto_upgrade="1",
        )
    )
    # Scaled out: PostgreSQL for the records, Redis for sessions, counters and
    # the revocation push (AOF everysec, as docs/scaling.md recommends).
    redis = start_redis(run.workdir / "redis", appendfsync="everysec")
    run.redis = redis
    pin(redis.process.pid, CLIENT_CPU)
    pg.admin("CREATE DATABASE bench_redis")
    gp_pr = run.add(
        gatepass_server(
            "gatepass-HS256-postgres-redis",
            run.workdir,
            "HS256",
            database_url=pg.url("bench_redis"),
            redis_url=redis.url,
            db_auto_upgrade="1",
        )
    )
    tok = gatepass_login(gp_pr, "mobile", "bench@example.com")["access_token"]
    plan.rows.append(
        bearer_row(
            "gatepass GET /auth/me, Bearer HS256 (PostgreSQL + Redis)", gp_pr, "/auth/me", tok
        )
    )
    cookie = gatepass_login(gp_pr, "web", "web@example.com")["cookie"]
    plan.rows.append(
        Row(
            "gatepass GET /auth/me, session cookie (PostgreSQL + Redis)",
            gp_pr,
            "/auth/me",
            {"Cookie": f"gatepass_session={cookie}"},
            {"Cookie": f"gatepass_session={cookie[:-2]}AA"},
        )
    )
    return gp_pg, gp_pr


def plan_refresh(plan: Plan, where: list[tuple[str, Server]]) -> None:
    plan.refresh_rows += [
        Row(
            f"gatepass POST /auth/refresh, {REFRESH_CLIENTS} clients ({name})",
            server,
            "/auth/refresh",
            {},
            {},
            method="POST",
        )
        for name, server in where
    ]


def plan_burst(plan: Plan, server: Server) -> None:
    token = gatepass_login(server, "mobile", "burst-reader@example.com")["access_token"]
    plan.burst = bearer_row(
        "gatepass Bearer EdDSA /auth/me during a login burst", server, "/auth/me", token
    )


def plan_adapters(run: Runner, plan: Plan, issuer: Server | None) -> None:
    """Per framework: no auth, gatepass's adapter, the peer. The peers and the bare
    apps of bench/servers run in the peers' env; the adapter modules' apps (bare and
    gatepass) under gatepass's .venv. ``issuer`` is the ``gatepass serve`` whose
    tokens the adapters are shown."""
    # FastAPI ---------------------------------------------------------------------------
    fu = run.uvicorn("fastapi-users", "fastapi_users_app:app", "/docs")
    httpx.post(fu.url + "/auth/register", json={"email": "fu@example.com", "password": PASSWORD})
    tok = httpx.post(
        fu.url + "/auth/jwt/login", data={"username": "fu@example.com", "password": PASSWORD}
    ).json()["access_token"]
    add_framework(
        run,
        plan,
        issuer,
        "FastAPI",
        lambda: Row(
            "FastAPI, no auth",
            run.uvicorn("fastapi-bare", "bare_fastapi:app", "/me"),
            "/me",
            {},
            {},
        ),
        bearer_row("fastapi-users GET /users/me (JWT strategy, SQLite)", fu, "/users/me", tok),
    )
    # Flask -----------------------------------------------------------------------------
    fl = run.gunicorn("flask-jwt-extended", "flask_jwt_app:app", "/me")
    tok = httpx.post(fl.url + "/login").json()["access_token"]
    add_framework(
        run,
        plan,
        issuer,
        "Flask",
        lambda: Row(
            "Flask under gunicorn (sync, 1 worker), no auth",
            run.gunicorn("flask-bare", "bare_flask:app", "/me"),
            "/me",
            {},
            {},
        ),
        bearer_row("Flask-JWT-Extended under gunicorn (sync, 1 worker)", fl, "/me", tok),
    )
    # Django REST framework: one project, the view without auth and with simplejwt ------
    drf = run.gunicorn("drf", "drf_app:application", "/me")
    tok = httpx.post(drf.url + "/token").json()["access_token"]
    peer = bearer_row("DRF + djangorestframework-simplejwt (user on SQLite)", drf, "/jwt/me", tok)
    # bench/adapters_django.py measures in process (RequestFactory); over HTTP the DRF
    # row is bench/servers/drf_gatepass_app.py: the same views in one project, the
    # protected one behind GatepassAuthentication, under gatepass's .venv.
    if issuer is None:
        bare = Row("DRF under gunicorn (sync, 1 worker), no auth", drf, "/me", {}, {})
        plan.frameworks.append(Framework("DRF", bare, peer, skipped="no gatepass server"))
        plan.rows += [bare, peer]
        return
    env = {**issuer.env, "PYTHONPATH": str(SERVERS), "GATEPASS_PORT": str(issuer.port)}
    port = free_port()
    argv = gunicorn_argv(GATEPASS_PY, "drf_gatepass_app:application", port)
    server = run.add(Server("drf-gatepass", argv, env, issuer.cwd, port, "/me"))
    token = gatepass_login(issuer, "mobile", "drf-adapter@example.com")["access_token"]
    bare = Row("DRF under gunicorn (sync, 1 worker), no auth", server, "/me", {}, {})
    gatepass = bearer_row(
        "DRF + gatepass GatepassAuthentication (embedded, Bearer)", server, "/gatepass/me", token
    )
    plan.frameworks.append(Framework("DRF", bare, peer, gatepass))
    plan.rows += [bare, peer, gatepass]


def add_framework(
    run: Runner,
    plan: Plan,
    issuer: Server | None,
    name: str,
    own_bare: Callable[[], Row],
    peer: Row,
) -> None:
    """The rows of one framework: the adapter module's bare and gatepass apps when it
    is there (else ``own_bare()`` and a line saying why there is no gatepass row)."""
    skipped = adapter_problem(name, issuer)
    if skipped is None:
        assert issuer is not None
        bare, gatepass = adapter_rows(run, name, issuer)
        framework = Framework(name, bare, peer, gatepass)
    else:
        framework = Framework(name, own_bare(), peer, skipped=skipped)
    plan.frameworks.append(framework)
    plan.rows += [framework.bare, framework.peer]
    if framework.gatepass is not None:
        plan.rows.append(framework.gatepass)


#: The gatepass adapter benchmarks, one module per framework under bench/, each with
#: ``bare_app()`` and ``gatepass_app(settings)`` (the same route, behind gatepass's
#: identity, embedded) and the route's path. bench/servers/adapter_apps.py serves
#: them with settings from GATEPASS_*: the harness runs them under gatepass's .venv
#: in the folder of a ``gatepass serve`` with the same settings (so the same database
#: and keys), and presents a token that server issued. With the module present, its
#: bare app is the framework's no-auth row (the very route, without gatepass).
ADAPTERS = {
    "FastAPI": ("adapters_fastapi", "fastapi", "/item"),
    "Flask": ("adapters_flask", "flask", "/hello"),
    "DRF": ("adapters_django", "django", "/item"),
}
GATEPASS_PY = ROOT / ".venv" / "bin" / "python"


def adapter_server(framework: str, factory: str, issuer: Server, path: str) -> Server:
    """``adapter_apps:<factory>`` of ``framework`` under .venv, next to ``issuer``."""
    port = free_port()
    target = f"adapter_apps:{factory}"
    env = {
        **issuer.env,
        "PYTHONPATH": f"{SERVERS}{os.pathsep}{BENCH}",
        # The issuer's own port: the issuer URL tokens carry is derived from it.
        "GATEPASS_PORT": str(issuer.port),
    }
    if framework == "FastAPI":
        argv = uvicorn_argv(target, port, python=GATEPASS_PY, factory=True)
    else:
        argv = gunicorn_argv(GATEPASS_PY, f"{target}()", port)
    # Ready once it answers at all (the gatepass app's route without a token is a 401).
    return Server(f"{factory}", argv, env, issuer.cwd, port, path)


def adapter_problem(framework: str, issuer: Server | None) -> str | None:
    """Why ``framework`` gets no gatepass row, or ``None`` when it gets one."""
    module, _, _ = ADAPTERS[framework]
    source = BENCH / f"{module}.py"
    if not source.exists():
        return f"adapter not present (bench/{source.name} has not landed): no figure"
    text = source.read_text()
    if "def gatepass_app(" not in text or "def bare_app(" not in text:
        return f"bench/{source.name} lacks bare_app() or gatepass_app(settings): no figure"
    if issuer is None:
        return "no gatepass server to issue its token: no figure"
    return None


def adapter_rows(run: Runner, framework: str, issuer: Server) -> tuple[Row, Row]:
    """The adapter module's bare row and gatepass row (a token ``issuer`` issued)."""
    module, prefix, path = ADAPTERS[framework]
    bare = run.add(adapter_server(framework, f"{prefix}_bare", issuer, path))
    server = run.add(adapter_server(framework, f"{prefix}_gatepass", issuer, path))
    token = gatepass_login(issuer, "mobile", f"{prefix}-adapter@example.com")["access_token"]
    return (
        Row(f"{framework} ({module}.py bare_app), no auth", bare, path, {}, {}),
        bearer_row(f"{framework} + gatepass adapter (embedded, Bearer)", server, path, token),
    )


def _added_cpu(row: Row | None, bare: Row) -> str:
    if row is None or not row.cpu_us:
        return "-"
    return f"{_med(row.cpu_us) - _med(bare.cpu_us):+.0f}"


def _rps(row: Row | None) -> str:
    return f"{_med(row.rps):.0f}" if row is not None and row.rps else "-"


def print_frameworks(frameworks: list[Framework]) -> None:
    """Per framework: req/s without auth, with gatepass and with the peer, and the CPU
    each adds per request (its server's CPU µs/req minus the bare app's)."""
    header = (
        f"{'framework':<9} {'bare req/s':>10} {'gatepass req/s':>14} {'peer req/s':>10} "
        f"{'gatepass +CPU µs/req':>20} {'peer +CPU µs/req':>16}  peer"
    )
    print(header)
    print("-" * len(header))
    for f in frameworks:
        print(
            f"{f.name:<9} {_rps(f.bare):>10} {_rps(f.gatepass):>14} {_rps(f.peer):>10} "
            f"{_added_cpu(f.gatepass, f.bare):>20} {_added_cpu(f.peer, f.bare):>16}  {f.peer.name}"
        )
    for f in frameworks:
        if f.skipped:
            print(f"{f.name}: skipped gatepass row: {f.skipped}")


def print_me_ratios(rows: list[Row], ceiling: Row) -> None:
    """gatepass's /auth/me against the ceiling two ways: req/s measured side by side,
    and bare CPU µs/req over the row's (the req/s ratio of a server that has a CPU
    to itself, less sensitive to other load on the machine)."""
    me = [r for r in rows if r.name.startswith("gatepass GET /auth/me") and r.cpu_us]
    if not me or not ceiling.cpu_us:
        return
    print(f"\n{'vs bare Starlette':<56} {'req/s ×':>8} {'CPU ×':>7}")
    for r in me:
        by_rps = _med(r.rps) / _med(ceiling.rps)
        by_cpu = _med(ceiling.cpu_us) / _med(r.cpu_us)
        print(f"{r.name:<56} {by_rps:>8.2f} {by_cpu:>7.2f}")


def parse_sections(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown:
        raise SystemExit(f"bench: unknown section(s) {', '.join(unknown)}; choose from {SECTIONS}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument(
        "--only",
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all); "
        "the bare Starlette ceiling always runs",
    )
    args = parser.parse_args()
    sections = parse_sections(args.only)
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1 if args.quick else 3
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (make bench installs it)", file=sys.stderr)
            return 2

    workdir = Path(tempfile.mkdtemp(prefix="gatepass-bench-"))
    run = Runner(workdir)
    plan = Plan()
    try:
        bare = run.uvicorn("bare", "bare_starlette:app", "/me")
        plan.rows.append(Row("bare Starlette, no auth (ceiling)", bare, "/me", {}, {}))
        need_gp = {"me", "refresh", "burst", "adapters"} & set(sections)
        gp = plan_me(run, plan) if need_gp else {}
        if "me" not in sections:  # the servers serve refresh or the burst only
            plan.rows = plan.rows[:1]
        if "pyjwt" in sections:
            plan_pyjwt(run, plan)
        refresh_where: list[tuple[str, Server]] = [("SQLite", gp["HS256"])] if gp else []
        if "scaleout" in sections:
            gp_pg, gp_pr = plan_scaleout(run, plan)
            refresh_where += [("PostgreSQL", gp_pg), ("PostgreSQL + Redis", gp_pr)]
        if "refresh" in sections:
            plan_refresh(plan, refresh_where)
        if "burst" in sections:
            plan_burst(plan, gp["EdDSA"])
        if "adapters" in sections:
            plan_adapters(run, plan, gp.get("EdDSA"))

        burst = [plan.burst] if plan.burst is not None else []
        for row in [*plan.rows, *burst]:
            if row.headers:  # the rows without a credential are the no-auth ceilings
                check_credentials(row)
        for row in plan.refresh_rows:
            check_refresh(row.server)
        print(
            "credentials checked: every protected row answers 200 / 401 missing / 401 forged; "
            "refresh 200 / 401 spent / 401 unknown"
        )
        for row in plan.rows:
            run_wrk(row.server.url + row.path, row.headers, warmup)
        for row in plan.refresh_rows:
            # Measured and thrown away: a warm-up like the other rows'.
            measure_refresh(row, warmup)
            for figures in (row.rps, row.p50, row.p99, row.cpu_us, row.errors):
                figures.clear()

        for n in range(rounds):
            print(f"round {n + 1}/{rounds} …", flush=True)
            for row in plan.rows:
                measure(row, duration)
            for row in plan.refresh_rows:
                measure_refresh(row, duration)
            if plan.burst is not None:
                measure_during_logins(plan.burst, duration)
        print()
        print_table([*plan.rows, *plan.refresh_rows, *burst], plan.rows[0])
        print_me_ratios(plan.rows, plan.rows[0])
        if plan.burst is not None:
            idle = next((r for r in plan.rows if r.name.endswith("Bearer EdDSA")), None)
            if idle is not None:
                print(
                    f"\nBearer EdDSA p99 during login burst / idle p99: "
                    f"{_med(plan.burst.p99) / _med(idle.p99):.2f}×"
                )
        if plan.frameworks:
            print()
            print_frameworks(plan.frameworks)
        print(
            f"{rounds} interleaved round(s) of {duration:.0f} s, wrk -t1 -c{CONNECTIONS}, "
            f"servers on CPU {SERVER_CPU}, load on CPU {CLIENT_CPU}; sections: {', '.join(sections)}"
        )
        return 0
    except Exception:
        run.dump_logs()
        raise
    finally:
        run.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

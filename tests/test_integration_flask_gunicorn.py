"""The Flask adapter under a real gunicorn: pre-fork ``sync`` workers and threaded
``gthread`` workers, the app built by a factory, SQLite in a temporary folder.

Each gunicorn is started once per test module and stopped by its PID. With
``--preload`` the factory runs in the master and uses gatepass there (it seeds an
admin account), so the workers inherit a started loop and an opened store: each
must notice it was forked and open its own. Requests are sent concurrently from a
thread pool so they land on every worker (and on several threads of each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify

from gatepass.core import Gatepass
from gatepass.integrations.flask import (
    FlaskGatepass,
    current_identity,
    gatepass_blueprint,
    login_required,
    roles_required,
)
from gatepass.stores.sql import SqlStore, users
from tests.conftest import PASSWORD
from tests.e2e_support import free_port, read_text, server_env, stop_process, unavailable
from tests.servers import TEMPLATE, PostgresServer

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
ADMIN_EMAIL = "admin@example.com"
#: Where the factory, run in gunicorn's master (``--preload``), writes what its loop is.
MASTER_FACTS_ENV = "FLASK_GUNICORN_MASTER_FACTS"
SEED_ADMIN_ENV = "FLASK_GUNICORN_SEED_ADMIN"


# the app gunicorn serves -----------------------------------------------------------


async def _loop_facts(gp: Gatepass) -> dict[str, int]:
    del gp
    return {"loop_pid": os.getpid(), "loop_tid": threading.get_native_id()}


async def _seed_admin(gp: Gatepass) -> dict[str, int]:
    user = await gp.accounts.register(ADMIN_EMAIL, PASSWORD)
    store = gp.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(users.update().where(users.c.id == user.id).values(roles="user admin"))
    return await _loop_facts(gp)


def create_app() -> Flask:
    """The factory gunicorn calls: gatepass's settings from ``GATEPASS_*`` variables
    copied into ``app.config``, as a deployment would."""
    app = Flask("gunicorn_host")
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("GATEPASS_")})
    ext = FlaskGatepass()
    ext.init_app(app)
    app.register_blueprint(gatepass_blueprint())

    @app.get("/whoami")
    @login_required
    def whoami() -> Any:
        facts = ext.call(_loop_facts)
        return jsonify(user_id=current_identity.user_id, method=current_identity.method, **facts)

    @app.post("/notes")
    @login_required
    def notes() -> Any:
        return jsonify(saved=True, **ext.call(_loop_facts)), 201

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> Any:
        return jsonify(ok=True)

    facts_path = os.environ.get(MASTER_FACTS_ENV)
    if os.environ.get(SEED_ADMIN_ENV) and facts_path:
        with app.app_context():
            facts = ext.call(_seed_admin)
        Path(facts_path).write_text(json.dumps(facts), encoding="utf-8")
    return app


# running gunicorn --------------------------------------------------------------------


@dataclass
class Gunicorn:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    master_facts: dict[str, int] | None


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited during start-up:\n{read_text(log)}")
            try:
                if client.get(f"{url}/.well-known/jwks.json").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"gunicorn did not answer in {STARTUP_TIMEOUT} s:\n{read_text(log)}")


def start_gunicorn(root: Path, args: list[str], *, preload: bool, env: dict[str, str]) -> Gunicorn:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.exists():
        unavailable("gunicorn is not installed in this environment")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    facts_path = root / "master-facts.json"
    env = {
        **env,
        "GATEPASS_DEV": "1",  # plain http on loopback: cookies without Secure
        "GATEPASS_PUBLIC_URL": url,
        "GATEPASS_DATA_DIR": str(root / ".gatepass"),
        MASTER_FACTS_ENV: str(facts_path),
    }
    if preload:
        env[SEED_ADMIN_ENV] = "1"
    log = root / "gunicorn.log"
    command = [
        str(gunicorn),
        *args,
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        *(["--preload"] if preload else []),
        "tests.test_integration_flask_gunicorn:create_app()",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parent.parent,
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(process, url, log)
    except BaseException:
        stop_process(process)
        raise
    master = json.loads(facts_path.read_text()) if preload else None
    return Gunicorn(url, process, log, master)


@dataclass(frozen=True)
class Config:
    args: tuple[str, ...]
    preload: bool
    postgresql: bool = False


SYNC = ("--worker-class", "sync", "--workers", "2")
GTHREAD = ("--worker-class", "gthread", "--workers", "2", "--threads", "4")
CONFIGS = {
    "sync-sqlite-preload": Config(SYNC, preload=True),
    "gthread-sqlite": Config(GTHREAD, preload=False),
    # asyncpg pools are bound to the loop that opened them: one per worker's loop,
    # opened after the fork (the master's, preloaded, stays in the master).
    "gthread-postgresql-preload": Config(GTHREAD, preload=True, postgresql=True),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    config = CONFIGS[request.param]
    root = tmp_path_factory.mktemp(f"gunicorn-{request.param}")
    env: dict[str, str] = {}
    if config.postgresql:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"flask_gunicorn_{os.getpid()}"
        postgres.admin(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        env["GATEPASS_DATABASE_URL"] = postgres.url(name)
    running = start_gunicorn(root, list(config.args), preload=config.preload, env=env)
    try:
        yield running
    finally:
        stop_process(running.process)


# the tests ---------------------------------------------------------------------------


def _account(client: httpx.Client, email: str) -> tuple[str, httpx.Cookies, str]:
    """Register ``email`` through the blueprint; return a Bearer token, and the
    cookie jar and CSRF token of a browser sign-in."""
    created = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    pair = client.post("/auth/login", json={"email": email, "password": PASSWORD, "client": "api"})
    assert pair.status_code == 200, pair.text
    web = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert web.status_code == 200, web.text
    return pair.json()["access_token"], web.cookies, web.json()["csrf_token"]


def _spread(server: Gunicorn, send: Any, count: int = 48) -> list[httpx.Response]:
    """``count`` requests from 8 threads at once, so several workers (and threads)
    answer; more rounds until at least two workers did."""
    answers: list[httpx.Response] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            answers += list(pool.map(lambda _: send(), range(count)))
            if len({r.json().get("loop_pid") for r in answers if r.status_code < 300}) >= 2:
                break
    return answers


def test_bearer_requests_succeed_on_every_worker_each_on_its_own_loop(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        token, _, _ = _account(client, "bearer@example.com")
    headers = {"Authorization": f"Bearer {token}"}

    def send() -> httpx.Response:
        return httpx.get(f"{server.url}/whoami", headers=headers, timeout=REQUEST_TIMEOUT)

    answers = _spread(server, send)
    assert [r.status_code for r in answers] == [200] * len(answers)
    loops: dict[int, set[int]] = defaultdict(set)
    for answer in answers:
        loops[answer.json()["loop_pid"]].add(answer.json()["loop_tid"])
    assert len(loops) == 2, "both workers answered"
    assert server.process.pid not in loops
    assert all(len(tids) == 1 for tids in loops.values()), "one loop thread per worker"
    if server.master_facts is not None:  # the master used gatepass before forking
        master_tid = server.master_facts["loop_tid"]
        assert all(master_tid not in tids for tids in loops.values())


def test_session_cookie_and_csrf_hold_across_workers(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        _, cookies, csrf = _account(client, "browser@example.com")
    jar = dict(cookies.items())

    def send() -> httpx.Response:
        with httpx.Client(base_url=server.url, cookies=jar, timeout=REQUEST_TIMEOUT) as c:
            return c.post("/notes", headers={"X-CSRF-Token": csrf, "Origin": server.url})

    answers = _spread(server, send, count=24)
    assert [r.status_code for r in answers] == [201] * len(answers)
    with httpx.Client(base_url=server.url, cookies=jar, timeout=REQUEST_TIMEOUT) as c:
        refused = c.post("/notes")
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_roles_and_missing_credentials_answer_problems_under_gunicorn(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        token, _, _ = _account(client, "plain@example.com")
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        anonymous = client.get("/whoami")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        denied = client.get("/admin", headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403
        if server.master_facts is not None:  # the admin the master seeded before forking
            pair = client.post(
                "/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD, "client": "api"}
            ).json()
            admin = {"Authorization": f"Bearer {pair['access_token']}"}
            assert client.get("/admin", headers=admin).status_code == 200
    assert "Traceback" not in read_text(server.log)


def test_logout_through_one_worker_is_refused_by_every_worker(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        token, _, _ = _account(client, "leaver@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/auth/logout", headers=headers).status_code == 204

    def send() -> int:
        return httpx.get(
            f"{server.url}/whoami", headers=headers, timeout=REQUEST_TIMEOUT
        ).status_code

    # Every worker learns of the revocation from the shared feed (read at most a
    # second apart); then no worker lets the token through.
    deadline = time.monotonic() + 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: send(), range(32)))
        while set(statuses) != {401} and time.monotonic() < deadline:
            time.sleep(0.2)
            statuses = list(pool.map(lambda _: send(), range(32)))
    assert statuses == [401] * 32

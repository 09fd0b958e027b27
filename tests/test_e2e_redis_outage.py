"""Redis dies under a running `gatepass serve` (PostgreSQL + Redis) in the middle of
logins and requests: no request is authenticated while it is down, the answers
are problem+json (never a 500 or a traceback), and service resumes by itself
once Redis is back, sessions included (append-only file)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, running_server
from tests.servers import RedisServer

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(10.0)
COOKIE = "gatepass_session"
#: The contract: a node that loses Redis stops authenticating within this.
FAIL_CLOSED_WITHIN = 1.0
RESUME_DEADLINE = 15.0


@pytest.fixture
def node(own_redis: RedisServer, pg_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    env = {
        "GATEPASS_DEV": "1",
        "GATEPASS_DATABASE_URL": pg_url,
        "GATEPASS_REDIS_URL": own_redis.url,
    }
    with running_server(tmp_path / "node", env) as server:
        yield server
        assert "Traceback" not in server.logs(), server.logs()


@dataclass
class Observed:
    """What the load saw, per phase: statuses of requests that carried a credential."""

    down_since: float | None = None
    #: When Redis was started again: answers after it may rightly be 200.
    restarting_at: float | None = None
    while_down: list[tuple[float, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def load(server: RunningServer, cookie: str, token: str, observed: Observed) -> None:
    """Requests with a cookie, with a token, and fresh logins, until told to stop."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        while not observed.stop.is_set():
            for kind, request in (
                (
                    "cookie",
                    lambda: client.get("/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"}),
                ),
                (
                    "bearer",
                    lambda: client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}),
                ),
                (
                    "login",
                    lambda: client.post(
                        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
                    ),
                ),
            ):
                down_since = observed.down_since
                started = time.monotonic()
                try:
                    response = request()
                except httpx.HTTPError as exc:
                    observed.errors.append(f"{kind}: {type(exc).__name__}")
                    continue
                if response.status_code >= 500 and response.status_code != 503:
                    observed.errors.append(f"{kind}: {response.status_code}")
                if response.status_code >= 400 and not response.headers.get(
                    "content-type", ""
                ).startswith("application/problem+json"):
                    observed.errors.append(f"{kind}: {response.status_code} not problem+json")
                # Only requests sent after Redis was dead: one in flight at the
                # kill may rightly have been answered from a read made before it.
                answered = time.monotonic()
                restarting = observed.restarting_at
                if down_since is not None and (restarting is None or answered < restarting):
                    observed.while_down.append((started - down_since, kind, response.status_code))


def test_killing_redis_mid_run_authenticates_nothing_and_service_resumes_alone(
    node: RunningServer, own_redis: RedisServer
) -> None:
    with httpx.Client(base_url=node.url, timeout=TIMEOUT) as client:
        assert (
            client.post(
                "/auth/register", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 201
        )
        web = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
        cookie = web.cookies[COOKIE]
        token = client.post(
            "/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD, "client": "api"},
        ).json()["access_token"]

    observed = Observed()
    workers = [
        threading.Thread(target=load, args=(node, cookie, token, observed)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        own_redis.kill()
        observed.down_since = time.monotonic()
        time.sleep(2.5)
        with httpx.Client(base_url=node.url, timeout=TIMEOUT) as client:
            health = client.get("/healthz")
        assert health.status_code == 503
        assert "redis" in health.json()["detail"].lower()
        observed.restarting_at = time.monotonic()
        own_redis.start()
    finally:
        time.sleep(0.2)
        observed.stop.set()
        for worker in workers:
            worker.join()

    assert not observed.errors, observed.errors[:10]
    cookie_seen = [status for _, kind, status in observed.while_down if kind == "cookie"]
    assert cookie_seen, "no cookie request was made while Redis was down"
    assert 200 not in cookie_seen
    # A login grants nothing while its session cannot be stored.
    assert 200 not in [status for _, kind, status in observed.while_down if kind == "login"]
    # A valid JWT is not trusted from memory once the node has noticed (within 1 s).
    late_bearer = [
        status
        for at, kind, status in observed.while_down
        if kind == "bearer" and at > FAIL_CLOSED_WITHIN
    ]
    assert late_bearer
    assert 200 not in late_bearer

    deadline = time.monotonic() + RESUME_DEADLINE
    with httpx.Client(base_url=node.url, timeout=TIMEOUT) as client:
        while True:
            me = client.get("/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"})
            bearer = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            if me.status_code == 200 and bearer.status_code == 200:
                break
            assert time.monotonic() < deadline, (me.status_code, bearer.status_code)
            time.sleep(0.1)
        assert client.get("/healthz").status_code == 200
        again = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert again.status_code == 200

"""Many stateless nodes: two real `gatepass serve` processes on one PostgreSQL and
one Redis, driven over HTTP as a load balancer would spread a client's requests.

The nodes start once for this module (each test uses its own accounts); each
test ends with both nodes' logs free of tracebacks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, running_server
from tests.servers import TEMPLATE, PostgresServer, RedisCluster, RedisServer

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(30.0)
COOKIE = "gatepass_session"
#: The contract: another node refuses a revoked access token within this.
PROPAGATION_DEADLINE = 1.0
CONCURRENT_REFRESHES = 20
MAX_FAILURES = 3


@dataclass
class Nodes:
    a: RunningServer
    b: RunningServer

    def both(self) -> list[RunningServer]:
        return [self.a, self.b]


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def nodes(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Nodes]:
    """Two nodes on one PostgreSQL and one Redis: once a standalone server, once a
    3-primary Redis Cluster (every path then runs across slots: no CROSSSLOT)."""
    database = f"e2e_nodes_{request.param.replace('-', '_')}"
    postgres_server.admin(
        f'DROP DATABASE IF EXISTS "{database}"', f'CREATE DATABASE "{database}" TEMPLATE {TEMPLATE}'
    )
    if request.param == "redis":
        standalone: RedisServer = request.getfixturevalue("redis_server")
        standalone.command("FLUSHALL")
        redis_url = standalone.url
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        redis_url = cluster.url
    env = {
        "GATEPASS_DEV": "1",
        "GATEPASS_DATABASE_URL": postgres_server.url(database),
        "GATEPASS_REDIS_URL": redis_url,
        "GATEPASS_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        # One issuer and audience for the deployment, whichever node signs.
        "GATEPASS_ISSUER": "http://gatepass.test",
    }
    root = tmp_path_factory.mktemp("nodes")
    with (
        running_server(root / "a", {**env, "GATEPASS_PUBLIC_URL": "http://127.0.0.1"}) as a,
        running_server(root / "b", {**env, "GATEPASS_PUBLIC_URL": "http://127.0.0.1"}) as b,
    ):
        yield Nodes(a, b)
        for node in (a, b):
            assert "Traceback" not in node.logs(), node.logs()
            assert "CROSSSLOT" not in node.logs(), node.logs()


def http(server: RunningServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=TIMEOUT, **kwargs)


def register(server: RunningServer, email: str) -> None:
    with http(server) as client:
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text


def web_login(server: RunningServer, email: str) -> tuple[str, str]:
    """Sign in on ``server`` as a browser; return (session cookie, CSRF token)."""
    with http(server) as client:
        response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return client.cookies[COOKIE], str(response.json()["csrf_token"])


def token_login(server: RunningServer, email: str) -> dict[str, Any]:
    with http(server) as client:
        response = client.post(
            "/auth/login", json={"email": email, "password": PASSWORD, "client": "mobile"}
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def me_with_cookie(server: RunningServer, cookie: str) -> int:
    with http(server) as client:
        return client.get("/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"}).status_code


def me_with_token(server: RunningServer, token: str) -> int:
    with http(server) as client:
        return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def refused_within(server: RunningServer, token: str, deadline: float) -> float:
    """Seconds until ``server`` refuses ``token`` (401); fails past ``deadline``."""
    started = time.monotonic()
    while True:
        status = me_with_token(server, token)
        elapsed = time.monotonic() - started
        if status == 401:
            return elapsed
        assert status == 200, status
        assert elapsed < deadline, f"still accepted after {elapsed:.2f} s"
        time.sleep(0.02)


def test_a_web_login_on_one_node_works_on_the_other(nodes: Nodes) -> None:
    register(nodes.a, "web@example.com")
    cookie, _ = web_login(nodes.a, "web@example.com")
    assert me_with_cookie(nodes.b, cookie) == 200


def test_a_cookie_logout_on_one_node_is_refused_on_the_other_at_once(nodes: Nodes) -> None:
    register(nodes.a, "out@example.com")
    cookie, csrf = web_login(nodes.a, "out@example.com")
    assert me_with_cookie(nodes.b, cookie) == 200
    with http(nodes.a) as client:
        response = client.post(
            "/auth/logout",
            headers={
                "Cookie": f"{COOKIE}={cookie}",
                "X-CSRF-Token": csrf,
                "Origin": "http://127.0.0.1",
            },
        )
    assert response.status_code == 204, response.text
    assert me_with_cookie(nodes.b, cookie) == 401


def test_a_bearer_logout_on_one_node_is_refused_on_the_other_within_a_second(
    nodes: Nodes,
) -> None:
    register(nodes.a, "bearer@example.com")
    pair = token_login(nodes.a, "bearer@example.com")
    token = pair["access_token"]
    assert me_with_token(nodes.b, token) == 200  # B has it cached as valid now
    with http(nodes.a) as client:
        response = client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 204, response.text
    refused_within(nodes.b, token, PROPAGATION_DEADLINE)


def test_logout_all_on_one_node_is_refused_on_the_other_within_a_second(nodes: Nodes) -> None:
    register(nodes.a, "all@example.com")
    pair = token_login(nodes.a, "all@example.com")
    other = token_login(nodes.b, "all@example.com")
    cookie, _ = web_login(nodes.b, "all@example.com")
    assert me_with_token(nodes.b, pair["access_token"]) == 200
    with http(nodes.a) as client:
        response = client.post(
            "/auth/logout-all", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
    assert response.status_code == 204, response.text
    assert me_with_cookie(nodes.b, cookie) == 401
    refused_within(nodes.b, pair["access_token"], PROPAGATION_DEADLINE)
    refused_within(nodes.b, other["access_token"], PROPAGATION_DEADLINE)


def test_a_refresh_token_rotated_on_one_node_and_replayed_on_the_other_kills_the_family(
    nodes: Nodes,
) -> None:
    register(nodes.a, "thief@example.com")
    pair = token_login(nodes.a, "thief@example.com")
    with http(nodes.a) as client:
        rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    with http(nodes.b) as client:
        replay = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert replay.status_code == 401
        # The family is dead: the legitimate successor is refused too, on either node.
        successor = rotated.json()["refresh_token"]
        assert client.post("/auth/refresh", json={"refresh_token": successor}).status_code == 401
    refused_within(nodes.b, rotated.json()["access_token"], PROPAGATION_DEADLINE)


def test_concurrent_refreshes_of_one_token_over_both_nodes_give_exactly_one_success(
    nodes: Nodes,
) -> None:
    register(nodes.a, "racer@example.com")
    token = token_login(nodes.a, "racer@example.com")["refresh_token"]

    def refresh(index: int) -> int:
        with http(nodes.both()[index % 2]) as client:
            return client.post("/auth/refresh", json={"refresh_token": token}).status_code

    with ThreadPoolExecutor(CONCURRENT_REFRESHES) as pool:
        statuses = list(pool.map(refresh, range(CONCURRENT_REFRESHES)))
    assert statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 401}, statuses


def test_a_lockout_counted_on_one_node_holds_on_the_other(nodes: Nodes) -> None:
    register(nodes.a, "locked@example.com")
    wrong = {"email": "locked@example.com", "password": "not the password"}
    with http(nodes.a) as client:
        for _ in range(MAX_FAILURES):
            assert client.post("/auth/login", json=wrong).status_code == 401
    with http(nodes.b) as client:
        response = client.post(
            "/auth/login", json={"email": "locked@example.com", "password": PASSWORD}
        )
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) > 0


def test_both_nodes_report_their_stores_healthy(nodes: Nodes) -> None:
    for node in nodes.both():
        with http(node) as client:
            assert client.get("/healthz").status_code == 200

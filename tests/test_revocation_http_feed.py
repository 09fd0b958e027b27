"""GET /auth/revocations, the feed resource servers follow, from the caller's side.

Over real HTTP against a real ``gatepass serve`` process: who may read it, what a
malformed request gets, cursors, snapshots and the long poll. The cases that need
time to pass (a cursor older than what the server keeps) or a store to break run
the real app in process with the injected clock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from gatepass.config import load_settings
from gatepass.core import Gatepass
from gatepass.errors import ConfigError
from gatepass.revocation import REVOCATION_POLL_SECONDS
from tests.conftest import PASSWORD, FakeClock, register, token_login
from tests.e2e_support import RunningServer, running_server

FEED_TOKEN = "feed-token-0123456789abcdefghijklmnopqrstuvwxyz"
FEED = "/auth/revocations"
PROBLEM = "application/problem+json"
TIMEOUT = httpx.Timeout(40.0)

pytestmark = pytest.mark.e2e


def auth(token: str = FEED_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two independent server processes (each its own data), both with the feed on."""
    env = {"GATEPASS_DEV": "1", "GATEPASS_REVOCATION_FEED_TOKEN": FEED_TOKEN}
    with (
        running_server(tmp_path_factory.mktemp("feed-a"), env) as a,
        running_server(tmp_path_factory.mktemp("feed-b"), env) as b,
    ):
        yield a, b
        for node in (a, b):
            assert "Traceback" not in node.logs(), node.logs()
            assert FEED_TOKEN not in node.logs()


@pytest.fixture
def server(servers: tuple[RunningServer, RunningServer]) -> RunningServer:
    return servers[0]


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        yield client


_accounts = iter(range(10**6))


def api_login(http: httpx.Client) -> dict[str, Any]:
    """A new user signed in as an API client: its token pair."""
    email = f"feed{next(_accounts)}@example.com"
    assert http.post("/auth/register", json={"email": email, "password": PASSWORD}).is_success
    response = http.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def logout(http: httpx.Client, access_token: str) -> None:
    response = http.post("/auth/logout", headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 204, response.text


def subjects(page: dict[str, Any]) -> set[tuple[str, str]]:
    return {(entry["kind"], entry["subject"]) for entry in page["revocations"]}


def jti_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["jti"])


# -- who may read it -----------------------------------------------------------------


def test_unauthenticated_caller_is_refused_with_401(http: httpx.Client) -> None:
    response = http.get(FEED)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-0123456789abcdefghijklmnopqrstuvwxyz",
        f"Bearer {FEED_TOKEN[:-1]}",  # a prefix of the right one
        f"Bearer {FEED_TOKEN}x",
        f"Basic {FEED_TOKEN}",
        FEED_TOKEN,
        "Bearer",
    ],
)
def test_wrong_feed_token_is_refused_with_401(http: httpx.Client, authorization: str) -> None:
    response = http.get(FEED, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "revocations" not in response.json()


def test_an_access_token_is_no_feed_token(http: httpx.Client) -> None:
    """A user's own access token (even an admin's) does not open the feed."""
    pair = api_login(http)
    response = http.get(FEED, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert response.status_code == 401


def test_feed_is_off_without_a_configured_token(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for headers in ({}, auth()):
        response = client.get(FEED, headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith(PROBLEM)


def test_feed_token_shorter_than_32_characters_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="GATEPASS_REVOCATION_FEED_TOKEN"):
        load_settings({"GATEPASS_REVOCATION_FEED_TOKEN": "short-0123456789"})
    with pytest.raises(ConfigError, match="GATEPASS_REVOCATION_FEED_TOKEN"):
        load_settings({"GATEPASS_REVOCATION_FEED_TOKEN": "has spaces " * 4})


def test_settings_repr_hides_the_feed_token() -> None:
    settings = load_settings({"GATEPASS_REVOCATION_FEED_TOKEN": FEED_TOKEN})
    assert FEED_TOKEN not in repr(settings)


# -- malformed requests are 4xx problems, never 500 ---------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "cursor=",
        "cursor=x",
        "cursor=0123456789abcdef",
        "cursor=0123456789ABCDEF-1",
        "cursor=0123456789abcdef-01",
        "cursor=0123456789abcdef--1",
        "cursor=0123456789abcdef-99999999999999999999",
        "cursor=" + "a" * 5000,
        "cursor=%00",
        "cursor=0123456789abcdef-1&cursor=0123456789abcdef-2",
        "wait=-1",
        "wait=31",
        "wait=30.5",
        "wait=nan",
        "wait=inf",
        "wait=1e1",
        "wait=abc",
        "wait=",
        "wait=1.2345",
        "wait=1&wait=2",
    ],
)
def test_malformed_cursor_or_wait_is_a_400_problem(http: httpx.Client, query: str) -> None:
    response = http.get(f"{FEED}?{query}", headers=auth())
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)


def test_authentication_comes_before_the_query_is_read(http: httpx.Client) -> None:
    """An unauthenticated caller learns nothing, not even which queries are valid."""
    assert http.get(f"{FEED}?cursor=bad").status_code == 401


# -- snapshots, cursors, long polls ---------------------------------------------------


def test_first_poll_gets_a_snapshot_of_live_revocations(http: httpx.Client) -> None:
    pair = api_login(http)
    logout(http, pair["access_token"])
    response = http.get(FEED, headers=auth())
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = response.json()
    assert page["snapshot"] is True
    assert ("jti", jti_of(pair["access_token"])) in subjects(page)
    assert page["retention"] > 0
    for entry in page["revocations"]:
        assert entry["expires_at"] > time.time()


def test_cursor_from_another_server_process_gets_a_snapshot(
    servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = servers
    with httpx.Client(base_url=b.url, timeout=TIMEOUT) as http_b:
        pair = api_login(http_b)
        logout(http_b, pair["access_token"])
        cursor_of_a = httpx.get(f"{a.url}{FEED}", headers=auth(), timeout=TIMEOUT).json()["cursor"]
        page = http_b.get(FEED, params={"cursor": cursor_of_a}, headers=auth()).json()
    assert page["snapshot"] is True
    assert ("jti", jti_of(pair["access_token"])) in subjects(page)
    assert page["cursor"] != cursor_of_a


def test_cursor_ahead_of_the_server_gets_a_snapshot(http: httpx.Client) -> None:
    boot = http.get(FEED, headers=auth()).json()["cursor"].split("-")[0]
    page = http.get(FEED, params={"cursor": f"{boot}-999999999"}, headers=auth()).json()
    assert page["snapshot"] is True


def test_long_poll_returns_at_once_when_something_is_revoked(http: httpx.Client) -> None:
    pair = api_login(http)
    cursor = http.get(FEED, headers=auth()).json()["cursor"]
    answer: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        response = http.get(FEED, params={"cursor": cursor, "wait": "20"}, headers=auth())
        answer["page"] = response.json()
        answer["took"] = time.monotonic() - started

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # let the poll reach the server and wait there
    logout(http, pair["access_token"])
    poller.join(25)

    page = answer["page"]
    assert page["snapshot"] is False
    assert ("jti", jti_of(pair["access_token"])) in subjects(page)
    assert page["cursor"] != cursor
    assert answer["took"] < 10  # woken by the revocation, not by the 20 s wait


def test_long_poll_without_news_answers_after_wait_with_no_entries(http: httpx.Client) -> None:
    cursor = http.get(FEED, headers=auth()).json()["cursor"]
    started = time.monotonic()
    response = http.get(FEED, params={"cursor": cursor, "wait": "1.5"}, headers=auth())
    took = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = response.json()
    assert page == {**page, "snapshot": False, "revocations": [], "cursor": cursor}
    assert took >= 1.4  # held for the wait: a heartbeat, not a busy loop


def test_entries_after_a_cursor_come_once(http: httpx.Client) -> None:
    first, second = api_login(http), api_login(http)
    cursor = http.get(FEED, headers=auth()).json()["cursor"]
    logout(http, first["access_token"])
    page = http.get(FEED, params={"cursor": cursor}, headers=auth()).json()
    assert ("jti", jti_of(first["access_token"])) in subjects(page)
    logout(http, second["access_token"])
    later = http.get(FEED, params={"cursor": page["cursor"]}, headers=auth()).json()
    assert later["snapshot"] is False
    # The second logout's token and family, and nothing the first poll already gave.
    assert [entry["kind"] for entry in later["revocations"]] == ["jti", "family"]
    assert ("jti", jti_of(second["access_token"])) in subjects(later)


# -- in process: time passes, stores break --------------------------------------------


def _gatepass(client: TestClient) -> Gatepass:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    return gp


def test_cursor_older_than_what_the_server_keeps_gets_a_snapshot(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(revocation_feed_token=FEED_TOKEN)
    register(client)
    old = token_login(client, kind="api")["access_token"]
    cursor = client.get(FEED, headers=auth()).json()["cursor"]
    assert client.post("/auth/logout", headers=auth(old)).status_code == 204
    # Every token the first logout concerned has expired: the journal drops it.
    retention = _gatepass(client).revocations.retention
    clock.advance(retention + 1)
    new = token_login(client, kind="api")["access_token"]
    assert client.post("/auth/logout", headers=auth(new)).status_code == 204

    page = client.get(FEED, params={"cursor": cursor}, headers=auth()).json()

    assert page["snapshot"] is True
    assert ("jti", jti_of(new)) in subjects(page)
    assert ("jti", jti_of(old)) not in subjects(page)


def test_feed_fails_closed_with_503_when_the_store_is_down(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(revocation_feed_token=FEED_TOKEN)
    assert client.get(FEED, headers=auth()).status_code == 200
    db = _gatepass(client).settings.data_dir / "gatepass.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE gatepass_revocations")
    clock.advance(REVOCATION_POLL_SECONDS + 1)

    response = client.get(FEED, headers=auth())

    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "revocations" not in response.json()

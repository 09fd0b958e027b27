"""HTTP tests of sign-in: enumeration resistance, account lockout, the per-IP limit and
X-Forwarded-For, registration, passwords kept out of responses and logs, and the
Prometheus counters that follow logins and sessions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gatepass.config import Settings
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app
from tests.conftest import BASE_URL, ORIGIN, PASSWORD, FakeClock, register

COOKIE = "__Host-gatepass_session"
MakeClient = Callable[..., TestClient]


def attempt(
    client: TestClient,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    client.cookies.clear()
    response = client.post(
        "/auth/login", json={"email": email, "password": password}, headers=headers or {}
    )
    client.cookies.clear()
    return response


def assert_problem(response: httpx2.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)


# --- enumeration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "unknown",
    ["nobody@example.com", "  NOBODY@example.com ", "not-an-email", "ada@example.co"],
)
def test_unknown_email_and_wrong_password_get_identical_responses(
    client: TestClient, unknown: str
) -> None:
    register(client)
    wrong_password = attempt(client, "ada@example.com", "not the password")
    unknown_email = attempt(client, unknown, "not the password")
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.content == unknown_email.content
    assert wrong_password.json() == unknown_email.json()
    for header in ("content-type", "www-authenticate", "cache-control", "content-length"):
        assert wrong_password.headers.get(header) == unknown_email.headers.get(header)
    assert COOKIE not in wrong_password.cookies
    assert COOKIE not in unknown_email.cookies


def test_unknown_email_with_too_short_password_looks_like_a_wrong_password(
    client: TestClient,
) -> None:
    register(client)
    known = attempt(client, "ada@example.com", "short")
    unknown = attempt(client, "nobody@example.com", "short")
    assert known.status_code == unknown.status_code == 401
    assert known.content == unknown.content


# --- account lockout ------------------------------------------------------------------


def test_account_locks_after_max_failures_even_for_the_right_password(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    for _ in range(3):
        assert attempt(client, password="wrong password").status_code == 401
    locked = attempt(client)
    assert_problem(locked, 429)
    retry_after = int(locked.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert COOKIE not in locked.cookies

    clock.advance(30)
    still = attempt(client)
    assert_problem(still, 429)
    assert int(still.headers["retry-after"]) <= 30
    assert_problem(attempt(client, password="wrong password"), 429)

    clock.advance(31)
    response = attempt(client)
    assert response.status_code == 200
    assert COOKIE in response.cookies


def test_failures_below_the_limit_do_not_lock_and_success_resets_them(
    make_client: MakeClient,
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    for _ in range(2):
        assert attempt(client, password="wrong password").status_code == 401
    assert attempt(client).status_code == 200
    for _ in range(2):
        assert attempt(client, password="wrong password").status_code == 401
    assert attempt(client).status_code == 200


def test_failures_spread_beyond_the_window_do_not_lock(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    for _ in range(6):
        assert attempt(client, password="wrong password").status_code == 401
        clock.advance(31)
    assert attempt(client).status_code == 200


def test_lockout_is_per_account(make_client: MakeClient) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client, "ada@example.com")
    register(client, "bob@example.com")
    for _ in range(3):
        attempt(client, "ada@example.com", "wrong password")
    assert attempt(client, "ada@example.com").status_code == 429
    assert attempt(client, "bob@example.com").status_code == 200


def test_lockout_applies_to_every_spelling_of_the_email(make_client: MakeClient) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    for spelling in ("ada@example.com", "ADA@example.com", " Ada@Example.COM "):
        attempt(client, spelling, "wrong password")
    assert attempt(client, "ada@example.com").status_code == 429


def test_unknown_email_locks_exactly_like_a_real_one(make_client: MakeClient) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    known = [attempt(client, "ada@example.com", "wrong password") for _ in range(4)]
    unknown = [attempt(client, "nobody@example.com", "wrong password") for _ in range(4)]
    assert [r.status_code for r in known] == [401, 401, 401, 429]
    assert [r.status_code for r in unknown] == [401, 401, 401, 429]
    assert known[-1].content == unknown[-1].content
    assert known[-1].headers["retry-after"] == unknown[-1].headers["retry-after"]


# --- per-IP limit ---------------------------------------------------------------------


def test_per_ip_limit_refuses_attempts_across_accounts(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_ip_limit="3")
    register(client)
    assert attempt(client, "a@example.com", "wrong password").status_code == 401
    assert attempt(client, "b@example.com", "wrong password").status_code == 401
    assert attempt(client).status_code == 200
    limited = attempt(client, "c@example.com", "wrong password")
    assert_problem(limited, 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 300
    assert_problem(attempt(client), 429)

    clock.advance(301)
    assert attempt(client).status_code == 200


def test_x_forwarded_for_is_ignored_by_default(make_client: MakeClient) -> None:
    client = make_client(login_ip_limit="3")
    register(client)
    for n in range(3):
        response = attempt(client, headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert response.status_code == 200
    dodged = attempt(client, headers={"X-Forwarded-For": "198.51.100.99"})
    assert dodged.status_code == 429


def test_x_forwarded_for_does_not_change_recorded_ip_by_default(client: TestClient) -> None:
    register(client)
    response = attempt(client, headers={"X-Forwarded-For": "198.51.100.7"})
    cookie = response.cookies[COOKIE]
    rows = client.get("/auth/sessions", headers={"Cookie": f"{COOKIE}={cookie}"}).json()
    client.cookies.clear()
    assert [row["ip"] for row in rows] == ["127.0.0.1"]


@pytest.fixture
def proxied_client(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> Iterator[Callable[..., TestClient]]:
    """The real app behind a peer with a real IP address: the default TestClient peer is
    the string "testclient", which no GATEPASS_TRUSTED_PROXIES entry can match."""
    opened: list[TestClient] = []

    def make(peer: str, **env: str) -> TestClient:
        app = create_app(make_settings(**env), clock=clock, hasher=fast_hasher)
        test_client = TestClient(
            app, base_url=BASE_URL, raise_server_exceptions=False, client=(peer, 50000)
        )
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)


def test_x_forwarded_for_from_trusted_proxy_sets_the_client_ip(
    proxied_client: Callable[..., TestClient],
) -> None:
    client = proxied_client("10.0.0.5", trusted_proxies="10.0.0.0/8", login_ip_limit="3")
    register(client)
    for _ in range(3):
        assert attempt(client, headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert attempt(client, headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    response = attempt(client, headers={"X-Forwarded-For": "203.0.113.2"})
    assert response.status_code == 200
    cookie = response.cookies[COOKIE]
    rows = client.get("/auth/sessions", headers={"Cookie": f"{COOKIE}={cookie}"}).json()
    client.cookies.clear()
    assert {row["ip"] for row in rows} == {"203.0.113.1", "203.0.113.2"}


def test_spoofed_left_entries_of_x_forwarded_for_do_not_dodge_the_limit(
    proxied_client: Callable[..., TestClient],
) -> None:
    # The trusted proxy appends the real client; whatever the client sent before it is
    # attacker-controlled and must not choose the rate-limit key.
    client = proxied_client("10.0.0.5", trusted_proxies="10.0.0.5", login_ip_limit="3")
    register(client)
    statuses = [
        attempt(client, headers={"X-Forwarded-For": f"192.0.2.{n}, 203.0.113.1"}).status_code
        for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_x_forwarded_for_from_untrusted_peer_with_real_ip_is_ignored(
    proxied_client: Callable[..., TestClient],
) -> None:
    client = proxied_client("192.0.2.50", trusted_proxies="10.0.0.0/8", login_ip_limit="3")
    register(client)
    statuses = [
        attempt(client, headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    response = attempt(client, "other@example.com", "wrong password")
    assert response.status_code == 429


# --- registration ---------------------------------------------------------------------


def test_register_returns_201_with_id_and_normalised_email_and_no_session(
    client: TestClient,
) -> None:
    response = client.post(
        "/auth/register", json={"email": "  Ada@Example.COM ", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email"}
    assert body["email"] == "ada@example.com"
    assert body["id"]
    assert COOKIE not in response.cookies
    assert attempt(client).status_code == 200


@pytest.mark.parametrize("email", ["ada@example.com", "ADA@EXAMPLE.COM", " ada@example.com\t"])
def test_register_taken_email_is_409(client: TestClient, email: str) -> None:
    register(client)
    response = client.post("/auth/register", json={"email": email, "password": "another password"})
    assert_problem(response, 409)
    assert attempt(client).status_code == 200, "the original password still works"
    assert attempt(client, password="another password").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ada@example.com", "password": "short"},
        {"email": "ada@example.com", "password": "x" * 1025},
        {"email": "ada@example.com", "password": ""},
        {"email": "not an email", "password": PASSWORD},
        {"email": "ada@", "password": PASSWORD},
        {"email": "@example.com", "password": PASSWORD},
        {"email": "ada@localhost", "password": PASSWORD},
        {"email": "a\u202eda@example.com", "password": PASSWORD},
        {"email": "a\x00da@example.com", "password": PASSWORD},
        {"email": "", "password": PASSWORD},
        {"email": "a" * 250 + "@example.com", "password": PASSWORD},
        {"email": "ada@example.com"},
        {"password": PASSWORD},
        {},
        {"email": 42, "password": PASSWORD},
        {"email": "ada@example.com", "password": 12345678},
        {"email": None, "password": PASSWORD},
        {"email": ["ada@example.com"], "password": PASSWORD},
        {"email": "ada@example.com", "password": {"value": PASSWORD}},
        {"email": "ada@example.com", "password": True},
    ],
)
def test_register_invalid_input_is_422_and_creates_nothing(
    client: TestClient, body: dict[str, object]
) -> None:
    response = client.post("/auth/register", json=body)
    assert_problem(response, 422)
    assert register(client)["email"] == "ada@example.com", "the email is still free"


# --- passwords never leak -------------------------------------------------------------

SECRET_PASSWORD = "Zebra-Quokka-4417-unique"


def test_password_never_appears_in_responses_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    secret = SECRET_PASSWORD
    responses: list[httpx2.Response] = []

    def post(url: str, **kwargs: Any) -> httpx2.Response:
        client.cookies.clear()
        response = client.post(url, **kwargs)
        client.cookies.clear()
        responses.append(response)
        return response

    assert post("/auth/register", json={"email": "ada@example.com", "password": secret}).is_success
    # Validation errors naming the password field, with the password as the value.
    post("/auth/register", json={"email": "bob@example.com", "password": secret[:7]})
    post("/auth/register", json={"email": "bob@example.com", "password": secret * 200})
    post("/auth/register", json={"email": secret, "password": secret})
    post("/auth/register", json={"email": "bob@example.com", "password": [secret]})
    post("/auth/login", json={"email": "ada@example.com", "password": secret, "client": secret})
    post("/auth/login", json={"email": "ada@example.com", "password": secret * 400})
    post("/auth/login", json={"email": "ada@example.com", "password": secret[:-1]})
    post("/auth/login", json={"email": "nobody@example.com", "password": secret})
    post("/auth/login", json={"email": "ada@example.com", "password": {"p": secret}})
    post(
        "/auth/login",
        content=f'{{"password": "{secret}", '.encode(),
        headers={"Content-Type": "application/json"},
    )
    post(
        "/auth/login",
        content=f'{{"password": "{secret}"}}'.encode(),
        headers={"Content-Type": "text/plain"},
    )
    login = post("/auth/login", json={"email": "ada@example.com", "password": secret})
    assert login.status_code == 200
    cookie = login.cookies[COOKIE]
    csrf = login.json()["csrf_token"]
    auth = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf, "Origin": ORIGIN}
    post("/auth/password", json={"current_password": secret, "new_password": "short"}, headers=auth)
    post(
        "/auth/password",
        json={"current_password": secret[:-1], "new_password": secret + "!"},
        headers=auth,
    )
    post("/auth/password", json={"current_password": secret, "new_password": 5}, headers=auth)
    for r in range(3):
        post("/auth/login", json={"email": "ada@example.com", "password": f"{secret}{r}"})

    statuses = {r.status_code for r in responses}
    assert {200, 201, 401, 422} <= statuses
    for response in responses:
        assert secret[:12] not in response.text
        for name, value in response.headers.items():
            assert secret[:12] not in value, name
    assert caplog.records
    for record in caplog.records:
        line = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert secret[:12] not in line, record.name
    assert secret[:12] not in caplog.text


# --- metrics --------------------------------------------------------------------------


def metric(client: TestClient, name: str, **labels: str) -> float:
    client.cookies.clear()
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_metrics_count_login_success_and_failure(client: TestClient) -> None:
    register(client)
    attempt(client, password="wrong password")
    attempt(client, "nobody@example.com", "wrong password")
    attempt(client)
    assert metric(client, "gatepass_logins_total", result="failure") == 2
    assert metric(client, "gatepass_logins_total", result="success") == 1


def test_metrics_count_lockouts(make_client: MakeClient) -> None:
    client = make_client(login_max_failures="2", login_lockout="60")
    register(client)
    assert metric(client, "gatepass_lockouts_total") == 0
    attempt(client, password="wrong password")
    assert metric(client, "gatepass_lockouts_total") == 0
    attempt(client, password="wrong password")
    assert metric(client, "gatepass_lockouts_total") == 1
    attempt(client)  # refused while locked: not a new lockout, not a login
    assert metric(client, "gatepass_lockouts_total") == 1
    assert metric(client, "gatepass_logins_total", result="success") == 0


def test_metrics_count_sessions_created_and_ended(client: TestClient) -> None:
    register(client)

    def login_cookie() -> tuple[str, str]:
        response = attempt(client)
        return response.cookies[COOKIE], response.json()["csrf_token"]

    def as_session(cookie: str, csrf: str) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf, "Origin": ORIGIN}

    first = login_cookie()
    second = login_cookie()
    third = login_cookie()
    assert metric(client, "gatepass_sessions_created_total") == 3
    assert metric(client, "gatepass_sessions_ended_total") == 0

    assert client.post("/auth/logout", headers=as_session(*first)).status_code == 204
    client.cookies.clear()
    assert metric(client, "gatepass_sessions_ended_total") == 1

    rows = client.get("/auth/sessions", headers=as_session(*third)).json()
    target = next(r["id"] for r in rows if not r["current"])
    client.cookies.clear()
    assert client.delete(f"/auth/sessions/{target}", headers=as_session(*third)).status_code == 204
    client.cookies.clear()
    assert metric(client, "gatepass_sessions_ended_total") == 2
    del second

    fourth = login_cookie()
    assert client.post("/auth/logout-all", headers=as_session(*fourth)).status_code == 204
    client.cookies.clear()
    assert metric(client, "gatepass_sessions_created_total") == 4
    assert metric(client, "gatepass_sessions_ended_total") == 4


def test_metrics_count_planted_session_destroyed_at_login(client: TestClient) -> None:
    register(client)
    planted = attempt(client).cookies[COOKIE]
    client.cookies.clear()
    response = client.post(
        "/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"Cookie": f"{COOKIE}={planted}"},
    )
    client.cookies.clear()
    assert response.status_code == 200
    assert metric(client, "gatepass_sessions_created_total") == 2
    assert metric(client, "gatepass_sessions_ended_total") == 1


def test_metrics_failed_requests_do_not_move_session_counters(client: TestClient) -> None:
    register(client)
    attempt(client, password="wrong password")
    client.post("/auth/logout", headers={"X-CSRF-Token": "x"})
    client.delete("/auth/sessions/nope")
    assert metric(client, "gatepass_sessions_created_total") == 0
    assert metric(client, "gatepass_sessions_ended_total") == 0

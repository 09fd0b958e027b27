"""Attacks on the auth server's web rules, from the attacker's side: DNS rebinding and
forged forwarding headers against the own origin, redirects built from ``Host``,
an open ``/metrics``, and session cookies tossed in from a sibling domain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from gatepass.config import load_settings
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app
from tests.conftest import BASE_URL, ORIGIN, PASSWORD, FakeClock, register, token_login

MakeClient = Callable[..., TestClient]
COOKIE = "__Host-gatepass_session"
DEV_COOKIE = "gatepass_session"
LOGIN_CSRF_COOKIE = "__Host-gatepass_login_csrf"
EVIL = "evil.example"
REMOTE_PEER = ("203.0.113.9", 40000)
METRICS_TOKEN = "metrics-token-0123456789abcdef"
CREDENTIALS = {"email": "ada@example.com", "password": PASSWORD}


def problem_without_location(response: httpx2.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers


def web_login(client: TestClient, email: str = "ada@example.com") -> tuple[str, str]:
    """Sign in with an empty jar; return (session cookie value, CSRF token)."""
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    cookie = response.cookies[COOKIE]
    client.cookies.clear()
    return cookie, str(response.json()["csrf_token"])


def me_status(client: TestClient, cookie_header: str) -> int:
    client.cookies.clear()
    return client.get("/auth/me", headers={"Cookie": cookie_header}).status_code


@pytest.fixture
def unconfigured_client(
    tmp_path: Path, clock: FakeClock, fast_hasher: PasswordHasher
) -> Iterator[Callable[..., TestClient]]:
    """The app with exactly the given settings: no test default for the public URL."""
    opened: list[TestClient] = []

    def make(base_url: str, **env: str) -> TestClient:
        environ = {f"GATEPASS_{k.upper()}": v for k, v in env.items()}
        settings = load_settings(environ, data_dir=tmp_path / ".gatepass")
        app = create_app(settings, clock=clock, hasher=fast_hasher)
        client = TestClient(app, base_url=base_url, client=("127.0.0.1", 50000))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


# --- DNS rebinding: Host never decides the own origin ---------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dns_rebinding_registration_is_refused(client: TestClient, scheme: str) -> None:
    # The attacker's page, rebound to this server, names itself in Host and Origin alike.
    headers = {"Host": EVIL, "Origin": f"{scheme}://{EVIL}"}
    response = client.post("/auth/register", json=CREDENTIALS, headers=headers)
    problem_without_location(response, 403)
    assert client.post("/auth/register", json=CREDENTIALS).status_code == 201, "nothing created"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dns_rebinding_login_is_refused_without_a_session(client: TestClient, scheme: str) -> None:
    register(client)
    client.cookies.clear()
    headers = {"Host": EVIL, "Origin": f"{scheme}://{EVIL}"}
    for body in (CREDENTIALS, {**CREDENTIALS, "client": "api"}):
        response = client.post("/auth/login", json=body, headers=headers)
        problem_without_location(response, 403)
        assert COOKIE not in response.cookies
        assert "access_token" not in response.text


def test_dns_rebinding_logout_with_the_session_cookie_is_refused(client: TestClient) -> None:
    register(client)
    cookie, csrf = web_login(client)
    response = client.post(
        "/auth/logout",
        headers={
            "Host": EVIL,
            "Origin": f"https://{EVIL}",
            "Cookie": f"{COOKIE}={cookie}",
            "X-CSRF-Token": csrf,
        },
    )
    problem_without_location(response, 403)
    assert me_status(client, f"{COOKIE}={cookie}") == 200, "the session survived"


def test_foreign_origin_on_a_bearer_request_is_refused(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    response = client.post(
        "/auth/logout", headers={**bearer, "Host": EVIL, "Origin": f"https://{EVIL}"}
    )
    problem_without_location(response, 403)
    assert client.get("/auth/me", headers=bearer).status_code == 200, "the token survived"


def test_foreign_host_header_is_ignored_not_refused(client: TestClient) -> None:
    register(client)
    client.cookies.clear()
    response = client.post(
        "/auth/login", json=CREDENTIALS, headers={"Host": EVIL, "Origin": ORIGIN}
    )
    assert response.status_code == 200, response.text
    assert client.get("/healthz", headers={"Host": EVIL}).status_code == 200


@pytest.mark.parametrize(
    "forwarded",
    [
        {"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "http"},
        {"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https", "Forwarded": f"host={EVIL}"},
    ],
)
def test_forwarded_host_and_proto_from_an_untrusted_peer_change_nothing(
    make_client: MakeClient, forwarded: dict[str, str]
) -> None:
    client = make_client(peer=REMOTE_PEER)
    for origin in (f"http://{EVIL}", f"https://{EVIL}"):
        headers = {**forwarded, "Host": EVIL, "Origin": origin}
        response = client.post("/auth/register", json=CREDENTIALS, headers=headers)
        problem_without_location(response, 403)


def test_forwarded_proto_from_a_trusted_proxy_does_not_widen_the_own_origin(
    make_client: MakeClient,
) -> None:
    # Even a trusted proxy cannot turn the https public URL into an http own origin.
    client = make_client(trusted_proxies="127.0.0.1")
    headers = {"X-Forwarded-Proto": "http", "Origin": "http://testserver"}
    response = client.post("/auth/register", json=CREDENTIALS, headers=headers)
    problem_without_location(response, 403)
    headers = {"X-Forwarded-Host": EVIL, "Origin": f"https://{EVIL}"}
    response = client.post("/auth/register", json=CREDENTIALS, headers=headers)
    problem_without_location(response, 403)


@pytest.mark.parametrize(
    "origin", ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"]
)
def test_every_loopback_spelling_is_the_own_origin_of_a_loopback_host(
    make_client: MakeClient, origin: str
) -> None:
    client = make_client(public_url="http://127.0.0.1:8000")
    response = client.post("/auth/register", json=CREDENTIALS, headers={"Origin": origin})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8001",  # another local service
        "https://localhost:8000",
        "http://127.0.0.2:8000",
        "http://localhost.evil.example:8000",
        "http://localhost",
    ],
)
def test_other_local_origins_are_refused_for_a_loopback_host(
    make_client: MakeClient, origin: str
) -> None:
    client = make_client(public_url="http://127.0.0.1:8000")
    response = client.post("/auth/register", json=CREDENTIALS, headers={"Origin": origin})
    problem_without_location(response, 403)


@pytest.mark.parametrize(
    "origin", ["https://localhost", "http://localhost", "https://127.0.0.1", "https://[::1]"]
)
def test_public_host_does_not_accept_a_local_origin(make_client: MakeClient, origin: str) -> None:
    client = make_client(public_url="https://auth.example")
    response = client.post("/auth/register", json=CREDENTIALS, headers={"Origin": origin})
    problem_without_location(response, 403)
    ok = client.post("/auth/register", json=CREDENTIALS, headers={"Origin": "https://auth.example"})
    assert ok.status_code == 201, ok.text


def test_default_own_origin_is_the_listening_loopback_address(
    unconfigured_client: Callable[..., TestClient],
) -> None:
    # No GATEPASS_PUBLIC_URL or GATEPASS_ISSUER: http://HOST:PORT, in every loopback spelling.
    client = unconfigured_client("http://localhost:8000", dev="1")
    refused = client.post(
        "/auth/register", json=CREDENTIALS, headers={"Host": EVIL, "Origin": f"http://{EVIL}"}
    )
    problem_without_location(refused, 403)
    accepted = client.post(
        "/auth/register", json=CREDENTIALS, headers={"Origin": "http://localhost:8000"}
    )
    assert accepted.status_code == 201, accepted.text


# --- wildcard bind warning --------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_bind_without_public_url_warns_at_start_up(
    unconfigured_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture, host: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="gatepass"):
        unconfigured_client(BASE_URL, host=host)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("GATEPASS_PUBLIC_URL" in w and "GATEPASS_ISSUER" in w for w in warnings), warnings


def test_wildcard_bind_with_public_url_starts_without_warning(
    unconfigured_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gatepass"):
        unconfigured_client(BASE_URL, host="0.0.0.0", public_url=BASE_URL)
    assert "GATEPASS_PUBLIC_URL" not in caplog.text


# --- no redirects built from Host -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/auth/login/"),
        ("POST", "/auth/register/"),
        ("GET", "/auth/me/"),
        ("GET", "/account/"),
        ("GET", "/login/"),
        ("GET", "/metrics/"),
        ("GET", "/static"),
        ("GET", "/auth/login//"),
    ],
)
def test_trailing_slash_is_404_without_a_redirect_to_a_host_of_the_attackers_choice(
    client: TestClient, method: str, url: str
) -> None:
    register(client)
    client.cookies.clear()
    response = client.request(
        method,
        url,
        json=CREDENTIALS if method == "POST" else None,
        headers={"Host": EVIL, "Origin": ORIGIN},
        follow_redirects=False,
    )
    problem_without_location(response, 404)
    assert COOKIE not in response.cookies


@pytest.mark.parametrize("url", ["/", "/account"])
def test_html_page_redirects_are_relative_whatever_the_host(client: TestClient, url: str) -> None:
    response = client.get(url, headers={"Host": EVIL}, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert EVIL not in location


# --- /metrics ---------------------------------------------------------------------------


def test_metrics_from_a_remote_peer_are_refused(make_client: MakeClient) -> None:
    client = make_client(peer=REMOTE_PEER)
    problem_without_location(client.get("/metrics"), 403)


def test_metrics_from_a_remote_peer_spoofing_a_loopback_forwarded_for_are_refused(
    make_client: MakeClient,
) -> None:
    client = make_client(peer=REMOTE_PEER)
    response = client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    problem_without_location(response, 403)


def test_metrics_through_a_trusted_proxy_for_a_remote_client_are_refused(
    make_client: MakeClient,
) -> None:
    client = make_client(peer=("10.0.0.5", 40000), trusted_proxies="10.0.0.0/8")
    response = client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    problem_without_location(response, 403)


@pytest.mark.parametrize(
    "peer", [("127.0.0.1", 50000), ("127.1.2.3", 50000), ("::1", 50000), ("::ffff:127.0.0.1", 1)]
)
def test_metrics_answer_a_loopback_peer(make_client: MakeClient, peer: tuple[str, int]) -> None:
    response = make_client(peer=peer).get("/metrics")
    assert response.status_code == 200
    assert "gatepass_logins" in response.text


def test_metrics_answer_a_loopback_client_behind_a_trusted_proxy(make_client: MakeClient) -> None:
    client = make_client(peer=("10.0.0.5", 40000), trusted_proxies="10.0.0.0/8")
    response = client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 200


def test_metrics_refuse_starlettes_made_up_peer_name(make_client: MakeClient) -> None:
    # "testclient" is no IP address: it must not count as loopback.
    problem_without_location(make_client(peer=("testclient", 50000)).get("/metrics"), 403)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {METRICS_TOKEN}", "Bearer ", METRICS_TOKEN],
    ids=["none", "wrong", "basic", "empty", "no-scheme"],
)
@pytest.mark.parametrize("peer", [REMOTE_PEER, ("127.0.0.1", 50000)], ids=["remote", "loopback"])
def test_metrics_without_the_right_token_are_401_even_from_loopback(
    make_client: MakeClient,
    authorization: str | None,
    peer: tuple[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(peer=peer, metrics_token=METRICS_TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    with caplog.at_level(logging.DEBUG):
        response = client.get("/metrics", headers=headers)
    problem_without_location(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert METRICS_TOKEN not in response.text
    assert METRICS_TOKEN not in caplog.text


def test_metrics_with_the_right_token_answer_a_remote_peer(make_client: MakeClient) -> None:
    client = make_client(peer=REMOTE_PEER, metrics_token=METRICS_TOKEN)
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert "gatepass_logins" in response.text


# --- cookie tossing: two values of the session cookie -----------------------------------


def _two_sessions(client: TestClient) -> tuple[tuple[str, str], tuple[str, str]]:
    register(client)
    register(client, "eve@example.com")
    return web_login(client), web_login(client, "eve@example.com")


@pytest.mark.parametrize("order", ["victim-first", "attacker-first"])
def test_tossed_session_cookie_is_refused_as_ambiguous(client: TestClient, order: str) -> None:
    (victim, _), (attacker, _) = _two_sessions(client)
    values = [victim, attacker] if order == "victim-first" else [attacker, victim]
    header = "; ".join(f"{COOKIE}={v}" for v in values)
    client.cookies.clear()
    response = client.get("/auth/me", headers={"Cookie": header})
    problem_without_location(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert me_status(client, f"{COOKIE}={victim}") == 200
    assert me_status(client, f"{COOKIE}={attacker}") == 200


def test_session_cookie_sent_in_two_cookie_headers_is_ambiguous(client: TestClient) -> None:
    (victim, _), (attacker, _) = _two_sessions(client)
    client.cookies.clear()
    headers = [("Cookie", f"{COOKIE}={victim}"), ("Cookie", f"{COOKIE}={attacker}")]
    response = client.get("/auth/me", headers=headers)
    problem_without_location(response, 401)


@pytest.mark.parametrize("whose_csrf", ["victim", "attacker"])
@pytest.mark.parametrize("url", ["/auth/logout", "/auth/logout-all"])
def test_tossed_session_cookie_cannot_act_as_either_session(
    client: TestClient, whose_csrf: str, url: str
) -> None:
    (victim, victim_csrf), (attacker, attacker_csrf) = _two_sessions(client)
    csrf = victim_csrf if whose_csrf == "victim" else attacker_csrf
    client.cookies.clear()
    response = client.post(
        url,
        headers={
            "Cookie": f"{COOKIE}={victim}; {COOKIE}={attacker}",
            "X-CSRF-Token": csrf,
            "Origin": ORIGIN,
        },
    )
    problem_without_location(response, 401)
    assert me_status(client, f"{COOKIE}={victim}") == 200
    assert me_status(client, f"{COOKIE}={attacker}") == 200


def test_tossed_cookie_in_dev_mode_is_refused(make_client: MakeClient) -> None:
    # Dev mode has no __Host- prefix, so a sibling domain can really toss this one.
    client = make_client(dev="1")
    register(client)
    response = client.post("/auth/login", json=CREDENTIALS)
    victim = response.cookies[DEV_COOKIE]
    client.cookies.clear()
    header = f"{DEV_COOKIE}=planted.value; {DEV_COOKIE}={victim}"
    problem_without_location(client.get("/auth/me", headers={"Cookie": header}), 401)
    assert me_status(client, f"{DEV_COOKIE}={victim}") == 200


def test_login_with_a_tossed_cookie_issues_a_fresh_session_and_adopts_neither(
    client: TestClient,
) -> None:
    (victim, _), (attacker, _) = _two_sessions(client)
    client.cookies.clear()
    response = client.post(
        "/auth/login",
        json=CREDENTIALS,
        headers={"Cookie": f"{COOKIE}={attacker}; {COOKIE}={victim}"},
    )
    assert response.status_code == 200, response.text
    fresh = response.cookies[COOKIE]
    client.cookies.clear()
    assert fresh not in (victim, attacker)
    assert me_status(client, f"{COOKIE}={fresh}") == 200
    assert me_status(client, f"{COOKIE}={attacker}") == 200, "the attacker's is not the victim's"


def _login_form_token(client: TestClient) -> str:
    """A sign-in form's double-submit token (the hidden field holds the cookie's value)."""
    client.cookies.clear()
    token = client.get("/login").cookies[LOGIN_CSRF_COOKIE]
    client.cookies.clear()
    return token


def test_tossed_login_form_token_cookie_is_refused(client: TestClient) -> None:
    register(client)
    mine = _login_form_token(client)
    planted = _login_form_token(client)
    form: dict[str, Any] = {**CREDENTIALS, "csrf_token": planted}
    response = client.post(
        "/auth/login",
        data=form,
        headers={"Cookie": f"{LOGIN_CSRF_COOKIE}={mine}; {LOGIN_CSRF_COOKIE}={planted}"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert COOKIE not in response.cookies

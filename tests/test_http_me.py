"""``GET /auth/me`` is answered ahead of the router (gatepass.server.me_endpoint): the
answers and refusals it must keep, from the client's and the attacker's side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app
from tests.conftest import ORIGIN, PASSWORD, FakeClock, bearer, login, register, token_login

COOKIE = "__Host-gatepass_session"
PROBLEM = "application/problem+json"


def assert_refusal(response: Any, challenge: str) -> None:
    """A 401 problem document with its challenge and the JSON security header."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == challenge
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    assert body["status"] == 401
    assert {"type", "title", "detail"} <= set(body)


@pytest.mark.parametrize("credential", ["bearer", "session"])
def test_me_answers_the_user_with_no_store_and_nosniff(
    client: TestClient, credential: str, clock: FakeClock
) -> None:
    user = register(client)
    headers = {}
    if credential == "bearer":
        headers = bearer(token_login(client)["access_token"])
        client.cookies.clear()
    else:
        login(client)
    response = client.get("/auth/me", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "id": user["id"],
        "email": "ada@example.com",
        "roles": ["user"],
        "email_verified": False,
        "method": credential,
        # A password sign-in, made now (the test's clock).
        "auth_time": int(clock()),
        "amr": ["pwd"],
    }
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == len(response.content)


def test_me_without_a_credential_is_a_problem_with_a_bearer_challenge(client: TestClient) -> None:
    assert_refusal(client.get("/auth/me"), "Bearer")


def test_forged_bearer_riding_with_a_valid_session_cookie_is_refused(client: TestClient) -> None:
    register(client)
    login(client)  # the valid session cookie stays in the jar
    forged = token_login(client)["access_token"][:-4] + "AAAA"
    response = client.get("/auth/me", headers=bearer(forged))
    assert_refusal(response, 'Bearer error="invalid_token"')
    assert client.get("/auth/me").json()["method"] == "session"


def test_tossed_session_cookie_on_me_is_refused_with_a_problem(client: TestClient) -> None:
    register(client)
    register(client, "eve@example.com")
    login(client)
    victim = client.cookies[COOKIE]
    client.cookies.clear()
    login(client, "eve@example.com")
    attacker = client.cookies[COOKIE]
    client.cookies.clear()
    response = client.get("/auth/me", headers={"Cookie": f"{COOKIE}={attacker}; {COOKIE}={victim}"})
    assert_refusal(response, "Bearer")


def test_logged_out_bearer_token_replayed_on_me_is_refused(client: TestClient) -> None:
    register(client)
    token = token_login(client)["access_token"]
    client.cookies.clear()
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    assert_refusal(client.get("/auth/me", headers=bearer(token)), 'Bearer error="invalid_token"')


def test_session_cookie_with_a_padded_signature_is_refused(client: TestClient) -> None:
    """One signature, one spelling: base64 padding after a genuine signature (which a
    lenient decoder drops) makes no valid cookie."""
    register(client)
    login(client)
    genuine = client.cookies[COOKIE]
    client.cookies.clear()
    assert client.get("/auth/me", headers={"Cookie": f"{COOKIE}={genuine}"}).status_code == 200
    response = client.get("/auth/me", headers={"Cookie": f"{COOKIE}={genuine}="})
    assert_refusal(response, "Bearer")


def test_session_idle_timeout_still_applies_on_me(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(session_idle_timeout="600")
    register(client)
    login(client)
    clock.advance(599)
    assert client.get("/auth/me").status_code == 200  # seen: the idle clock restarts
    clock.advance(599)
    assert client.get("/auth/me").status_code == 200
    clock.advance(601)
    assert_refusal(client.get("/auth/me"), "Bearer")


def test_head_me_answers_like_get_without_a_body(client: TestClient) -> None:
    register(client)
    login(client)
    get = client.get("/auth/me")
    head = client.head("/auth/me")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["cache-control"] == "no-store"
    client.cookies.clear()
    assert client.head("/auth/me").status_code == 401


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_me_are_405_problems_with_allow(client: TestClient, method: str) -> None:
    register(client)
    login(client)
    response = client.request(method, "/auth/me", headers={"Origin": ORIGIN})
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("url", ["/auth/me/", "/auth/me//", "/auth/mex", "/auth/Me"])
def test_near_misses_of_me_are_404_problems(client: TestClient, url: str) -> None:
    register(client)
    login(client)
    response = client.get(url)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "location" not in response.headers


def test_me_under_a_root_path_keeps_its_rules(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    """Mounted under a prefix (as the framework adapters forward to it), /auth/me is
    still the fast endpoint, with the same credential rules."""

    async def scenario() -> None:
        gp = await Gatepass.open(make_settings(), clock=clock, hasher=fast_hasher)
        try:
            app = create_app(gatepass=gp)
            transport = httpx.ASGITransport(app=app, root_path="/id")
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as http:
                credentials = {"email": "ada@example.com", "password": PASSWORD}
                assert (await http.post("/id/auth/register", json=credentials)).status_code == 201
                signed_in = await http.post("/id/auth/login", json=credentials)
                assert signed_in.status_code == 200
                me = await http.get("/id/auth/me")
                assert me.status_code == 200
                assert me.json()["method"] == "session"
                assert me.headers["cache-control"] == "no-store"
                refused = await http.get("/id/auth/me", headers=bearer("not-a-token"))
                assert_refusal(refused, 'Bearer error="invalid_token"')
                assert (await http.get("/id/auth/me/")).status_code == 404
        finally:
            await gp.close()

    asyncio.run(scenario())

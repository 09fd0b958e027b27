"""HTTP tests of CSRF defences: the synchronizer token and the Origin check on every
cookie-authenticated state-changing route, the double-submit token of the sign-in
form, media-type checks, and GET never changing state.

A refused request must change nothing: the session is still alive, the other
session still alive, the password unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, register

COOKIE = "__Host-gatepass_session"
LOGIN_CSRF_COOKIE = "__Host-gatepass_login_csrf"
NEW_PASSWORD = "a brand new passphrase"
ALLOWED = "https://app.example.com"

MakeClient = Callable[..., TestClient]


def fresh_login(
    client: TestClient, email: str = "ada@example.com", password: str = PASSWORD
) -> tuple[str, str]:
    """Sign in with an empty jar; return (session cookie value, CSRF token)."""
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    cookie = response.cookies[COOKIE]
    client.cookies.clear()
    return cookie, str(response.json()["csrf_token"])


def send(
    client: TestClient,
    method: str,
    url: str,
    cookie: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx2.Response:
    client.cookies.clear()
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    response = client.request(method, url, headers=sent, **kwargs)
    client.cookies.clear()
    return response


def alive(client: TestClient, cookie: str) -> bool:
    status = send(client, "GET", "/auth/me", cookie).status_code
    assert status in (200, 401)
    return status == 200


def password_works(client: TestClient, password: str) -> bool:
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": password})
    client.cookies.clear()
    return response.status_code == 200


@dataclass
class Scene:
    """One user with two sessions (``mine`` acts, ``other`` is a bystander) and a
    second user with a session of their own."""

    client: TestClient
    mine: str
    mine_csrf: str
    other: str
    other_csrf: str
    other_handle: str
    stranger_csrf: str


def make_scene(client: TestClient) -> Scene:
    register(client)
    register(client, "eve@example.com")
    other, other_csrf = fresh_login(client)
    mine, mine_csrf = fresh_login(client)
    _, stranger_csrf = fresh_login(client, "eve@example.com")
    rows = send(client, "GET", "/auth/sessions", mine).json()
    other_handle = next(r["id"] for r in rows if not r["current"])
    return Scene(client, mine, mine_csrf, other, other_csrf, other_handle, stranger_csrf)


def do(
    scene: Scene, route: str, headers: dict[str, str], *, form: dict[str, str] | None = None
) -> httpx2.Response:
    """Perform ``route`` with the ``mine`` cookie and exactly ``headers``."""
    c = scene.client
    if route == "logout":
        return send(c, "POST", "/auth/logout", scene.mine, headers=headers, data=form)
    if route == "logout-all":
        return send(c, "POST", "/auth/logout-all", scene.mine, headers=headers, data=form)
    if route == "delete-session":
        url = f"/auth/sessions/{scene.other_handle}"
        return send(c, "DELETE", url, scene.mine, headers=headers, data=form)
    assert route == "password"
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    if form is not None:
        return send(c, "POST", "/auth/password", scene.mine, headers=headers, data=form | body)
    return send(c, "POST", "/auth/password", scene.mine, headers=headers, json=body)


def assert_nothing_changed(scene: Scene) -> None:
    assert alive(scene.client, scene.mine), "the acting session is still alive"
    assert alive(scene.client, scene.other), "the other session is still alive"
    assert password_works(scene.client, PASSWORD), "the password is unchanged"
    assert not password_works(scene.client, NEW_PASSWORD)


def assert_route_took_effect(scene: Scene, route: str, response: httpx2.Response) -> None:
    assert response.status_code == 204, response.text
    if route == "logout":
        assert not alive(scene.client, scene.mine)
        assert alive(scene.client, scene.other)
    elif route == "logout-all":
        assert not alive(scene.client, scene.mine)
        assert not alive(scene.client, scene.other)
    elif route == "delete-session":
        assert alive(scene.client, scene.mine)
        assert not alive(scene.client, scene.other)
    else:
        assert not alive(scene.client, scene.other)
        assert alive(scene.client, response.cookies[COOKIE])
        assert password_works(scene.client, NEW_PASSWORD)


ROUTES = ["logout", "logout-all", "delete-session", "password"]

FAILURES: dict[str, Callable[[Scene], dict[str, str]]] = {
    "token-missing": lambda s: {"Origin": ORIGIN},
    "token-missing-no-origin": lambda s: {},
    "token-empty": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": ""},
    "token-wrong": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": "A" * len(s.mine_csrf)},
    "token-truncated": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": s.mine_csrf[:-1]},
    "token-with-suffix": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": s.mine_csrf + "x"},
    "token-of-my-other-session": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": s.other_csrf},
    "token-of-another-user": lambda s: {"Origin": ORIGIN, "X-CSRF-Token": s.stranger_csrf},
    "foreign-origin": lambda s: {"Origin": "https://evil.example", "X-CSRF-Token": s.mine_csrf},
    "null-origin": lambda s: {"Origin": "null", "X-CSRF-Token": s.mine_csrf},
    "lookalike-suffix": lambda s: {
        "Origin": "https://testserver.evil.example",
        "X-CSRF-Token": s.mine_csrf,
    },
    "lookalike-prefix": lambda s: {
        "Origin": "https://eviltestserver",
        "X-CSRF-Token": s.mine_csrf,
    },
    "lookalike-http-scheme": lambda s: {
        "Origin": "http://testserver",
        "X-CSRF-Token": s.mine_csrf,
    },
    "lookalike-port": lambda s: {
        "Origin": "https://testserver:8443",
        "X-CSRF-Token": s.mine_csrf,
    },
    "lookalike-userinfo": lambda s: {
        "Origin": "https://testserver@evil.example",
        "X-CSRF-Token": s.mine_csrf,
    },
    "origin-with-path": lambda s: {
        "Origin": "https://testserver/evil",
        "X-CSRF-Token": s.mine_csrf,
    },
    "lookalike-of-allowed": lambda s: {
        "Origin": "https://app.example.com.evil.example",
        "X-CSRF-Token": s.mine_csrf,
    },
    "garbage-origin": lambda s: {"Origin": "not an origin", "X-CSRF-Token": s.mine_csrf},
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("route", ROUTES)
def test_csrf_failure_is_403_problem_and_changes_nothing(
    make_client: MakeClient, route: str, failure: str
) -> None:
    scene = make_scene(make_client(allowed_origins=ALLOWED))
    response = do(scene, route, FAILURES[failure](scene))
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 403
    assert {"type", "title", "detail"} <= set(body)
    assert COOKIE not in response.cookies
    assert_nothing_changed(scene)


@pytest.mark.parametrize("route", ROUTES)
def test_right_token_with_wrong_token_in_form_field_is_still_checked_by_header(
    client: TestClient, route: str
) -> None:
    # A wrong header is not rescued by a right form field.
    scene = make_scene(client)
    response = do(
        scene,
        route,
        {"Origin": ORIGIN, "X-CSRF-Token": "wrong"},
        form={"csrf_token": scene.mine_csrf},
    )
    assert response.status_code == 403
    assert_nothing_changed(scene)


@pytest.mark.parametrize("route", ROUTES)
def test_wrong_token_in_form_field_is_403(client: TestClient, route: str) -> None:
    scene = make_scene(client)
    response = do(scene, route, {"Origin": ORIGIN}, form={"csrf_token": scene.other_csrf})
    assert response.status_code == 403
    assert_nothing_changed(scene)


@pytest.mark.parametrize(
    "headers",
    [
        lambda s: {"Origin": ORIGIN, "X-CSRF-Token": s.mine_csrf},
        lambda s: {"Origin": "HTTPS://TestServer:443", "X-CSRF-Token": s.mine_csrf},
        lambda s: {"Origin": ALLOWED, "X-CSRF-Token": s.mine_csrf},
        lambda s: {"X-CSRF-Token": s.mine_csrf},
    ],
    ids=["own-origin", "own-origin-normalised", "allowed-origin", "no-origin"],
)
@pytest.mark.parametrize("route", ROUTES)
def test_right_token_from_trusted_origin_passes(
    make_client: MakeClient, route: str, headers: Callable[[Scene], dict[str, str]]
) -> None:
    scene = make_scene(make_client(allowed_origins=ALLOWED))
    assert_route_took_effect(scene, route, do(scene, route, headers(scene)))


@pytest.mark.parametrize("route", ROUTES)
def test_allowed_origin_is_refused_when_not_configured(client: TestClient, route: str) -> None:
    scene = make_scene(client)
    response = do(scene, route, {"Origin": ALLOWED, "X-CSRF-Token": scene.mine_csrf})
    assert response.status_code == 403
    assert_nothing_changed(scene)


@pytest.mark.parametrize("route", ROUTES)
def test_form_encoded_request_with_csrf_token_field_passes(client: TestClient, route: str) -> None:
    scene = make_scene(client)
    response = do(scene, route, {"Origin": ORIGIN}, form={"csrf_token": scene.mine_csrf})
    assert_route_took_effect(scene, route, response)


@pytest.mark.parametrize("url", ["/auth/logout", "/auth/logout-all", "/auth/password"])
@pytest.mark.parametrize(
    "headers",
    [{"Origin": ORIGIN}, {"Origin": "https://evil.example"}],
    ids=["no-token", "foreign-origin"],
)
def test_forged_request_is_refused_before_its_body_is_looked_at(
    client: TestClient, url: str, headers: dict[str, str]
) -> None:
    scene = make_scene(client)
    response = send(
        client,
        "POST",
        url,
        scene.mine,
        headers=headers | {"Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert_nothing_changed(scene)


# --- login: Origin and the sign-in form's double-submit token -------------------------


def test_json_login_from_foreign_origin_is_refused_without_a_session(client: TestClient) -> None:
    register(client)
    client.cookies.clear()
    response = client.post(
        "/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert COOKIE not in response.cookies


def test_register_from_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.post(
        "/auth/register",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"Origin": "null"},
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    retry = client.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
    assert retry.status_code == 201, "nothing was created by the refused request"


def login_form(client: TestClient) -> tuple[str, str]:
    """GET /login; return (cookie token, hidden field token). Leaves the jar empty."""
    client.cookies.clear()
    page = client.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    cookie = page.cookies[LOGIN_CSRF_COOKIE]
    client.cookies.clear()
    return cookie, match.group(1)


def post_login_form(
    client: TestClient,
    *,
    cookie_token: str | None,
    field_token: str | None,
    origin: str | None = ORIGIN,
    password: str = PASSWORD,
) -> httpx2.Response:
    client.cookies.clear()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie_token is not None:
        headers["Cookie"] = f"{LOGIN_CSRF_COOKIE}={cookie_token}"
    if origin is not None:
        headers["Origin"] = origin
    form = {"email": "ada@example.com", "password": password, "client": "web"}
    if field_token is not None:
        form["csrf_token"] = field_token
    response = client.post("/auth/login", data=form, headers=headers, follow_redirects=False)
    client.cookies.clear()
    return response


def test_login_page_sets_host_prefixed_token_cookie_matching_hidden_field(
    client: TestClient,
) -> None:
    client.cookies.clear()
    page = client.get("/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    header = next(
        h for h in page.headers.get_list("set-cookie") if h.startswith(LOGIN_CSRF_COOKIE + "=")
    )
    attrs = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path"} <= attrs
    assert "domain" not in attrs
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    assert match.group(1) == page.cookies[LOGIN_CSRF_COOKIE]
    assert len(match.group(1)) >= 32


def test_login_form_with_double_submit_token_signs_in(client: TestClient) -> None:
    register(client)
    cookie_token, field_token = login_form(client)
    response = post_login_form(client, cookie_token=cookie_token, field_token=field_token)
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    session = response.cookies[COOKIE]
    assert alive(client, session)


@pytest.mark.parametrize(
    "case",
    ["no-cookie", "no-field", "neither", "mismatch", "other-form", "foreign-origin", "null-origin"],
)
def test_login_form_without_matching_double_submit_token_fails_without_session(
    client: TestClient, case: str
) -> None:
    register(client)
    cookie_token, field_token = login_form(client)
    other_cookie, other_field = login_form(client)
    kwargs: dict[str, Any] = {"cookie_token": cookie_token, "field_token": field_token}
    if case == "no-cookie":
        kwargs["cookie_token"] = None
    elif case == "no-field":
        kwargs["field_token"] = None
    elif case == "neither":
        kwargs = {"cookie_token": None, "field_token": None}
    elif case == "mismatch":
        kwargs["field_token"] = field_token[::-1]
    elif case == "other-form":  # attacker's own valid pair, half of it
        kwargs["field_token"] = other_field
    elif case == "foreign-origin":
        kwargs["origin"] = "https://evil.example"
    else:
        kwargs["origin"] = "null"
    del other_cookie
    response = post_login_form(client, **kwargs)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert COOKIE not in response.cookies
    assert not any(h.startswith(COOKIE) for h in response.headers.get_list("set-cookie"))
    assert "/account" not in response.headers.get("location", "")


def test_login_form_with_wrong_password_shows_error_without_session(client: TestClient) -> None:
    register(client)
    cookie_token, field_token = login_form(client)
    response = post_login_form(
        client, cookie_token=cookie_token, field_token=field_token, password="wrong password"
    )
    assert response.status_code == 401
    assert "Invalid email or password." in response.text
    assert COOKIE not in response.cookies


# --- media types ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/auth/register", "/auth/login"])
def test_text_plain_body_on_json_route_is_415(client: TestClient, url: str) -> None:
    register(client)
    client.cookies.clear()
    response = client.post(
        url,
        content=b'{"email": "ada@example.com", "password": "correct horse battery"}',
        headers={"Content-Type": "text/plain", "Origin": ORIGIN},
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert COOKIE not in response.cookies


def test_text_plain_password_change_is_415_and_changes_nothing(client: TestClient) -> None:
    scene = make_scene(client)
    response = send(
        client,
        "POST",
        "/auth/password",
        scene.mine,
        headers={"Content-Type": "text/plain", "X-CSRF-Token": scene.mine_csrf},
        content=b'{"current_password": "correct horse battery", "new_password": "xxxxxxxxxx"}',
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert_nothing_changed(scene)


# --- GET never changes state ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["/auth/logout", "/auth/logout-all", "/auth/password", "/auth/register", "/auth/login"],
)
def test_get_on_state_changing_route_is_405_and_changes_nothing(
    client: TestClient, url: str
) -> None:
    scene = make_scene(client)
    response = send(client, "GET", url, scene.mine, params={"csrf_token": scene.mine_csrf})
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert_nothing_changed(scene)


def test_get_on_a_session_handle_does_not_end_it(client: TestClient) -> None:
    scene = make_scene(client)
    response = send(client, "GET", f"/auth/sessions/{scene.other_handle}", scene.mine)
    assert response.status_code == 405
    assert alive(client, scene.other)


def test_reads_do_not_rotate_session_or_csrf_token(client: TestClient) -> None:
    scene = make_scene(client)
    for url in ["/auth/me", "/auth/csrf", "/auth/sessions", "/account", "/login", "/"]:
        response = send(client, "GET", url, scene.mine, follow_redirects=False)
        assert response.status_code in (200, 303), url
        assert COOKIE not in response.cookies, url
    token = send(client, "GET", "/auth/csrf", scene.mine).json()["csrf_token"]
    assert token == scene.mine_csrf
    assert_nothing_changed(scene)

"""The Django + DRF adapter, through Django's test client and DRF's APIClient, over a
real SQLite store in a temporary folder (embedded mode).

Tokens and sessions come from gatepass's own routes as the project serves them
(``include("gatepass.integrations.django.urls")``); the host views live in
``tests/django_project``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.django_project import configure

configure()

from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from gatepass.authenticator import Identity  # noqa: E402
from gatepass.integrations.django.apps import app_config  # noqa: E402
from gatepass.passwords import PasswordHasher  # noqa: E402
from gatepass.revocation import REVOCATION_POLL_SECONDS  # noqa: E402
from tests.conftest import PASSWORD, FakeClock  # noqa: E402
from tests.django_project.serving import gunicorn  # noqa: E402

PROBLEM = "application/problem+json"
ORIGIN = "http://testserver"
COOKIE = "gatepass_session"  # dev mode: plain http, no __Host- prefix


@pytest.fixture(scope="module", autouse=True)
def _django_test_environment() -> Iterator[None]:
    setup_test_environment()
    yield
    teardown_test_environment()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / ".gatepass"


@pytest.fixture
def project(data_dir: Path, clock: FakeClock, fast_hasher: PasswordHasher) -> Iterator[None]:
    """The test project in embedded mode on a fresh SQLite store."""
    config = {
        "MODE": "embedded",
        "READ_ENV": False,
        "DATA_DIR": data_dir,
        "CLOCK": clock,
        "HASHER": lambda: fast_hasher,
        "PRUNE_INTERVAL": None,
        "SETTINGS": {"PUBLIC_URL": ORIGIN, "DEV": True},
    }
    with override_settings(GATEPASS=config):
        yield


@pytest.fixture
def client(project: None) -> Client:
    return Client()


@pytest.fixture
def api(project: None) -> APIClient:
    return APIClient()


def _json(response: Any) -> Any:
    return json.loads(response.content)


def register(client: Client, email: str = "ada@example.com") -> str:
    response = client.post(
        "/auth/register", {"email": email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return str(_json(response)["id"])


def token(client: Client, email: str = "ada@example.com") -> str:
    response = client.post(
        "/auth/login",
        {"email": email, "password": PASSWORD, "client": "api"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return str(_json(response)["access_token"])


def web_login(client: Client, email: str = "ada@example.com") -> str:
    """Sign in as a browser; the session cookie lands in the client's jar."""
    response = client.post(
        "/auth/login", {"email": email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert COOKIE in client.cookies
    return str(_json(response)["csrf_token"])


def bearer(access_token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {access_token}"}


def make_admin(data_dir: Path, email: str = "ada@example.com") -> None:
    with sqlite3.connect(data_dir / "gatepass.db") as conn:
        conn.execute("UPDATE gatepass_users SET roles = 'user admin' WHERE email = ?", (email,))


def break_table(data_dir: Path, table: str) -> None:
    """A real outage: the table the request needs is gone."""
    with sqlite3.connect(data_dir / "gatepass.db") as conn:
        conn.execute(f"DROP TABLE {table}")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    body: dict[str, Any] = _json(response)
    assert body["status"] == status
    return body


# gatepass's routes through Django ---------------------------------------------------


def test_gatepass_routes_are_served_through_the_project(client: Client) -> None:
    user_id = register(client)
    web_login(client)
    me = client.get("/auth/me")
    assert me.status_code == 200
    assert _json(me)["id"] == user_id
    assert _json(me)["method"] == "session"
    assert client.get("/.well-known/jwks.json").status_code == 200
    assert client.get("/login").status_code == 200
    assert_problem(client.get("/auth/no-such-route"), 404)


def test_session_cookie_from_the_bridge_keeps_its_flags(client: Client) -> None:
    register(client)
    web_login(client)
    morsel = client.cookies[COOKIE]
    assert morsel["httponly"]
    assert morsel["path"] == "/"
    assert morsel["samesite"].lower() == "lax"
    assert not morsel["domain"]


def test_gatepass_routes_keep_gatepass_csrf_not_djangos(project: None) -> None:
    client = Client(enforce_csrf_checks=True)
    register(client)
    csrf = web_login(client)
    assert_problem(client.post("/auth/logout"), 403)
    response = client.post("/auth/logout", content_type="application/json", HTTP_X_CSRF_TOKEN=csrf)
    assert response.status_code == 204
    assert client.get("/auth/me").status_code == 401


# the middleware on plain Django views ------------------------------------------------


def test_anonymous_request_reaches_the_view_without_identity(client: Client) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert _json(response) == {"user": None}


def test_valid_bearer_token_sets_the_identity(client: Client) -> None:
    user_id = register(client)
    response = client.get("/hello", **bearer(token(client)))
    assert _json(response) == {"user": user_id, "method": "bearer"}


def test_session_cookie_sets_the_identity(client: Client) -> None:
    user_id = register(client)
    web_login(client)
    assert _json(client.get("/hello")) == {"user": user_id, "method": "session"}


def test_forged_bearer_token_is_refused(client: Client) -> None:
    response = client.get("/hello", HTTP_AUTHORIZATION="Bearer not.a.token")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_expired_token_is_refused(client: Client, clock: FakeClock) -> None:
    register(client)
    access = token(client)
    assert client.get("/hello", **bearer(access)).status_code == 200
    clock.advance(900 + 10 + 1)  # past the TTL and the leeway
    assert_problem(client.get("/hello", **bearer(access)), 401)


def test_revoked_token_is_refused(client: Client) -> None:
    register(client)
    access = token(client)
    assert (
        client.post("/auth/logout", content_type="application/json", **bearer(access)).status_code
        == 204
    )
    assert_problem(client.get("/hello", **bearer(access)), 401)
    assert_problem(client.get("/api/me", **bearer(access)), 401)


def test_bad_bearer_does_not_fall_back_to_a_valid_cookie(client: Client) -> None:
    register(client)
    web_login(client)
    response = client.get("/hello", HTTP_AUTHORIZATION="Bearer forged")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    response = client.get("/api/me", HTTP_AUTHORIZATION="Basic YWRhOnB3")
    assert_problem(response, 401)


def test_tossed_duplicate_session_cookie_is_refused(client: Client) -> None:
    register(client)
    web_login(client)
    real = client.cookies[COOKIE].value
    response = client.get("/hello", HTTP_COOKIE=f"{COOKIE}=attacker; {COOKIE}={real}")
    assert_problem(response, 401)


def test_dead_session_cookie_is_refused(client: Client) -> None:
    client.cookies[COOKIE] = "forged-session-id.signature"
    response = client.get("/hello")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"


def test_dead_session_cookie_is_cleared_so_public_pages_work_again(client: Client) -> None:
    # An idled-out session must not turn every page of the site into a 401.
    client.cookies[COOKIE] = "expired-session-id.signature"
    refused = client.get("/hello")
    assert_problem(refused, 401)
    assert refused.cookies[COOKIE].value == ""
    assert refused.cookies[COOKIE]["max-age"] == 0
    del client.cookies[COOKIE]  # what a browser does with max-age=0
    assert client.get("/hello").status_code == 200


def test_a_refused_bearer_token_leaves_the_session_cookie_alone(client: Client) -> None:
    register(client)
    web_login(client)
    refused = client.get("/hello", HTTP_AUTHORIZATION="Bearer forged")
    assert_problem(refused, 401)
    assert COOKIE not in refused.cookies


def test_bearer_post_from_a_foreign_origin_is_refused(project: None) -> None:
    # Embedded, Origin is checked on every unsafe request, as on the auth server.
    client = Client()
    register(client)
    response = client.post("/notes", HTTP_ORIGIN="https://evil.example", **bearer(token(client)))
    assert_problem(response, 403)


def test_stores_that_cannot_be_opened_are_503_not_500(
    data_dir: Path, clock: FakeClock, fast_hasher: PasswordHasher, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = {
        "MODE": "embedded",
        "READ_ENV": False,
        "DATA_DIR": blocker / ".gatepass",  # under a file: cannot be created
        "CLOCK": clock,
        "HASHER": lambda: fast_hasher,
        "PRUNE_INTERVAL": None,
        "SETTINGS": {"PUBLIC_URL": ORIGIN, "DEV": True},
    }
    with override_settings(GATEPASS=config):
        response = Client().get("/hello", HTTP_AUTHORIZATION="Bearer some-token")
        assert_problem(response, 503)
        assert response["Retry-After"]


# CSRF ---------------------------------------------------------------------------------


def test_cross_site_post_riding_on_the_gatepass_cookie_is_refused(client: Client) -> None:
    register(client)
    web_login(client)
    body = assert_problem(client.post("/notes"), 403)
    assert "csrf" in body["detail"].lower()
    assert_problem(client.post("/api/me"), 403)


def test_cookie_post_with_a_foreign_origin_is_refused(client: Client) -> None:
    register(client)
    csrf = web_login(client)
    response = client.post("/notes", HTTP_X_CSRF_TOKEN=csrf, HTTP_ORIGIN="https://evil.example")
    assert_problem(response, 403)


def test_cookie_post_with_gatepass_csrf_token_passes_without_djangos(project: None) -> None:
    client = Client(enforce_csrf_checks=True)
    user_id = register(client)
    csrf = web_login(client)
    response = client.post("/notes", HTTP_X_CSRF_TOKEN=csrf, HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 201, response.content
    assert _json(response) == {"user": user_id, "method": "session"}
    form = client.post("/notes", {"csrf_token": csrf})
    assert form.status_code == 201
    api = client.post("/api/me", HTTP_X_CSRF_TOKEN=csrf)
    assert api.status_code == 201


def test_bearer_post_needs_no_csrf_token(project: None) -> None:
    client = Client(enforce_csrf_checks=True)
    user_id = register(client)
    response = client.post("/notes", **bearer(token(client)))
    assert response.status_code == 201, response.content
    assert _json(response) == {"user": user_id, "method": "bearer"}


def test_forged_post_riding_on_the_django_session_is_refused(project: None) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.get("/django-session/start").status_code == 200
    response = client.post("/django-session/notes")
    assert response.status_code == 403  # Django's own CSRF check


def test_bearer_header_does_not_switch_off_djangos_csrf_for_its_session(project: None) -> None:
    client = Client(enforce_csrf_checks=True)
    register(client)
    access = token(client)
    assert client.get("/django-session/start").status_code == 200
    response = client.post("/django-session/notes", **bearer(access))
    assert response.status_code == 403  # a Django session is present: Django decides


# DRF ------------------------------------------------------------------------------------


def test_drf_without_credentials_is_401_with_a_challenge_not_403(api: APIClient) -> None:
    response = api.get("/api/me")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"


def test_drf_forged_token_is_401_invalid_token(api: APIClient) -> None:
    api.credentials(HTTP_AUTHORIZATION="Bearer forged")
    response = api.get("/api/me")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_drf_valid_token_gives_a_gatepass_user(api: APIClient) -> None:
    user_id = register(api)
    api.credentials(**bearer(token(api)))
    response = api.get("/api/me")
    assert response.status_code == 200
    assert response.json() == {"id": user_id, "roles": ["user"], "method": "bearer"}


def test_drf_session_cookie_is_accepted(api: APIClient) -> None:
    user_id = register(api)
    web_login(api)
    response = api.get("/api/me")
    assert response.status_code == 200
    assert response.json()["method"] == "session"
    assert response.json()["id"] == user_id


def test_drf_missing_role_is_403_not_401(api: APIClient) -> None:
    register(api)
    api.credentials(**bearer(token(api)))
    body = assert_problem(api.get("/api/admin"), 403)
    assert "role" in body["detail"]


def test_drf_admin_role_is_allowed(api: APIClient, data_dir: Path) -> None:
    user_id = register(api)
    make_admin(data_dir)
    api.credentials(**bearer(token(api)))
    response = api.get("/api/admin")
    assert response.status_code == 200
    assert response.json() == {"admin": user_id}


def test_drf_stale_sign_in_is_refused_where_a_fresh_one_is_required(
    api: APIClient, clock: FakeClock
) -> None:
    user_id = register(api)
    api.credentials(**bearer(token(api)))
    assert api.get("/api/fresh").json() == {"fresh": user_id}
    clock.advance(301)
    body = assert_problem(api.get("/api/fresh"), 403)
    assert body["code"] == "reauthentication_required"


def test_drf_password_alone_fails_a_second_factor_requirement(api: APIClient) -> None:
    register(api)
    api.credentials(**bearer(token(api)))
    body = assert_problem(api.get("/api/two-factor"), 403)
    assert body["code"] == "second_factor_required"


def test_drf_role_check_without_credentials_is_401(api: APIClient) -> None:
    assert_problem(api.get("/api/admin"), 401)


def test_drf_authenticates_without_the_middleware(api: APIClient) -> None:
    user_id = register(api)
    access = token(api)
    from django.conf import settings

    without = [m for m in settings.MIDDLEWARE if "gatepass" not in m]
    with override_settings(MIDDLEWARE=without):
        api.credentials(HTTP_AUTHORIZATION="Bearer forged")
        assert_problem(api.get("/api/me"), 401)
        api.credentials(**bearer(access))
        assert api.get("/api/me").json()["id"] == user_id
        api.credentials()
        assert_problem(api.get("/api/me"), 401)


# store down -----------------------------------------------------------------------------


def test_bearer_request_is_503_when_the_revocation_feed_is_unreadable(
    client: Client, data_dir: Path, clock: FakeClock
) -> None:
    register(client)
    access = token(client)
    assert client.get("/api/me", **bearer(access)).status_code == 200
    break_table(data_dir, "gatepass_revocations")
    clock.advance(REVOCATION_POLL_SECONDS + 1)
    for path in ("/hello", "/api/me"):
        response = client.get(path, **bearer(access))
        assert_problem(response, 503)
        assert response["Retry-After"].isdigit()


def test_session_request_is_503_when_the_session_store_is_unreadable(
    client: Client, data_dir: Path, clock: FakeClock
) -> None:
    register(client)
    web_login(client)
    assert client.get("/hello").status_code == 200
    break_table(data_dir, "gatepass_sessions")
    clock.advance(2)  # past the in-process session cache
    response = client.get("/api/me")
    body = assert_problem(response, 503)
    assert response["Retry-After"].isdigit()
    assert "sqlite" not in json.dumps(body).lower()


# the runtime ----------------------------------------------------------------------------


def test_one_loop_thread_serves_every_request(client: Client) -> None:
    import threading

    register(client)
    access = token(client)
    before = {t.name for t in threading.enumerate()}
    for _ in range(20):
        assert client.get("/hello", **bearer(access)).status_code == 200
    after = [t.name for t in threading.enumerate()]
    assert after.count("gatepass-django") == 1
    assert {t for t in after if t.startswith("gatepass")} <= before | {"gatepass-django"}


def test_principal_is_an_identity_in_embedded_mode(client: Client) -> None:
    register(client)
    access = token(client)
    runtime = app_config().runtime
    found = runtime.authenticate(f"Bearer {access}", None)
    assert found is not None
    assert isinstance(found[0], Identity)


# a real server: gunicorn's pre-fork workers ------------------------------------------

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_every_forked_worker_opens_its_own_loop_and_store(
    tmp_path: Path, worker_class: str
) -> None:
    env = {
        "DJANGO_GATEPASS_DATA_DIR": str(tmp_path / ".gatepass"),
        "DJANGO_GATEPASS_PUBLIC_URL": "{url}",
        # gatepass opened in the master (--preload) before the fork
        "DJANGO_GATEPASS_OPEN_BEFORE_FORK": "1",
    }
    args = ["--preload", "--workers", "2", "--worker-class", worker_class, "--threads", "4"]
    app = "tests.django_project.wsgi:application"
    log = tmp_path / "gunicorn.log"
    with gunicorn(REPO, app, log, env, probe="/hello", args=args) as url:
        body = {"email": "ada@example.com", "password": PASSWORD}
        assert httpx.post(f"{url}/auth/register", json=body).status_code == 201
        answer = httpx.post(f"{url}/auth/login", json={**body, "client": "api"})
        access = answer.json()["access_token"]
        pids: set[int] = set()
        deadline = time.monotonic() + 30.0
        # New connections until both workers answered (each fresh after the fork).
        while len(pids) < 2 and time.monotonic() < deadline:
            response = httpx.get(f"{url}/pid", headers={"Authorization": f"Bearer {access}"})
            assert response.status_code == 200, response.text
            assert response.json()["method"] == "bearer"
            pids.add(response.json()["pid"])
        assert len(pids) == 2
        forged = httpx.get(f"{url}/api/me", headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401
        assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# resource-server mode: tokens of a real gatepass serve, through the verifier ---------


@pytest.fixture
def resource_server(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    import gatepass.verifier
    from tests.e2e_support import running_server

    if not hasattr(gatepass.verifier, "Verifier"):  # pragma: no cover - until merged
        pytest.skip("gatepass.verifier.Verifier is not on this branch")
    with running_server(tmp_path, {"GATEPASS_DEV": "1"}) as server:
        config = {"MODE": "resource_server", "ISSUER": server.url}
        with override_settings(GATEPASS=config):
            yield server, server.url


@pytest.mark.e2e
def test_resource_server_trusts_tokens_and_ignores_cookies(
    resource_server: tuple[Any, str],
) -> None:
    _, url = resource_server
    body = {"email": "ada@example.com", "password": PASSWORD}
    assert httpx.post(f"{url}/auth/register", json=body).status_code == 201
    access = httpx.post(f"{url}/auth/login", json={**body, "client": "api"}).json()
    web = httpx.post(f"{url}/auth/login", json=body)
    api = APIClient()
    api.credentials(**bearer(access["access_token"]))
    response = api.get("/api/me")
    assert response.status_code == 200, response.content
    assert response.json()["method"] == "bearer"
    # The auth server's session cookie is no credential for a resource server.
    cookie_only = APIClient()
    cookie_only.cookies[COOKIE] = web.cookies[COOKIE]
    assert_problem(cookie_only.get("/api/me"), 401)
    assert _json(cookie_only.get("/hello")) == {"user": None}
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer " + access["access_token"][:-4] + "AAAA")
    assert_problem(forged.get("/api/me"), 401)
    assert_problem(Client().get("/auth/me"), 404)  # gatepass's routes live on the server

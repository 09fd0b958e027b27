"""The FastAPI adapter: gatepass embedded in a host app, its routes under a prefix,
the dependencies judged from the attacker's side.

Every request goes through httpx's ASGITransport into a real app on a real SQLite
store; the app's lifespan is entered as a host app nests it (ASGITransport runs no
lifespan), and TestClient runs it where the test is about the lifespan itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pyotp
import pytest
from fastapi import Depends, FastAPI, Form
from starlette.testclient import TestClient

from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.freshness import SignInProof
from gatepass.integrations.fastapi import (
    BEARER_SCHEME,
    COOKIE_SCHEME,
    auth_router,
    current_identity,
    gatepass_lifespan,
    install,
    optional_identity,
    require_fresh_sign_in,
    require_roles,
    require_second_factor,
)
from gatepass.passwords import PasswordHasher
from tests.conftest import BASE_URL, ORIGIN, PASSWORD, FakeClock

PROBLEM = "application/problem+json"
COOKIE = "__Host-gatepass_session"
EMAIL = "ada@example.com"
PREFIX = "/api"

Caller = Annotated[Identity, Depends(current_identity)]
MaybeCaller = Annotated[Identity | None, Depends(optional_identity)]
Admin = Annotated[Identity, Depends(require_roles("admin"))]
Fresh = Annotated[Identity, Depends(require_fresh_sign_in(300))]
TwoFactor = Annotated[Identity, Depends(require_second_factor())]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def build_app() -> FastAPI:
    """A host app: gatepass's router under /api, a public, a protected, a form and an
    admin-only route of its own."""
    app = FastAPI()
    install(app)
    app.include_router(auth_router(), prefix=PREFIX)

    @app.get("/public")
    async def public(identity: MaybeCaller) -> dict[str, Any]:
        return {"user": identity.user_id if identity else None}

    @app.get("/notes")
    async def notes(identity: Caller) -> dict[str, Any]:
        return {"user": identity.user_id, "method": identity.method}

    @app.post("/notes")
    async def add_note(identity: Caller) -> dict[str, Any]:
        return {"saved": True, "method": identity.method}

    @app.post("/notes/form")
    async def add_note_form(text: Annotated[str, Form()], identity: Caller) -> dict[str, Any]:
        return {"saved": text}

    @app.get("/admin")
    async def admin(identity: Admin) -> dict[str, Any]:
        return {"admin": identity.user_id}

    @app.get("/fresh")
    async def fresh(identity: Fresh) -> dict[str, Any]:
        return {"fresh": identity.user_id}

    @app.get("/two-factor")
    async def two_factor(identity: TwoFactor) -> dict[str, Any]:
        return {"two_factor": identity.user_id}

    return app


class Host:
    """The running host app, its instance and a client with an empty cookie jar."""

    def __init__(self, app: FastAPI, gp: Gatepass, http: httpx.AsyncClient) -> None:
        self.app, self.gp, self.http = app, gp, http

    async def register(self, email: str = EMAIL) -> str:
        response = await self.http.post(
            f"{PREFIX}/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def token(self, email: str = EMAIL) -> dict[str, Any]:
        response = await self.http.post(
            f"{PREFIX}/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def web_login(self, email: str = EMAIL) -> tuple[str, str]:
        """(session cookie value, CSRF token); the jar is left empty."""
        response = await self.http.post(
            f"{PREFIX}/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        cookie = response.cookies[COOKIE]
        self.http.cookies.clear()
        return cookie, str(response.json()["csrf_token"])

    def break_table(self, table: str) -> None:
        with sqlite3.connect(self.gp.settings.data_dir / "gatepass.db") as conn:
            conn.execute(f"DROP TABLE {table}")


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def host(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> AsyncIterator[Host]:
    app = build_app()
    async with gatepass_lifespan(make_settings(), app, clock=clock, hasher=fast_hasher) as gp:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Host(app, gp, http)


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == status


# credentials ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_valid_bearer_token_reaches_the_protected_route(host: Host) -> None:
    user_id = await host.register()
    pair = await host.token()
    response = await host.http.get("/notes", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    assert response.json() == {"user": user_id, "method": "bearer"}


@pytest.mark.anyio
async def test_forged_bearer_token_is_refused(host: Host) -> None:
    await host.register()
    token = (await host.token())["access_token"]
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    response = await host.http.get("/notes", headers=bearer(forged))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.anyio
async def test_expired_bearer_token_is_refused(host: Host, clock: FakeClock) -> None:
    await host.register()
    token = (await host.token())["access_token"]
    assert (await host.http.get("/notes", headers=bearer(token))).status_code == 200
    settings = host.gp.settings
    clock.advance(settings.access_token_ttl + settings.leeway + 1)
    response = await host.http.get("/notes", headers=bearer(token))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.anyio
async def test_bearer_token_reused_after_logout_is_refused(host: Host) -> None:
    await host.register()
    token = (await host.token())["access_token"]
    assert (await host.http.get("/notes", headers=bearer(token))).status_code == 200
    logout = await host.http.post(f"{PREFIX}/auth/logout", headers=bearer(token))
    assert logout.status_code == 204
    assert_problem(await host.http.get("/notes", headers=bearer(token)), 401)


@pytest.mark.anyio
async def test_session_cookie_reaches_the_protected_route(host: Host) -> None:
    user_id = await host.register()
    cookie, _ = await host.web_login()
    response = await host.http.get("/notes", headers=cookie_header(cookie))
    assert response.json() == {"user": user_id, "method": "session"}


@pytest.mark.anyio
async def test_bad_bearer_never_falls_back_to_a_valid_cookie(host: Host) -> None:
    await host.register()
    cookie, _ = await host.web_login()
    headers = {**cookie_header(cookie), "Authorization": "Bearer not-a-token"}
    assert_problem(await host.http.get("/notes", headers=headers), 401)
    assert_problem(await host.http.get("/public", headers=headers), 401)


@pytest.mark.anyio
async def test_tossed_second_session_cookie_is_refused(host: Host) -> None:
    await host.register()
    cookie, _ = await host.web_login()
    headers = {"Cookie": f"{COOKIE}={cookie}; {COOKIE}=tossed-by-a-sibling"}
    assert_problem(await host.http.get("/notes", headers=headers), 401)


@pytest.mark.anyio
async def test_anonymous_caller_is_401_on_a_protected_route_and_none_on_an_optional_one(
    host: Host,
) -> None:
    response = await host.http.get("/notes")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await host.http.get("/public")).json() == {"user": None}


@pytest.mark.anyio
async def test_bad_credential_on_an_optional_route_is_refused_not_anonymous(host: Host) -> None:
    assert_problem(await host.http.get("/public", headers=bearer("garbage")), 401)
    response = await host.http.get("/public", headers=cookie_header("forged.cookie"))
    assert_problem(response, 401)
    # The dead cookie is cleared, so the browser's next request is anonymous.
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


@pytest.mark.anyio
async def test_plain_user_on_an_admin_route_is_403_and_an_admin_passes(host: Host) -> None:
    user_id = await host.register()
    token = (await host.token())["access_token"]
    assert_problem(await host.http.get("/admin", headers=bearer(token)), 403)
    with sqlite3.connect(host.gp.settings.data_dir / "gatepass.db") as conn:
        conn.execute("UPDATE gatepass_users SET roles = 'user admin' WHERE id = ?", (user_id,))
    host.gp.bearer.forget_user(user_id)
    response = await host.http.get("/admin", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"admin": user_id}


@pytest.mark.anyio
async def test_anonymous_caller_on_an_admin_route_is_401(host: Host) -> None:
    assert_problem(await host.http.get("/admin"), 401)


@pytest.mark.anyio
async def test_store_down_is_503_with_retry_after_never_200(host: Host, clock: FakeClock) -> None:
    await host.register()
    cookie, _ = await host.web_login()
    host.break_table("gatepass_sessions")
    clock.advance(2)  # past the in-process session cache
    response = await host.http.get("/notes", headers=cookie_header(cookie))
    assert_problem(response, 503)
    assert response.headers["retry-after"].isdigit()
    assert "sqlite" not in response.text.lower()


# CSRF on the host app's own routes ------------------------------------------------


@pytest.mark.anyio
async def test_cookie_post_without_csrf_token_is_refused(host: Host) -> None:
    await host.register()
    cookie, _ = await host.web_login()
    assert_problem(await host.http.post("/notes", headers=cookie_header(cookie)), 403)


@pytest.mark.anyio
async def test_cookie_post_from_a_foreign_origin_is_refused(host: Host) -> None:
    await host.register()
    cookie, csrf = await host.web_login()
    headers = {**cookie_header(cookie), "X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert_problem(await host.http.post("/notes", headers=headers), 403)


@pytest.mark.anyio
async def test_cookie_post_with_its_csrf_token_passes(host: Host) -> None:
    await host.register()
    cookie, csrf = await host.web_login()
    headers = {**cookie_header(cookie), "X-CSRF-Token": csrf, "Origin": ORIGIN}
    response = await host.http.post("/notes", headers=headers)
    assert response.json() == {"saved": True, "method": "session"}


@pytest.mark.anyio
async def test_cookie_form_post_with_another_sessions_token_is_refused(host: Host) -> None:
    await host.register()
    cookie, csrf = await host.web_login()
    _, other_csrf = await host.web_login()
    form = {"text": "hello", "csrf_token": other_csrf}
    refused = await host.http.post("/notes/form", headers=cookie_header(cookie), data=form)
    assert_problem(refused, 403)
    form["csrf_token"] = csrf
    passed = await host.http.post("/notes/form", headers=cookie_header(cookie), data=form)
    assert passed.json() == {"saved": "hello"}


@pytest.mark.anyio
async def test_bearer_post_needs_no_csrf_token(host: Host) -> None:
    await host.register()
    token = (await host.token())["access_token"]
    response = await host.http.post("/notes", headers=bearer(token))
    assert response.json() == {"saved": True, "method": "bearer"}


# sign-in requirements ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stale_sign_in_is_refused_where_a_fresh_one_is_required(
    host: Host, clock: FakeClock
) -> None:
    await host.register()
    pair = await host.token()
    assert (await host.http.get("/fresh", headers=bearer(pair["access_token"]))).status_code == 200
    cookie, _ = await host.web_login()
    clock.advance(301)
    for headers in (bearer(pair["access_token"]), cookie_header(cookie)):
        stale = await host.http.get("/fresh", headers=headers)
        assert_problem(stale, 403)
        assert stale.json()["code"] == "reauthentication_required"
    assert_problem(await host.http.get("/fresh"), 401)


@pytest.mark.anyio
async def test_a_password_alone_does_not_pass_a_second_factor_requirement(
    host: Host, clock: FakeClock
) -> None:
    user_id = await host.register()
    cookie, _ = await host.web_login()
    refused = await host.http.get("/two-factor", headers=cookie_header(cookie))
    assert_problem(refused, 403)
    assert refused.json()["code"] == "second_factor_required"
    user = await host.gp.store.get_user(user_id)
    assert user is not None
    two = await host.gp.accounts.start_web_session(
        user,
        presented_cookie=None,
        ip=None,
        user_agent=None,
        proof=SignInProof.now(clock(), "pwd", "otp"),
    )
    passed = await host.http.get("/two-factor", headers=cookie_header(two.cookie_value))
    assert passed.json() == {"two_factor": user_id}


# the router under a prefix --------------------------------------------------------


@pytest.mark.anyio
async def test_router_under_a_prefix_keeps_the_contract(host: Host) -> None:
    await host.register()
    http = host.http
    wrong = await http.post(f"{PREFIX}/auth/login", json={"email": EMAIL, "password": "wrong pw!"})
    assert_problem(wrong, 401)
    taken = await http.post(f"{PREFIX}/auth/register", json={"email": EMAIL, "password": PASSWORD})
    assert_problem(taken, 409)
    assert_problem(await http.post(f"{PREFIX}/auth/register", json={"email": EMAIL}), 422)
    assert_problem(await http.post(f"{PREFIX}/auth/refresh", json={"refresh_token": "x"}), 401)
    cookie, csrf = await host.web_login()
    me = await http.get(f"{PREFIX}/auth/me", headers=cookie_header(cookie))
    assert me.json()["method"] == "session"
    assert me.headers["cache-control"] == "no-store"
    forged = await http.post(f"{PREFIX}/auth/logout", headers=cookie_header(cookie))
    assert_problem(forged, 403)
    unknown = await http.delete(
        f"{PREFIX}/auth/sessions/not-a-handle",
        headers={**cookie_header(cookie), "X-CSRF-Token": csrf},
    )
    assert_problem(unknown, 404)
    assert (await http.get(f"{PREFIX}/.well-known/jwks.json")).json()["keys"]
    logout = await http.post(
        f"{PREFIX}/auth/logout", headers={**cookie_header(cookie), "X-CSRF-Token": csrf}
    )
    assert logout.status_code == 204
    assert_problem(await http.get("/notes", headers=cookie_header(cookie)), 401)


@pytest.mark.anyio
async def test_router_under_a_prefix_serves_the_account_flows(host: Host) -> None:
    await host.register()
    http = host.http
    forgot = await http.post(f"{PREFIX}/auth/password/forgot", json={"email": EMAIL})
    assert forgot.status_code == 202
    assert forgot.json() == {"status": "sent_if_exists"}
    assert_problem(await http.post(f"{PREFIX}/auth/email/verify", json={"token": "x"}), 400)
    assert_problem(await http.post(f"{PREFIX}/auth/password/reset", json={"token": "x"}), 422)
    cookie, csrf = await host.web_login()
    wrong = await http.request(
        "DELETE",
        f"{PREFIX}/auth/account",
        json={"current_password": "not it at all"},
        headers={**cookie_header(cookie), "X-CSRF-Token": csrf},
    )
    assert_problem(wrong, 401)
    me = await http.get(f"{PREFIX}/auth/me", headers=cookie_header(cookie))
    assert me.json()["email_verified"] is False


@pytest.mark.anyio
async def test_router_under_a_prefix_serves_the_totp_routes(host: Host, clock: FakeClock) -> None:
    await host.register()
    headers = bearer((await host.token())["access_token"])
    setup = await host.http.post(f"{PREFIX}/auth/mfa/totp/setup", headers=headers)
    assert setup.status_code == 200, setup.text
    code = pyotp.TOTP(setup.json()["secret"]).at(clock())
    confirm = await host.http.post(
        f"{PREFIX}/auth/mfa/totp/confirm", json={"code": code}, headers=headers
    )
    assert confirm.status_code == 200, confirm.text
    assert len(confirm.json()["recovery_codes"]) == 10
    unauthenticated = await host.http.post(f"{PREFIX}/auth/mfa/recovery-codes")
    assert_problem(unauthenticated, 401)


# OpenAPI and the lifespan ---------------------------------------------------------


def test_openapi_lists_bearer_and_cookie_as_alternative_schemes() -> None:
    schema = build_app().openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes[BEARER_SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes[BEARER_SCHEME]["description"],
    }
    assert schemes[COOKIE_SCHEME]["type"] == "apiKey"
    assert schemes[COOKIE_SCHEME]["in"] == "cookie"
    assert schemes[COOKIE_SCHEME]["name"] == COOKIE
    alternatives = [{BEARER_SCHEME: []}, {COOKIE_SCHEME: []}]
    assert schema["paths"]["/notes"]["get"]["security"] == alternatives
    assert schema["paths"]["/admin"]["get"]["security"] == alternatives
    assert schema["paths"]["/public"]["get"]["security"] == alternatives


def test_lifespan_as_the_apps_own_opens_and_closes_the_instance(
    make_settings: Callable[..., Settings], fast_hasher: PasswordHasher
) -> None:
    app = FastAPI(lifespan=gatepass_lifespan(make_settings(), hasher=fast_hasher))
    install(app)
    app.include_router(auth_router(), prefix=PREFIX)

    @app.get("/notes")
    async def notes(identity: Caller) -> str:
        return identity.user_id

    with TestClient(app, base_url=BASE_URL) as client:
        account = {"email": EMAIL, "password": PASSWORD}
        assert client.post(f"{PREFIX}/auth/register", json=account).status_code == 201
        assert client.post(f"{PREFIX}/auth/login", json=account).status_code == 200
        assert client.get("/notes").status_code == 200
        gp = app.state.gatepass
    assert isinstance(gp, Gatepass)


def test_app_without_the_exception_handlers_refuses_to_start(
    make_settings: Callable[..., Settings], fast_hasher: PasswordHasher
) -> None:
    app = FastAPI(lifespan=gatepass_lifespan(make_settings(), hasher=fast_hasher))
    with pytest.raises(RuntimeError, match=r"install\(app\)"), TestClient(app):
        pass

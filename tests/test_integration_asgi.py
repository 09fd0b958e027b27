"""The ASGI/Starlette adapter: GatepassMiddleware in a host Starlette app, judged
from the attacker's side over httpx's ASGITransport on a real SQLite store.

Sign-ins go through the instance itself (the host app serves no gatepass routes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.integrations.asgi import (
    GatepassMiddleware,
    GatepassUser,
    gatepass_lifespan,
    install,
    user_of,
)
from gatepass.passwords import PasswordHasher
from tests.conftest import BASE_URL, ORIGIN, PASSWORD, FakeClock

PROBLEM = "application/problem+json"
COOKIE = "__Host-gatepass_session"
EMAIL = "ada@example.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def public(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "authenticated": user.is_authenticated,
            "name": user.display_name,
            "id": user.identity,
            "scopes": request.auth.scopes,
        }
    )


@requires("authenticated")
async def private(request: Request) -> JSONResponse:
    identity = user_of(request)
    assert identity is not None
    return JSONResponse({"id": identity.user_id, "method": identity.method})


@requires("admin")
async def admin(request: Request) -> JSONResponse:
    return JSONResponse({"admin": request.user.identity})


@requires("authenticated")
async def add_item(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"saved": body.decode()})


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"authenticated": websocket.user.is_authenticated})
    await websocket.close()


def build_app(**lifespan_args: Any) -> Starlette:
    app = Starlette(
        routes=[
            Route("/public", public),
            Route("/private", private),
            Route("/admin", admin),
            Route("/items", add_item, methods=["POST"]),
            Route("/hooks/incoming", add_item, methods=["POST"]),
            WebSocketRoute("/ws", socket),
        ],
        middleware=[Middleware(GatepassMiddleware, exclude=("/hooks/",))],
        lifespan=gatepass_lifespan(**lifespan_args) if lifespan_args else None,
    )
    install(app)
    return app


class Host:
    def __init__(self, gp: Gatepass, http: httpx.AsyncClient) -> None:
        self.gp, self.http = gp, http

    async def user_id(self, email: str = EMAIL) -> str:
        return (await self.gp.accounts.register(email, PASSWORD)).id

    async def token(self, email: str = EMAIL) -> str:
        user = await self.gp.store.get_user_by_email(email)
        assert user is not None
        pair = await self.gp.accounts.start_token_family(user, ip=None, user_agent=None)
        return pair.access_token

    async def session(self, email: str = EMAIL) -> tuple[str, str]:
        """(cookie value, CSRF token) of a new web session."""
        user = await self.gp.store.get_user_by_email(email)
        assert user is not None
        issued = await self.gp.accounts.start_web_session(
            user, presented_cookie=None, ip=None, user_agent=None
        )
        return issued.cookie_value, issued.record.csrf_token


@pytest.fixture
async def host(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> AsyncIterator[Host]:
    app = build_app()
    async with gatepass_lifespan(make_settings(), app, clock=clock, hasher=fast_hasher) as gp:
        await gp.accounts.register(EMAIL, PASSWORD)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Host(gp, http)


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == status


# who is calling -------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_without_credentials_is_anonymous_on_a_public_route(host: Host) -> None:
    response = await host.http.get("/public")
    assert response.json() == {"authenticated": False, "name": "", "id": "", "scopes": []}


@pytest.mark.anyio
async def test_valid_bearer_token_fills_request_user_and_scopes(host: Host) -> None:
    user = await host.gp.store.get_user_by_email(EMAIL)
    assert user is not None
    token = await host.token()
    response = await host.http.get("/public", headers=bearer(token))
    assert response.json() == {
        "authenticated": True,
        "name": EMAIL,
        "id": user.id,
        "scopes": ["authenticated", "user"],
    }
    private_view = await host.http.get("/private", headers=bearer(token))
    assert private_view.json() == {"id": user.id, "method": "bearer"}


@pytest.mark.anyio
async def test_session_cookie_fills_request_user(host: Host) -> None:
    cookie, _ = await host.session()
    response = await host.http.get("/private", headers=cookie_header(cookie))
    assert response.json()["method"] == "session"


@pytest.mark.anyio
async def test_forged_bearer_token_is_401_even_on_a_public_route(host: Host) -> None:
    token = await host.token()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = await host.http.get("/public", headers=bearer(forged))
    assert_problem(response, 401)  # never Starlette's default 400 with the error text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.anyio
async def test_expired_bearer_token_is_refused(host: Host, clock: FakeClock) -> None:
    token = await host.token()
    assert (await host.http.get("/private", headers=bearer(token))).status_code == 200
    clock.advance(host.gp.settings.access_token_ttl + host.gp.settings.leeway + 1)
    assert_problem(await host.http.get("/private", headers=bearer(token)), 401)


@pytest.mark.anyio
async def test_bearer_token_reused_after_logout_is_refused(host: Host) -> None:
    token = await host.token()
    identity = await host.gp.authenticator.authenticate(f"Bearer {token}", None)
    await host.gp.accounts.logout(identity)
    assert_problem(await host.http.get("/private", headers=bearer(token)), 401)


@pytest.mark.anyio
async def test_bad_bearer_never_falls_back_to_a_valid_cookie(host: Host) -> None:
    cookie, _ = await host.session()
    headers = {**cookie_header(cookie), "Authorization": "Bearer not-a-token"}
    assert_problem(await host.http.get("/public", headers=headers), 401)
    basic = {**cookie_header(cookie), "Authorization": "Basic YWRhOnB3"}
    assert_problem(await host.http.get("/public", headers=basic), 401)


@pytest.mark.anyio
async def test_dead_session_cookie_is_refused_and_cleared(host: Host, clock: FakeClock) -> None:
    cookie, _ = await host.session()
    clock.advance(host.gp.settings.session_idle_timeout + 1)
    response = await host.http.get("/public", headers=cookie_header(cookie))
    assert_problem(response, 401)
    assert f'{COOKIE}=""' in response.headers["set-cookie"]


@pytest.mark.anyio
async def test_requires_answers_an_anonymous_caller_with_401_problem(host: Host) -> None:
    response = await host.http.get("/private")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_requires_answers_a_missing_role_with_403_problem(host: Host) -> None:
    token = await host.token()
    assert_problem(await host.http.get("/admin", headers=bearer(token)), 403)


@pytest.mark.anyio
async def test_store_down_is_503_with_retry_after_never_200(host: Host, clock: FakeClock) -> None:
    cookie, _ = await host.session()
    with sqlite3.connect(host.gp.settings.data_dir / "gatepass.db") as conn:
        conn.execute("DROP TABLE gatepass_sessions")
    clock.advance(2)  # past the in-process session cache
    response = await host.http.get("/public", headers=cookie_header(cookie))
    assert_problem(response, 503)
    assert response.headers["retry-after"].isdigit()


# CSRF ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cookie_post_without_csrf_token_is_refused(host: Host) -> None:
    cookie, _ = await host.session()
    response = await host.http.post("/items", headers=cookie_header(cookie), content=b"x")
    assert_problem(response, 403)


@pytest.mark.anyio
async def test_cookie_post_from_a_foreign_origin_is_refused(host: Host) -> None:
    cookie, csrf = await host.session()
    headers = {**cookie_header(cookie), "X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert_problem(await host.http.post("/items", headers=headers, content=b"x"), 403)


@pytest.mark.anyio
async def test_cookie_post_with_its_csrf_token_passes(host: Host) -> None:
    cookie, csrf = await host.session()
    headers = {**cookie_header(cookie), "X-CSRF-Token": csrf, "Origin": ORIGIN}
    response = await host.http.post("/items", headers=headers, json={"a": 1})
    assert response.json() == {"saved": '{"a":1}'}


@pytest.mark.anyio
async def test_cookie_form_post_carries_its_token_in_the_body_and_the_app_reads_it_all(
    host: Host,
) -> None:
    cookie, csrf = await host.session()
    _, other = await host.session()
    forged = await host.http.post(
        "/items", headers=cookie_header(cookie), data={"csrf_token": other, "text": "hi"}
    )
    assert_problem(forged, 403)
    response = await host.http.post(
        "/items", headers=cookie_header(cookie), data={"csrf_token": csrf, "text": "hi"}
    )
    assert response.json() == {"saved": f"csrf_token={csrf}&text=hi"}


@pytest.mark.anyio
async def test_bearer_post_needs_no_csrf_token(host: Host) -> None:
    token = await host.token()
    response = await host.http.post("/items", headers=bearer(token), content=b"x")
    assert response.json() == {"saved": "x"}


@pytest.mark.anyio
async def test_excluded_paths_are_not_judged(host: Host) -> None:
    response = await host.http.post("/hooks/incoming", headers=bearer("garbage"), content=b"x")
    assert_problem(response, 401)  # anonymous there, so @requires refuses it: not judged


# the lifespan and WebSockets ------------------------------------------------------


def test_cross_site_websocket_handshake_with_a_cookie_is_refused(
    make_settings: Callable[..., Settings], fast_hasher: PasswordHasher
) -> None:
    app = build_app(settings=make_settings(), hasher=fast_hasher)
    with TestClient(app, base_url=BASE_URL) as client:
        gp = app.state.gatepass
        assert isinstance(gp, Gatepass)
        cookie = client.portal.call(_web_session, gp)  # type: ignore[union-attr]
        with client.websocket_connect(
            "/ws", headers={**cookie_header(cookie), "Origin": ORIGIN}
        ) as ws:
            assert ws.receive_json() == {"authenticated": True}
        foreign = {**cookie_header(cookie), "Origin": "https://evil.example"}
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws", headers=foreign) as ws,
        ):
            ws.receive_json()
        assert refused.value.code == 1008


async def _web_session(gp: Gatepass) -> str:
    user = await gp.accounts.register(EMAIL, PASSWORD)
    issued = await gp.accounts.start_web_session(
        user, presented_cookie=None, ip=None, user_agent=None
    )
    return issued.cookie_value


@pytest.mark.anyio
async def test_request_user_repr_shows_no_session_secret(host: Host) -> None:
    cookie, csrf = await host.session()
    identity = await host.gp.authenticator.authenticate(None, cookie)
    shown = repr(GatepassUser(identity))
    assert identity.user_id in shown
    assert csrf not in shown
    assert cookie not in shown

"""The Flask adapter in embedded mode, through Flask's own test client.

The host app is a real Flask app with gatepass bound by ``init_app``: its own routes
are guarded by ``login_required`` / ``roles_required``, and gatepass's routes are
served by the blueprint (which forwards them to the auth server's ASGI app). Stores
are real SQLite files in ``tmp_path``; outages are real (a table dropped under the
running app, as in tests/test_fail_closed.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import ConfigError
from gatepass.integrations.flask import (
    EXTENSION_KEY,
    FlaskGatepass,
    client_address,
    current_identity,
    fresh_login_required,
    gatepass_blueprint,
    get_identity,
    login_required,
    roles_required,
    second_factor_required,
    settings_from_config,
)
from gatepass.passwords import PasswordHasher
from gatepass.revocation import REVOCATION_POLL_SECONDS
from gatepass.verifier import Verifier
from tests.conftest import ORIGIN, PASSWORD, FakeClock
from tests.e2e_support import running_server

PROBLEM = "application/problem+json"
SESSION = "__Host-gatepass_session"
EMAIL = "ada@example.com"


@dataclass
class Host:
    app: Flask
    ext: FlaskGatepass
    settings: Settings

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.data_dir / "gatepass.db")


async def _loop_facts(gp: Gatepass) -> tuple[asyncio.AbstractEventLoop, int, int]:
    return asyncio.get_running_loop(), os.getpid(), threading.get_native_id()


def build_host(ext: FlaskGatepass) -> Flask:
    app = Flask("host")
    # The test client's base URL: the origin gatepass is configured with.
    app.config.update(SERVER_NAME="testserver", PREFERRED_URL_SCHEME="https")
    ext.init_app(app)
    app.register_blueprint(gatepass_blueprint())

    @app.get("/whoami")
    @login_required
    def whoami() -> Any:
        return jsonify(
            user_id=current_identity.user_id,
            method=current_identity.method,
            roles=sorted(current_identity.roles),
        )

    @app.get("/async")
    @login_required
    async def async_view() -> Any:
        return jsonify(user_id=current_identity.user_id)

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> Any:
        return jsonify(ok=True)

    @app.get("/fresh")
    @fresh_login_required(300)
    def fresh() -> Any:
        return jsonify(fresh=current_identity.user_id)

    @app.get("/two-factor")
    @second_factor_required
    def two_factor() -> Any:
        return jsonify(two_factor=current_identity.user_id)

    @app.post("/notes")
    @login_required
    def notes() -> Any:
        return jsonify(saved=True), 201

    @app.get("/maybe")
    def maybe() -> Any:
        who = current_identity.user_id if current_identity else None
        return jsonify(user_id=who)

    @app.get("/twice")
    @login_required
    def twice() -> Any:
        return jsonify(same=get_identity() is current_identity._get_current_object())

    @app.get("/loop")
    def loop() -> Any:
        running, pid, tid = ext.call(_loop_facts)
        return jsonify(loop=id(running), pid=pid, tid=tid, threads=threading.active_count())

    @app.get("/ip")
    def ip() -> Any:
        return jsonify(ip=client_address())

    return app


@pytest.fixture
def make_host(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> Iterator[Callable[..., Host]]:
    hosts: list[Host] = []

    def make(**env: str) -> Host:
        settings = make_settings(**env)
        ext = FlaskGatepass(settings=settings, clock=clock, hasher=fast_hasher)
        host = Host(build_host(ext), ext, settings)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.ext.close(host.app)


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    return make_host()


def body(response: TestResponse) -> Any:
    return json.loads(response.get_data(as_text=True))


def register(client: FlaskClient, email: str = EMAIL) -> Any:
    response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return body(response)


def web_login(client: FlaskClient, email: str = EMAIL) -> str:
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(body(response)["csrf_token"])


def token_login(client: FlaskClient, email: str = EMAIL) -> dict[str, Any]:
    response = client.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
    )
    assert response.status_code == 200, response.text
    return dict(body(response))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: TestResponse, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.mimetype == PROBLEM
    assert body(response)["status"] == status


def assert_unauthorized(response: TestResponse, *, token_sent: bool) -> None:
    assert_problem(response, 401)
    challenge = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    assert response.headers["WWW-Authenticate"] == challenge


# the blueprint keeps the auth server's contract ------------------------------------


def test_blueprint_registers_and_signs_in_a_browser_with_the_contract_cookie(host: Host) -> None:
    client = host.client()
    created = register(client)
    assert set(created) == {"id", "email"}
    response = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 200
    assert set(body(response)) == {"user", "csrf_token"}
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(SESSION))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path=/", "samesite=lax"} <= flags
    assert not any(flag.startswith("domain") for flag in flags)
    me = client.get("/auth/me")
    assert me.status_code == 200
    assert body(me)["method"] == "session"
    assert body(me)["id"] == created["id"]


def test_blueprint_api_login_returns_a_token_pair_with_no_store(host: Host) -> None:
    client = host.client()
    register(client)
    response = client.post(
        "/auth/login", json={"email": EMAIL, "password": PASSWORD, "client": "api"}
    )
    assert response.status_code == 200
    assert set(body(response)) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert response.headers["Cache-Control"] == "no-store"
    me = host.client().get("/auth/me", headers=bearer(body(response)["access_token"]))
    assert body(me)["method"] == "bearer"


def test_blueprint_web_logout_needs_the_csrf_token_then_ends_the_session(host: Host) -> None:
    client = host.client()
    register(client)
    csrf = web_login(client)
    assert_problem(client.post("/auth/logout"), 403)
    assert client.get("/auth/me").status_code == 200
    assert client.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert_unauthorized(client.get("/auth/me"), token_sent=False)


def test_blueprint_unknown_auth_path_is_a_problem_404_without_redirect(host: Host) -> None:
    client = host.client()
    for path in ("/auth/nope", "/auth/me/"):
        response = client.get(path)
        assert_problem(response, 404)
        assert "Location" not in response.headers


def test_blueprint_serves_the_pages_and_jwks(host: Host) -> None:
    client = host.client()
    page = client.get("/login")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert client.get("/static/gatepass.css").mimetype == "text/css"
    keys = body(client.get("/.well-known/jwks.json"))["keys"]
    assert keys
    assert all("kid" in key for key in keys)


def test_oversized_body_through_the_blueprint_is_refused(host: Host) -> None:
    response = host.client().post(
        "/auth/register",
        data=b"{" + b" " * (128 * 1024) + b"}",
        content_type="application/json",
    )
    assert_problem(response, 413)


# the host's own routes: who may call them -----------------------------------------


def test_anonymous_request_to_a_protected_route_is_401_problem(host: Host) -> None:
    response = host.client().get("/whoami")
    assert_unauthorized(response, token_sent=False)
    assert "html" not in response.get_data(as_text=True).lower()


def test_valid_bearer_token_reaches_the_protected_route(host: Host) -> None:
    client = host.client()
    user = register(client)
    pair = token_login(client)
    response = host.client().get("/whoami", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    assert body(response) == {"user_id": user["id"], "method": "bearer", "roles": ["user"]}


def test_async_view_is_guarded_like_a_sync_one(host: Host) -> None:
    client = host.client()
    user = register(client)
    token = token_login(client)["access_token"]
    assert_unauthorized(host.client().get("/async"), token_sent=False)
    assert body(host.client().get("/async", headers=bearer(token))) == {"user_id": user["id"]}


def test_session_cookie_reaches_the_protected_route(host: Host) -> None:
    client = host.client()
    user = register(client)
    web_login(client)
    response = client.get("/whoami")
    assert response.status_code == 200
    assert body(response) == {"user_id": user["id"], "method": "session", "roles": ["user"]}


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-jwt", "Bearer ", "Basic YWRhOnB3", "Token abc"],
)
def test_bad_authorization_header_is_refused(host: Host, authorization: str) -> None:
    response = host.client().get("/whoami", headers={"Authorization": authorization})
    assert_unauthorized(response, token_sent=True)


def test_token_with_a_forged_signature_is_refused(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    assert_unauthorized(host.client().get("/whoami", headers=bearer(forged)), token_sent=True)


def test_expired_token_is_refused(host: Host, clock: FakeClock) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert host.client().get("/whoami", headers=bearer(token)).status_code == 200
    clock.advance(host.settings.access_token_ttl + host.settings.leeway + 1)
    assert_unauthorized(host.client().get("/whoami", headers=bearer(token)), token_sent=True)


def test_revoked_token_is_refused(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert host.client().get("/whoami", headers=bearer(token)).status_code == 200
    assert host.client().post("/auth/logout", headers=bearer(token)).status_code == 204
    assert_unauthorized(host.client().get("/whoami", headers=bearer(token)), token_sent=True)


def test_bad_bearer_does_not_fall_back_to_a_valid_session_cookie(host: Host) -> None:
    client = host.client()
    register(client)
    web_login(client)
    assert client.get("/whoami").status_code == 200
    response = client.get("/whoami", headers=bearer("forged.token.value"))
    assert_unauthorized(response, token_sent=True)


def test_tossed_second_session_cookie_is_refused(host: Host) -> None:
    client = host.client()
    register(client)
    web_login(client)
    real = client.get_cookie(SESSION, domain="testserver")
    assert real is not None
    tossed = host.client()
    header = f"{SESSION}=attacker-value; {SESSION}={real.value}"
    assert_unauthorized(tossed.get("/whoami", headers={"Cookie": header}), token_sent=False)


def test_optional_identity_is_none_only_without_any_credential(host: Host) -> None:
    client = host.client()
    user = register(client)
    assert body(client.get("/maybe")) == {"user_id": None}
    token = token_login(client)["access_token"]
    assert body(client.get("/maybe", headers=bearer(token))) == {"user_id": user["id"]}
    assert_unauthorized(client.get("/maybe", headers=bearer("bad")), token_sent=True)


def test_identity_is_judged_once_per_request(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert body(client.get("/twice", headers=bearer(token))) == {"same": True}


# roles, and a store that is down ------------------------------------------------------


def _grant_admin(host: Host, user_id: str) -> None:
    with host.db() as conn:
        conn.execute("UPDATE gatepass_users SET roles = 'user admin' WHERE id = ?", (user_id,))


def test_plain_user_on_an_admin_route_is_403_not_401(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    response = host.client().get("/admin", headers=bearer(token))
    assert_problem(response, 403)
    assert "WWW-Authenticate" not in response.headers


def test_a_stale_sign_in_is_refused_where_a_fresh_one_is_required(
    host: Host, clock: FakeClock
) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert body(host.client().get("/fresh", headers=bearer(token)))["fresh"]
    clock.advance(301)
    stale = host.client().get("/fresh", headers=bearer(token))
    assert_problem(stale, 403)
    assert stale.get_json()["code"] == "reauthentication_required"


def test_a_password_alone_fails_a_second_factor_requirement(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    refused = host.client().get("/two-factor", headers=bearer(token))
    assert_problem(refused, 403)
    assert refused.get_json()["code"] == "second_factor_required"


def test_anonymous_caller_on_an_admin_route_is_401_not_403(host: Host) -> None:
    assert_unauthorized(host.client().get("/admin"), token_sent=False)


def test_admin_passes_the_admin_route_by_token_and_by_session(host: Host) -> None:
    client = host.client()
    user = register(client)
    _grant_admin(host, user["id"])
    token = token_login(client)["access_token"]
    assert host.client().get("/admin", headers=bearer(token)).status_code == 200
    web_login(client)
    assert client.get("/admin").status_code == 200


def test_session_request_fails_closed_with_503_when_the_store_is_down(
    host: Host, clock: FakeClock
) -> None:
    client = host.client()
    register(client)
    web_login(client)
    assert client.get("/whoami").status_code == 200
    with host.db() as conn:
        conn.execute("DROP TABLE gatepass_sessions")
    clock.advance(2)  # past the in-process session cache
    response = client.get("/whoami")
    assert_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert "sqlite" not in response.get_data(as_text=True).lower()


def test_bearer_request_fails_closed_with_503_when_revocations_are_unreadable(
    host: Host, clock: FakeClock
) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert host.client().get("/whoami", headers=bearer(token)).status_code == 200
    with host.db() as conn:
        conn.execute("DROP TABLE gatepass_revocations")
    clock.advance(REVOCATION_POLL_SECONDS + 1)
    response = host.client().get("/whoami", headers=bearer(token))
    assert_problem(response, 503)
    assert "Retry-After" in response.headers


# CSRF on the host's own unsafe routes --------------------------------------------------


def test_cross_site_post_with_the_session_cookie_and_no_token_is_refused(host: Host) -> None:
    client = host.client()
    register(client)
    web_login(client)
    assert_problem(client.post("/notes"), 403)


def test_cookie_post_with_a_wrong_csrf_token_is_refused(host: Host) -> None:
    client = host.client()
    register(client)
    web_login(client)
    assert_problem(client.post("/notes", headers={"X-CSRF-Token": "guess"}), 403)


def test_cookie_post_from_a_foreign_origin_is_refused_even_with_the_token(host: Host) -> None:
    client = host.client()
    register(client)
    csrf = web_login(client)
    headers = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert_problem(client.post("/notes", headers=headers), 403)


def test_cookie_post_with_the_csrf_header_or_form_field_passes(host: Host) -> None:
    client = host.client()
    register(client)
    csrf = web_login(client)
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    assert client.post("/notes", headers=headers).status_code == 201
    assert client.post("/notes", data={"csrf_token": csrf}).status_code == 201


def test_bearer_post_needs_no_csrf_token(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    assert host.client().post("/notes", headers=bearer(token)).status_code == 201


# configuration, client address -------------------------------------------------------


def test_settings_come_from_app_config(tmp_path: Any) -> None:
    settings = settings_from_config(
        {
            "GATEPASS_DEV": True,
            "GATEPASS_ACCESS_TOKEN_TTL": 120,
            "GATEPASS_ALLOWED_ORIGINS": ["https://app.example"],
            "GATEPASS_DATA_DIR": str(tmp_path),
            "SECRET_KEY": "not gatepass's",
        }
    )
    assert settings.dev is True
    assert settings.access_token_ttl == 120
    assert settings.allowed_origins == ("https://app.example",)
    assert settings.data_dir == tmp_path


def test_init_app_without_settings_reads_app_config(tmp_path: Any) -> None:
    app = Flask("configured")
    app.config.update(GATEPASS_DATA_DIR=str(tmp_path), GATEPASS_ACCESS_TOKEN_TTL="60")
    FlaskGatepass().init_app(app)
    assert app.extensions[EXTENSION_KEY].settings.access_token_ttl == 60


def test_invalid_config_key_stops_init_app_naming_it() -> None:
    app = Flask("misconfigured")
    app.config["GATEPASS_LEEWAY"] = "-1"
    with pytest.raises(ConfigError) as raised:
        FlaskGatepass().init_app(app)
    assert raised.value.setting == "GATEPASS_LEEWAY"
    app.config.pop("GATEPASS_LEEWAY")
    app.config["GATEPASS_ACCESS_TOKN_TTL"] = "60"
    with pytest.raises(ConfigError) as typo:
        FlaskGatepass().init_app(app)
    assert typo.value.setting == "GATEPASS_ACCESS_TOKN_TTL"


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    make_host: Callable[..., Host],
) -> None:
    plain = make_host()
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    assert body(plain.client().get("/ip", headers=spoof)) == {"ip": "127.0.0.1"}
    proxied = make_host(trusted_proxies="127.0.0.1")
    assert body(proxied.client().get("/ip", headers=spoof)) == {"ip": "203.0.113.9"}


# one loop per process -------------------------------------------------------------------


def test_one_event_loop_serves_every_request_of_the_process(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    first = body(client.get("/loop"))
    for _ in range(50):
        assert client.get("/whoami", headers=bearer(token)).status_code == 200
        facts = body(client.get("/loop"))
        assert facts == first  # same loop object, same loop thread, no thread added
    assert first["pid"] == os.getpid()


def test_forked_child_runs_its_own_loop_and_still_authenticates(host: Host) -> None:
    client = host.client()
    register(client)
    token = token_login(client)["access_token"]
    parent = body(client.get("/loop"))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer two requests, report, and leave at once
        try:
            os.close(read_end)
            child = host.client()
            status = child.get("/whoami", headers=bearer(token)).status_code
            facts = [body(child.get("/loop")) for _ in range(2)]
            os.write(write_end, json.dumps({"status": status, "facts": facts}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert report["status"] == 200
    first, second = report["facts"]
    assert first == second
    assert first["pid"] == pid != parent["pid"]
    assert first["tid"] != parent["tid"]
    # The parent's loop is untouched by the fork.
    assert body(client.get("/loop")) == parent


def test_store_that_cannot_open_is_503_and_the_next_request_opens_it(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    settings = make_settings()
    database = settings.data_dir / "gatepass.db"
    database.mkdir(parents=True)  # a folder where the database file belongs
    ext = FlaskGatepass(settings=settings, clock=clock, hasher=fast_hasher)
    app = build_host(ext)
    try:
        client = app.test_client()
        refused = client.get("/.well-known/jwks.json")
        assert_problem(refused, 503)
        assert "Retry-After" in refused.headers
        database.rmdir()  # the operator fixes it: no restart needed
        assert client.get("/.well-known/jwks.json").status_code == 200
    finally:
        ext.close(app)


def test_flask_adapter_exports_exactly_its_public_names() -> None:
    import gatepass.integrations.flask as adapter

    assert sorted(adapter.__all__) == [
        "EXTENSION_KEY",
        "FlaskGatepass",
        "Principal",
        "TokenVerifier",
        "client_address",
        "current_identity",
        "fresh_login_required",
        "gatepass_blueprint",
        "get_identity",
        "login_required",
        "roles_required",
        "second_factor_required",
        "settings_from_config",
    ]
    assert all(hasattr(adapter, name) for name in adapter.__all__)


# resource-server mode: tokens of a running `gatepass serve`, through the verifier ------


@dataclass
class Issuer:
    url: str
    data_dir: Path

    def account(self, email: str, *, admin: bool = False) -> tuple[str, httpx.Cookies]:
        """Register ``email`` on the auth server; its access token and the cookies of
        a browser sign-in there."""
        with httpx.Client(base_url=self.url, timeout=10) as http:
            created = http.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert created.status_code == 201, created.text
            if admin:
                with sqlite3.connect(self.data_dir / "gatepass.db") as conn:
                    conn.execute(
                        "UPDATE gatepass_users SET roles = 'user admin' WHERE id = ?",
                        (created.json()["id"],),
                    )
            pair = http.post(
                "/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
            )
            web = http.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert web.status_code == 200, web.text
            return str(pair.json()["access_token"]), web.cookies


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    root = tmp_path_factory.mktemp("issuer")
    with running_server(root) as server:
        yield Issuer(server.url, root / ".gatepass")


@dataclass
class Service:
    app: Flask
    verifier: Verifier

    def client(self) -> FlaskClient:
        return self.app.test_client()


@pytest.fixture
def make_service(issuer: Issuer) -> Iterator[Callable[..., Service]]:
    made: list[Verifier] = []

    def make(**options: Any) -> Service:
        verifier = Verifier(issuer.url, **options)
        made.append(verifier)
        return Service(build_service(FlaskGatepass(verifier=verifier)), verifier)

    yield make
    for verifier in made:
        verifier.close()


def build_service(ext: FlaskGatepass) -> Flask:
    app = Flask("service")
    ext.init_app(app)

    @app.get("/whoami")
    @login_required
    def whoami() -> Any:
        return jsonify(user_id=current_identity.user_id, method=current_identity.method)

    @app.post("/notes")
    @login_required
    def notes() -> Any:
        return jsonify(saved=True), 201

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> Any:
        return jsonify(ok=True)

    return app


@pytest.mark.e2e
def test_resource_server_accepts_a_token_of_the_issuer(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    token, _ = issuer.account("rs-valid@example.com")
    response = make_service().client().get("/whoami", headers=bearer(token))
    assert response.status_code == 200
    assert body(response)["method"] == "bearer"


@pytest.mark.e2e
def test_resource_server_without_credential_is_401(make_service: Callable[..., Service]) -> None:
    assert_unauthorized(make_service().client().get("/whoami"), token_sent=False)


@pytest.mark.e2e
def test_session_cookie_of_the_issuer_is_no_credential_on_a_resource_server(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    _, cookies = issuer.account("rs-cookie@example.com")
    client = make_service().client()
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    assert header  # the issuer did set a session cookie
    assert_unauthorized(client.get("/whoami", headers={"Cookie": header}), token_sent=False)


@pytest.mark.e2e
def test_forged_token_is_refused_by_a_resource_server(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    token, _ = issuer.account("rs-forged@example.com")
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    client = make_service().client()
    assert_unauthorized(client.get("/whoami", headers=bearer(forged)), token_sent=True)
    basic = {"Authorization": "Basic YWRhOnB3"}
    assert_unauthorized(client.get("/whoami", headers=basic), token_sent=True)


@pytest.mark.e2e
def test_expired_token_is_refused_by_a_resource_server(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    token, _ = issuer.account("rs-expired@example.com")
    clock = FakeClock(time.time())
    client = make_service(clock=clock).client()
    assert client.get("/whoami", headers=bearer(token)).status_code == 200
    clock.advance(900 + 10 + 1)  # the issuer's default TTL and leeway
    assert_unauthorized(client.get("/whoami", headers=bearer(token)), token_sent=True)


@pytest.mark.e2e
def test_plain_user_on_a_resource_servers_admin_route_is_403_admin_is_200(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    client = make_service().client()
    plain, _ = issuer.account("rs-plain@example.com")
    assert_problem(client.get("/admin", headers=bearer(plain)), 403)
    assert_unauthorized(client.get("/admin"), token_sent=False)
    admin, _ = issuer.account("rs-admin@example.com", admin=True)
    assert client.get("/admin", headers=bearer(admin)).status_code == 200


@pytest.mark.e2e
def test_bearer_post_to_a_resource_server_needs_no_csrf_token(
    issuer: Issuer, make_service: Callable[..., Service]
) -> None:
    token, _ = issuer.account("rs-post@example.com")
    response = make_service().client().post("/notes", headers=bearer(token))
    assert response.status_code == 201


@pytest.mark.e2e
def test_resource_server_fails_closed_with_503_when_the_issuers_keys_are_gone(
    tmp_path: Path,
) -> None:
    clock = FakeClock(time.time())
    with running_server(tmp_path) as server:
        token, _ = Issuer(server.url, tmp_path / ".gatepass").account("rs-down@example.com")
        verifier = Verifier(server.url, clock=clock, stale_limit=1)
        client = build_service(FlaskGatepass(verifier=verifier)).test_client()
        assert client.get("/whoami", headers=bearer(token)).status_code == 200
    try:
        # The issuer is gone; past the key set's lifetime and its stale limit the
        # verifier trusts no key any more.
        clock.advance(3600 + 60)
        response = client.get("/whoami", headers=bearer(token))
        assert_problem(response, 503)
        assert int(response.headers["Retry-After"]) > 0
    finally:
        verifier.close()


def test_blueprint_on_a_resource_server_is_refused_at_registration() -> None:
    app = Flask("service")
    with Verifier("http://127.0.0.1:9") as verifier:
        FlaskGatepass(verifier=verifier).init_app(app)
        with pytest.raises(TypeError):
            app.register_blueprint(gatepass_blueprint())

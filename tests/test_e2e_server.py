"""End-to-end: the real ``gatepass serve`` process, spoken to over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e_support import BAD_CONFIG_TIMEOUT, RunningServer, run_serve_expecting_exit
from tests.e2e_support import running_server as _running_server

pytestmark = pytest.mark.e2e

DEV = {"GATEPASS_DEV": "1"}
COOKIE = "gatepass_session"  # the cookie's name in dev mode (no __Host- prefix without Secure)
TIMEOUT = httpx.Timeout(30.0)


def running_server(
    cwd: Path, env: dict[str, str] | None = None
) -> AbstractContextManager[RunningServer]:
    """The real server in dev mode (cookies without Secure, so plain http works)."""
    return _running_server(cwd, {**DEV, **(env or {})})


def register(client: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return dict(response.json())


def login(client: httpx.Client, email: str, password: str = PASSWORD) -> str:
    """Sign in as a web client; return the CSRF token (the cookie lands in the client's jar)."""
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])


def session_id_of(cookie_value: str) -> str:
    """The secret session ID inside a signed cookie value (``ID.signature``)."""
    return cookie_value.rsplit(".", 1)[0]


def http(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=TIMEOUT)


def test_register_login_me_logout_round_trip_over_real_http(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, http(server) as client:
        user = register(client, "ada@example.com")
        response = client.post(
            "/auth/login", json={"email": " ADA@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        assert "httponly" in set_cookie.lower()
        assert "samesite=lax" in set_cookie.lower()
        assert "secure" not in set_cookie.lower()  # dev mode: plain http on loopback
        csrf = response.json()["csrf_token"]
        cookie = client.cookies[COOKIE]

        me = client.get("/auth/me")
        assert me.status_code == 200
        assert me.json() == {
            "id": user["id"],
            "email": "ada@example.com",
            "roles": ["user"],
            "email_verified": False,
            "method": "session",
            "auth_time": me.json()["auth_time"],
            "amr": ["pwd"],
        }
        assert abs(me.json()["auth_time"] - time.time()) < 60

        out = client.post("/auth/logout", headers={"X-CSRF-Token": csrf, "Origin": server.url})
        assert out.status_code == 204
        assert client.get("/auth/me").status_code == 401

        # The logged-out cookie is dead on the server, not just dropped by the client.
        with http(server) as replay:
            response = replay.get("/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")


def test_users_sessions_and_generated_secret_survive_a_restart(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, http(server) as client:
        user = register(client, "grace@example.com")
        csrf = login(client, "grace@example.com")
        cookie = client.cookies[COOKIE]
    assert server.process.returncode is not None  # really stopped

    with running_server(tmp_path) as server, http(server) as client:
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        # The cookie was signed with the secret generated on first start: it must verify.
        me = client.get("/auth/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user["id"]
        assert me.json()["method"] == "session"
        assert client.get("/auth/csrf", headers=headers).json() == {"csrf_token": csrf}
        # The user is still there: the same password signs in again.
        with http(server) as fresh:
            login(fresh, "grace@example.com")
        out = client.post(
            "/auth/logout", headers={**headers, "X-CSRF-Token": csrf, "Origin": server.url}
        )
        assert out.status_code == 204
        assert client.get("/auth/me", headers=headers).status_code == 401


def test_data_folder_is_private_to_its_owner(tmp_path: Path) -> None:
    data = tmp_path / ".gatepass"
    assert not data.exists()
    with running_server(tmp_path) as server, http(server) as client:
        register(client, "lin@example.com")
        login(client, "lin@example.com")
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = [p for p in data.iterdir() if p.is_file()]
        assert any(p.name.endswith(".db") for p in files), files
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert modes == dict.fromkeys(modes, "0o600"), modes


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEPASS_ACCESS_TOKEN_TTL", "0"),
        ("GATEPASS_ACCESS_TOKEN_TTL", "abc"),
        ("GATEPASS_SESSION_IDLE_TIMEOUT", "-5"),
        ("GATEPASS_LEEWAY", "-1"),
        ("GATEPASS_JWT_ALGORITHM", "none"),
        ("GATEPASS_BOGUS", "1"),
    ],
)
def test_invalid_setting_stops_serve_with_one_line_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    started = time.monotonic()
    result = run_serve_expecting_exit(tmp_path, {name: value})
    assert time.monotonic() - started < BAD_CONFIG_TIMEOUT
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


@pytest.mark.parametrize(
    "env",
    [{"GATEPASS_LEEWAY": "0"}, {"GATEPASS_ACCESS_TOKEN_TTL": "1"}],
    ids=["leeway-0", "access-ttl-1"],
)
def test_edge_values_that_are_valid_start_the_server(tmp_path: Path, env: dict[str, str]) -> None:
    with running_server(tmp_path, env) as server, http(server) as client:
        assert client.get("/healthz").status_code == 200
        register(client, "edge@example.com")
        login(client, "edge@example.com")
        assert client.get("/auth/me").status_code == 200


def test_server_logs_hold_no_password_and_no_session_secret(tmp_path: Path) -> None:
    wrong_password = "not the right one 1"
    with running_server(tmp_path) as server, http(server) as client:
        register(client, "mo@example.com")
        failed = client.post(
            "/auth/login", json={"email": "mo@example.com", "password": wrong_password}
        )
        assert failed.status_code == 401
        csrf = login(client, "mo@example.com")
        cookie = client.cookies[COOKIE]
        assert client.get("/auth/me").status_code == 200
        assert client.get("/auth/sessions").status_code == 200
        out = client.post("/auth/logout", headers={"X-CSRF-Token": csrf, "Origin": server.url})
        assert out.status_code == 204
    logs = server.logs()  # read after stop: every line is flushed

    # The logs really were captured, or the assertions below would prove nothing.
    assert "POST /auth/login" in logs, logs
    session_id = session_id_of(cookie)
    for secret in (
        PASSWORD,
        wrong_password,
        cookie,
        session_id,
        hashlib.sha256(session_id.encode()).hexdigest(),
    ):
        assert secret not in logs


def test_concurrent_burst_of_logins_all_succeed(tmp_path: Path) -> None:
    emails = [f"user{i}@example.com" for i in range(20)]

    async def burst(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as admin:
            created = await asyncio.gather(
                *(
                    admin.post("/auth/register", json={"email": e, "password": PASSWORD})
                    for e in emails
                )
            )
        assert [r.status_code for r in created] == [201] * len(emails)

        clients = [httpx.AsyncClient(base_url=url, timeout=TIMEOUT) for _ in emails]
        try:
            logins = await asyncio.gather(
                *(
                    c.post("/auth/login", json={"email": e, "password": PASSWORD})
                    for c, e in zip(clients, emails, strict=True)
                )
            )
            assert [r.status_code for r in logins] == [200] * len(emails), [
                r.text for r in logins if r.status_code != 200
            ]
            cookies = {c.cookies[COOKIE] for c in clients}
            assert len(cookies) == len(emails)  # every session is its own
            mes = await asyncio.gather(*(c.get("/auth/me") for c in clients))
            assert [m.json()["email"] for m in mes] == emails
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    with running_server(tmp_path) as server:
        asyncio.run(asyncio.wait_for(burst(server.url), timeout=120))

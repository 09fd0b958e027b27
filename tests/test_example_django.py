"""examples/django_service: a DRF service under a real gunicorn that trusts the tokens
of a real ``gatepass serve`` through the verifier (resource-server mode)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import gatepass.verifier
from tests.conftest import PASSWORD
from tests.django_project.serving import gunicorn
from tests.e2e_support import RunningServer, running_server

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_service"

if not hasattr(gatepass.verifier, "Verifier"):  # pragma: no cover - until it is merged
    pytest.skip("gatepass.verifier.Verifier is not on this branch", allow_module_level=True)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    cwd = tmp_path_factory.mktemp("auth")
    with running_server(cwd, {"GATEPASS_DEV": "1"}) as server:
        yield server


@pytest.fixture(scope="module")
def service(auth_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("service") / "gunicorn.log"
    env = {"AUTH_SERVER_URL": auth_server.url}
    args = ["--workers", "2", "--chdir", str(EXAMPLE)]
    with gunicorn(EXAMPLE, "wsgi:application", log, env, probe="/api/hello", args=args) as url:
        yield url


def _login(server: RunningServer, email: str, *, admin: bool = False) -> str:
    body = {"email": email, "password": PASSWORD}
    assert httpx.post(f"{server.url}/auth/register", json=body).status_code == 201
    if admin:  # roles are data in the server's store; a token carries them from login
        _make_admin(server.stdout_path.parent, email)  # its logs live in its cwd
    answer = httpx.post(f"{server.url}/auth/login", json={**body, "client": "api"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _make_admin(cwd: Path, email: str) -> None:
    with sqlite3.connect(cwd / ".gatepass" / "gatepass.db") as conn:
        conn.execute("UPDATE gatepass_users SET roles = 'user admin' WHERE email = ?", (email,))


def _get(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=10.0)


def test_token_from_the_auth_server_is_trusted(auth_server: RunningServer, service: str) -> None:
    token = _login(auth_server, "ada@example.com")
    response = _get(f"{service}/api/hello", token)
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["user"]


def test_request_without_a_token_is_401_with_a_challenge(service: str) -> None:
    response = _get(f"{service}/api/hello")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_forged_token_is_401_invalid_token(auth_server: RunningServer, service: str) -> None:
    token = _login(auth_server, "eve@example.com")
    response = _get(f"{service}/api/hello", token[:-4] + "AAAA")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_admin_route_is_403_for_a_plain_user(auth_server: RunningServer, service: str) -> None:
    token = _login(auth_server, "bob@example.com")
    response = _get(f"{service}/api/admin/report", token)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


def test_admin_route_is_200_for_an_admin(auth_server: RunningServer, service: str) -> None:
    token = _login(auth_server, "root@example.com", admin=True)
    response = _get(f"{service}/api/admin/report", token)
    assert response.status_code == 200, response.text
    assert response.json()["report"] == "all good"

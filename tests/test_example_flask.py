"""examples/flask_service runs as its README says: a real ``gatepass serve`` issues
the token, the example service (in resource-server mode) trusts it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.flask_service.app import create_app
from flask.testing import FlaskClient

from tests.conftest import PASSWORD
from tests.e2e_support import running_server

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[str]:
    with running_server(tmp_path) as server:
        yield server.url


def sign_in(url: str, email: str, data_dir: Path | None = None) -> str:
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201, created.text
        if data_dir is not None:  # as the README says: grant the role in SQL
            with sqlite3.connect(data_dir / "gatepass.db") as conn:
                conn.execute(
                    "UPDATE gatepass_users SET roles = 'user admin' WHERE email = ?", (email,)
                )
        pair = http.post(
            "/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
        )
        assert pair.status_code == 200, pair.text
        return str(pair.json()["access_token"])


def test_example_service_trusts_the_issuers_token(issuer: str) -> None:
    token = sign_in(issuer, "ada@example.com")
    client: FlaskClient = create_app(issuer).test_client()
    profile = client.get("/api/profile", headers={"Authorization": f"Bearer {token}"})
    assert profile.status_code == 200
    assert profile.get_json()["roles"] == ["user"]
    anonymous = client.get("/api/profile")
    assert anonymous.status_code == 401
    assert anonymous.mimetype == PROBLEM
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"


def test_example_admin_route_refuses_a_plain_user_and_admits_an_admin(
    issuer: str, tmp_path: Path
) -> None:
    client = create_app(issuer).test_client()
    plain = sign_in(issuer, "plain@example.com")
    denied = client.get("/api/admin/report", headers={"Authorization": f"Bearer {plain}"})
    assert denied.status_code == 403
    assert denied.mimetype == PROBLEM
    admin = sign_in(issuer, "root@example.com", data_dir=tmp_path / ".gatepass")
    allowed = client.get("/api/admin/report", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200


def test_example_refuses_a_token_of_another_issuer(issuer: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with running_server(other) as stranger:
        foreign = sign_in(stranger.url, "eve@example.com")
    client = create_app(issuer).test_client()
    refused = client.get("/api/profile", headers={"Authorization": f"Bearer {foreign}"})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

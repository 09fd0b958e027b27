"""Shared fixtures: an injected clock, settings on a temporary data folder, and an
in-process client of the real auth server app (SQLite in ``tmp_path``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gatepass.config import Settings, load_settings
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app

#: Real servers on loopback (PostgreSQL), started once per session when a test asks.
pytest_plugins = ["tests.servers", "tests.smtp_server"]  # + SMTP (aiosmtpd)

PASSWORD = "correct horse battery"
#: Cheap argon2id parameters for tests; production parameters are tested in test_passwords.
FAST_HASHER_PARAMS: dict[str, int] = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
BASE_URL = "https://testserver"
ORIGIN = "https://testserver"
#: The in-process client's TCP peer: a real loopback address (Starlette's default,
#: "testclient", is no IP address, so loopback-only /metrics would refuse it).
LOOPBACK_PEER = ("127.0.0.1", 50000)


class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fast_hasher() -> PasswordHasher:
    return PasswordHasher(**FAST_HASHER_PARAMS)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from an explicit env mapping (never the developer's own env), data in tmp.

    The server's own origin comes from configuration, never from ``Host``: unless a
    test says otherwise, the public URL is the test client's ``BASE_URL``.
    """

    def make(**env: str) -> Settings:
        env.setdefault("public_url", BASE_URL)
        environ = {f"GATEPASS_{k.upper()}": v for k, v in env.items()}
        return load_settings(environ, data_dir=tmp_path / ".gatepass")

    return make


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> Iterator[Callable[..., TestClient]]:
    """Start the real app (lifespan included) with the given GATEPASS_* settings, its
    client connecting from ``peer`` (a loopback address unless the test says otherwise)."""
    clients: list[TestClient] = []

    def make(*, peer: tuple[str, int] = LOOPBACK_PEER, **env: str) -> TestClient:
        app = create_app(make_settings(**env), clock=clock, hasher=fast_hasher)
        client = TestClient(app, base_url=BASE_URL, raise_server_exceptions=False, client=peer)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def register(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD) -> Any:
    response = client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD) -> str:
    """Sign in as a web client; return the CSRF token (the cookie lands in the client's jar)."""
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])


def token_login(
    client: TestClient,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    *,
    kind: str = "mobile",
) -> dict[str, Any]:
    """Sign in as a token client (``mobile`` or ``api``); return the token pair."""
    response = client.post(
        "/auth/login", json={"email": email, "password": password, "client": kind}
    )
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    return dict(pair)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def bearer_me_status(client: TestClient, access_token: str) -> int:
    """Status of ``GET /auth/me`` with ``access_token`` as the only credential sent."""
    return client.get("/auth/me", headers=bearer(access_token)).status_code


def session_cookie(client: TestClient) -> str | None:
    return client.cookies.get("__Host-gatepass_session")


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")

"""A store that stops answering must never let a request through (DESIGN §1: fail closed).

The outage is real: the test breaks the SQLite database under the running app
(drops a table), so every query on it fails as it would on a lost database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gatepass.core import Gatepass
from gatepass.keys import KeyRing
from gatepass.revocation import REVOCATION_POLL_SECONDS
from gatepass.stores.sql import SqlStore
from tests.conftest import PASSWORD, FakeClock, login, register, token_login

PROBLEM = "application/problem+json"


def _gatepass(client: TestClient) -> Gatepass:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    return gp


def _break(client: TestClient, table: str) -> None:
    db = _gatepass(client).settings.data_dir / "gatepass.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TABLE {table}")


def _bearer(client: TestClient) -> str:
    register(client)
    return str(token_login(client, kind="api")["access_token"])


def test_bearer_request_fails_closed_when_the_revocation_feed_is_unreadable(
    client: TestClient, clock: FakeClock
) -> None:
    token = _bearer(client)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/auth/me", headers=auth).status_code == 200
    _break(client, "gatepass_revocations")
    clock.advance(REVOCATION_POLL_SECONDS + 1)
    response = client.get("/auth/me", headers=auth)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)


def test_session_request_fails_closed_when_the_session_store_is_unreadable(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    login(client)
    assert client.get("/auth/me").status_code == 200
    _break(client, "gatepass_sessions")
    clock.advance(2)  # past the in-process session cache
    response = client.get("/auth/me")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "sqlite" not in response.text.lower()


def test_login_fails_closed_when_the_user_store_is_unreadable(client: TestClient) -> None:
    register(client)
    _break(client, "gatepass_users")
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "session" not in response.cookies


@pytest.mark.anyio
async def test_retired_key_leaves_the_jwks_once_its_tokens_expired(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await store.start()
    try:
        ring = KeyRing(store, "EdDSA", retention=100, clock=clock)
        await ring.start()
        old = ring.signing_key().kid
        await ring.rotate()
        assert old in {k["kid"] for k in ring.jwks()["keys"]}
        clock.advance(101)
        await ring.reload()  # a plain reload, no rotation and no restart
        assert old not in {k["kid"] for k in ring.jwks()["keys"]}
    finally:
        await store.close()


@pytest.mark.anyio
async def test_rehash_never_overwrites_a_password_changed_meanwhile(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    await store.start()
    try:
        user = await store.create_user("ada@example.com", "hash-1", ["user"], 1.0)
        await store.set_password_hash(user.id, "hash-2", previous="hash-1")  # password change
        stale = await store.set_password_hash(user.id, "rehash-of-1", previous="hash-1")
        assert stale is False
        current = await store.get_user(user.id)
        assert current is not None
        assert current.password_hash == "hash-2"
    finally:
        await store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_parallel_wrong_passwords_cannot_exceed_the_lockout(
    make_client: Callable[..., TestClient],
) -> None:
    """Guesses in flight count: of 12 concurrent wrong guesses, at most 3 are checked."""
    import concurrent.futures

    client = make_client(login_max_failures="3", login_ip_limit="1000")
    register(client)

    def guess(n: int) -> int:
        r = client.post("/auth/login", json={"email": "ada@example.com", "password": f"wrong{n}xx"})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(guess, range(12)))
    assert statuses.count(401) <= 3
    assert statuses.count(429) >= 9


@pytest.mark.anyio
async def test_concurrent_bearer_requests_after_idle_share_one_feed_read(
    make_settings: Callable[..., object], fast_hasher: object, clock: FakeClock
) -> None:
    """Regression: many requests arriving while the feed is being read all wait for
    that read and succeed, instead of failing or being judged on an old view."""
    import asyncio

    import httpx

    from gatepass.server.app import create_app

    settings = make_settings()
    gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)  # type: ignore[arg-type]
    try:
        app = create_app(gatepass=gp)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            account = {"email": "ada@example.com", "password": PASSWORD}
            await http.post("/auth/register", json=account)
            pair = (
                await http.post(
                    "/auth/login",
                    json={**account, "client": "api"},
                )
            ).json()
            auth = {"Authorization": f"Bearer {pair['access_token']}"}
            clock.advance(60)
            statuses = await asyncio.gather(
                *(http.get("/auth/me", headers=auth) for _ in range(20))
            )
        assert [r.status_code for r in statuses] == [200] * 20
    finally:
        await gp.close()

"""Regressions for an outside review's findings, each written as the attack."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.testclient import TestClient

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import RateLimited
from gatepass.passwords import PasswordHasher
from gatepass.ratelimit import CredentialGuard, LoginThrottle, ip_key
from gatepass.server.app import create_app
from gatepass.stores.sql import SqlStore
from tests.conftest import (
    BASE_URL,
    PASSWORD,
    FakeClock,
    bearer,
    login,
    register,
    token_login,
)

EMAIL = "ada@example.com"
NEW_PASSWORD = "a different passphrase"
DEVICE_COOKIE = "__Host-gatepass_device"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def other_client(client: TestClient, peer: str = "198.51.100.7") -> TestClient:
    """Another device on the same running server, with a jar of its own."""
    return TestClient(
        client.app, base_url=BASE_URL, raise_server_exceptions=False, client=(peer, 40000)
    )


def attempt(
    client: TestClient, password: str, kind: str = "web", *, device_cookie: str | None = None
) -> int:
    body = {"email": EMAIL, "password": password, "client": kind}
    headers = {"Cookie": f"{DEVICE_COOKIE}={device_cookie}"} if device_cookie else None
    return client.post("/auth/login", json=body, headers=headers).status_code


# item 2: a cached hash on the Bearer path ---------------------------------------


def test_bearer_password_change_after_a_change_checks_the_new_password(
    client: TestClient,
) -> None:
    register(client)
    first = token_login(client)["access_token"]
    assert client.get("/auth/me", headers=bearer(first)).status_code == 200  # user cached
    changed = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(first),
    )
    assert changed.status_code == 204
    second = token_login(client, password=NEW_PASSWORD)["access_token"]
    stale = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "yet another passphrase"},
        headers=bearer(second),
    )
    assert stale.status_code == 401  # the old password no longer opens anything
    fresh = client.post(
        "/auth/password",
        json={"current_password": NEW_PASSWORD, "new_password": "yet another passphrase"},
        headers=bearer(second),
    )
    assert fresh.status_code == 204


def test_password_changed_on_another_node_is_checked_against_the_store(
    make_client: Callable[..., TestClient],
) -> None:
    node_a, node_b = make_client(), make_client()  # two servers on one database
    register(node_a)
    early = token_login(node_b)["access_token"]
    assert node_b.get("/auth/me", headers=bearer(early)).status_code == 200  # cached on B
    on_a = token_login(node_a)["access_token"]
    changed = node_a.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(on_a),
    )
    assert changed.status_code == 204
    on_b = token_login(node_b, password=NEW_PASSWORD)["access_token"]
    for current, expected in [(PASSWORD, 401), (NEW_PASSWORD, 204)]:
        response = node_b.post(
            "/auth/password",
            json={"current_password": current, "new_password": "yet another passphrase"},
            headers=bearer(on_b),
        )
        assert response.status_code == expected


# item 3: a flood of password work -------------------------------------------------


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, counting the hashes it actually computes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.computed = 0

    def hash_sync(self, password: str) -> str:
        self.computed += 1
        return super().hash_sync(password)


@pytest.fixture
async def flood_server(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Gatepass, CountingHasher, httpx.AsyncClient]]:
    hasher = CountingHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1, max_pending=2)
    gp = await Gatepass.open(make_settings(), hasher=hasher)
    transport = httpx.ASGITransport(app=create_app(gatepass=gp))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield gp, hasher, http
    finally:
        await gp.close()


@pytest.mark.anyio
async def test_registration_flood_is_refused_instead_of_queued(
    flood_server: tuple[Gatepass, CountingHasher, httpx.AsyncClient],
) -> None:
    _, hasher, http = flood_server
    responses = await asyncio.gather(
        *(
            http.post("/auth/register", json={"email": f"bot{n}@example.com", "password": PASSWORD})
            for n in range(20)
        )
    )
    statuses = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert statuses.count(201) + len(refused) == 20
    assert len(refused) >= 20 - 2 - 4  # the queue holds 2; a few may start as others finish
    assert hasher.computed == statuses.count(201)
    for response in refused:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
    # Once the flood is refused, a normal sign-in is served.
    created = next(r.json()["email"] for r in responses if r.status_code == 201)
    signed_in = await http.post("/auth/login", json={"email": created, "password": PASSWORD})
    assert signed_in.status_code == 200


@pytest.mark.anyio
async def test_refused_overload_does_not_count_against_the_lockout(
    flood_server: tuple[Gatepass, CountingHasher, httpx.AsyncClient],
) -> None:
    gp, _, http = flood_server
    await http.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
    guesses = await asyncio.gather(
        *(
            http.post("/auth/login", json={"email": EMAIL, "password": f"guess {n} xx"})
            for n in range(30)
        )
    )
    statuses = [r.status_code for r in guesses]
    assert set(statuses) <= {401, 429, 503}
    assert 503 in statuses
    # Only the guesses that were checked count; the ones refused for overload do not,
    # so fewer than the lockout's five failures leave the account open.
    assert statuses.count(401) < gp.settings.login_max_failures
    signed_in = await http.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert signed_in.status_code == 200


@pytest.mark.anyio
async def test_junk_refresh_tokens_cost_no_write(client: TestClient) -> None:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    store = gp.store
    assert isinstance(store, SqlStore)
    register(client)
    token_login(client)
    # Sign-up's own mail work (its verification link) runs just after the answer:
    # done before counting, it is not counted as the refreshes' writes.
    assert client.portal is not None
    client.portal.call(gp.account_mail.settle)
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes.append(statement.split(None, 1)[0])

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(20):
            junk = secrets.token_urlsafe(32)
            assert client.post("/auth/refresh", json={"refresh_token": junk}).status_code == 401
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert writes == []


# item 5: the lockout as a weapon --------------------------------------------------


def test_guessing_from_elsewhere_does_not_lock_out_a_device_that_signed_in_before(
    make_client: Callable[..., TestClient],
) -> None:
    owner = make_client(login_max_failures="3", login_lockout="300")
    register(owner)
    login(owner)
    assert owner.cookies.get(DEVICE_COOKIE)
    owner.post(
        "/auth/logout", headers={"X-CSRF-Token": owner.get("/auth/csrf").json()["csrf_token"]}
    )
    attacker = other_client(owner)
    assert [attempt(attacker, f"guess number {n}") for n in range(3)] == [401] * 3
    assert attempt(attacker, PASSWORD) == 429  # untrusted clients are locked out
    assert attempt(other_client(owner, "203.0.113.9"), PASSWORD) == 429
    assert attempt(owner, PASSWORD) == 200  # the owner's device is not
    assert attempt(owner, PASSWORD, kind="mobile") == 200


def test_device_cookie_of_another_account_or_forged_one_gives_no_trust(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_max_failures="3", login_lockout="300")
    register(client)
    register(client, "mallory@example.com")
    attacker = other_client(client)
    login(attacker, "mallory@example.com")  # a genuine device cookie, for another account
    assert attacker.cookies.get(DEVICE_COOKIE)
    for n in range(3):
        assert attempt(attacker, f"guess number {n}") == 401
    assert attempt(attacker, PASSWORD) == 429
    # A cookie bound to the right account whose signature is not the server's.
    genuine = client.app.state.gatepass.devices.issue(EMAIL)  # type: ignore[attr-defined]
    payload, _, signature = genuine.rpartition(".")
    tampered = f"{payload}.{signature[::-1]}"
    assert tampered != genuine
    forged = other_client(client, "203.0.113.10")
    assert attempt(forged, PASSWORD, device_cookie=tampered) == 429
    assert attempt(forged, PASSWORD, device_cookie=genuine) == 200  # genuinely signed


def test_guesses_with_a_device_cookie_lock_only_that_device(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_max_failures="3", login_lockout="300")
    register(client)
    thief = other_client(client)
    login(thief)  # say the thief once had the password, and kept the device cookie
    for n in range(3):
        assert attempt(thief, f"guess number {n}") == 401
    assert attempt(thief, PASSWORD) == 429
    assert attempt(other_client(client, "203.0.113.11"), PASSWORD) == 200


def test_device_cookie_is_set_only_by_a_sign_in_that_grants(client: TestClient) -> None:
    register(client)
    assert attempt(client, "not the password") == 401
    assert client.cookies.get(DEVICE_COOKIE) is None
    token_login(client, kind="api")
    cookie = client.cookies.get(DEVICE_COOKIE)
    assert cookie
    assert EMAIL not in cookie
    # The account tag is keyed: a plain hash of a guessed address does not match it.
    plain = base64.urlsafe_b64encode(hashlib.sha256(EMAIL.encode()).digest()[:16])
    assert plain.rstrip(b"=").decode() not in cookie


# item 7: IPv6 and full tables -----------------------------------------------------


@pytest.mark.anyio
async def test_ipv6_addresses_of_one_64_share_one_limit(clock: FakeClock) -> None:
    throttle = LoginThrottle(max_failures=100, lockout=60, ip_limit=3, clock=clock)
    for n in range(3):
        await throttle.check(f"user{n}@example.com", f"2001:db8:1:2::{n + 1:x}")
    with pytest.raises(RateLimited):
        await throttle.check("next@example.com", "2001:db8:1:2:ffff:ffff:ffff:ffff")
    await throttle.check("next@example.com", "2001:db8:1:3::1")  # another /64
    assert ip_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_ipv6_rotation_behind_a_trusted_proxy_is_limited(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_ip_limit="3", trusted_proxies="127.0.0.1")
    statuses = [
        client.post(
            "/auth/login",
            json={"email": f"user{n}@example.com", "password": PASSWORD},
            headers={"X-Forwarded-For": f"2001:db8:7:7::{n + 1:x}"},
        ).status_code
        for n in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.anyio
async def test_filling_the_throttle_table_never_unlocks_a_locked_account(clock: FakeClock) -> None:
    throttle = LoginThrottle(max_failures=3, lockout=300, ip_limit=10_000, clock=clock, max_keys=50)
    for _ in range(3):
        await throttle.check(EMAIL, None)
        await throttle.record_failure(EMAIL)
    for n in range(2_000):
        await throttle.check(f"filler{n}@example.com", None)
        await throttle.record_failure(f"filler{n}@example.com")
    with pytest.raises(RateLimited):
        await throttle.check(EMAIL, None)


# item 8: sessions and families without bound ---------------------------------------


def test_sign_ins_beyond_the_limit_end_the_least_recently_used(
    make_client: Callable[..., TestClient], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(max_sessions_per_user="3")
    register(client)
    devices = []
    for _ in range(3):
        device = other_client(client)
        login(device)
        devices.append(device)
        clock.advance(120)
    # The first device is used again (its last_seen_at moves), so the second is the oldest.
    assert devices[0].get("/auth/me").status_code == 200
    caplog.set_level(logging.INFO, logger="gatepass.audit")
    pair = token_login(other_client(client))
    assert devices[1].get("/auth/me").status_code == 401
    assert devices[0].get("/auth/me").status_code == 200
    assert devices[2].get("/auth/me").status_code == 200
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 200
    assert any("session limit" in r.getMessage() for r in caplog.records)
    listed = devices[0].get("/auth/sessions").json()
    assert len(listed) == 3


def test_a_flood_of_sign_ins_keeps_the_session_list_bounded(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(max_sessions_per_user="5", login_ip_limit="1000")
    register(client)
    first = token_login(client)
    clock.advance(1)
    for n in range(40):
        if n % 2:
            token_login(client)
        else:
            client.cookies.clear()
            login(client)
        clock.advance(1)
    login(client)
    assert len(client.get("/auth/sessions").json()) == 5
    # The evicted first family is dead at once: its access and refresh tokens.
    assert client.get("/auth/me", headers=bearer(first["access_token"])).status_code == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 401


# found in review of the fixes -------------------------------------------------------


def test_client_supplied_forwarded_line_cannot_pose_as_loopback(
    make_client: Callable[..., TestClient],
) -> None:
    # A trusted proxy that adds its own X-Forwarded-For line (HAProxy's forwardfor)
    # after the one the client sent.
    client = make_client(trusted_proxies="127.0.0.1")
    response = client.get(
        "/metrics",
        headers=[("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.5")],
    )
    assert response.status_code == 403


def test_expired_sessions_do_not_count_toward_the_limit(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(
        max_sessions_per_user="2", session_idle_timeout="1800", session_absolute_timeout="3600"
    )
    register(client)
    old = other_client(client)
    login(old)  # t=0: expires at t=3600 whatever happens
    clock.advance(1500)
    assert old.get("/auth/me").status_code == 200
    clock.advance(500)
    live = other_client(client)
    login(live)  # t=2000
    clock.advance(1000)
    assert old.get("/auth/me").status_code == 200  # t=3000: seen later than the live one
    clock.advance(601)  # t=3601: the old one has expired, the live one has not
    login(other_client(client))
    assert live.get("/auth/me").status_code == 200


def test_refresh_with_a_foreign_origin_is_refused(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    response = client.post(
        "/auth/refresh",
        json={"refresh_token": pair["refresh_token"]},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    retry = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert retry.status_code == 200  # the refused request spent nothing


@pytest.mark.anyio
async def test_full_throttle_table_evicts_idle_entries_before_counting_ones(
    clock: FakeClock,
) -> None:
    throttle = LoginThrottle(max_failures=3, lockout=60, ip_limit=10_000, clock=clock, max_keys=20)
    for n in range(10):
        await throttle.check(f"idle{n}@example.com", None)
        await throttle.record_success(f"idle{n}@example.com")
        await throttle.check(f"idle{n}@example.com", None)
        await throttle.abandon(f"idle{n}@example.com")
    for n in range(9):
        await throttle.check(f"guessed{n}@example.com", None)
        await throttle.record_failure(f"guessed{n}@example.com")
        await throttle.check(f"guessed{n}@example.com", None)
        await throttle.record_failure(f"guessed{n}@example.com")
    await throttle.check("newcomer@example.com", None)  # the table is full: prune
    for n in range(9):
        # Two failures are still counted: the third locks.
        await throttle.check(f"guessed{n}@example.com", None)
        assert await throttle.record_failure(f"guessed{n}@example.com")


@pytest.mark.anyio
async def test_full_credential_guard_keeps_recent_counts_and_refuses_no_one(
    clock: FakeClock,
) -> None:
    guard = CredentialGuard(max_failures=3, retention=1000, clock=clock, max_keys=10)
    await guard.check("session:stale")
    await guard.record_failure("session:stale")
    clock.advance(1001)  # past the longest life of any session: its count is moot
    for n in range(9):
        await guard.check(f"session:{n}")
        await guard.record_failure(f"session:{n}")
        clock.advance(1)
    await guard.check("session:new")  # the table is full: prune, never refuse a newcomer
    for n in range(1, 9):  # the recent counts survive (the least recent may go)
        await guard.check(f"session:{n}")
        await guard.record_failure(f"session:{n}")
        await guard.check(f"session:{n}")
        assert await guard.record_failure(f"session:{n}"), n


def test_password_change_cannot_renew_a_session_another_node_just_ended(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    node_a, node_b = make_client(), make_client()
    register(node_a)
    csrf = login(node_b)
    assert node_b.get("/auth/me").status_code == 200  # cached on B for up to a second
    access = token_login(node_a)["access_token"]
    assert node_a.post("/auth/logout-all", headers=bearer(access)).status_code == 204
    response = node_b.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf, "Origin": BASE_URL},
    )
    assert response.status_code == 401
    assert "set-cookie" not in response.headers  # no renewed session
    clock.advance(2)  # past B's one-second session cache
    assert node_b.get("/auth/me").status_code == 401
    node_a.cookies.clear()
    assert login(node_a)  # the password did not change

"""A stolen session must not become an unlimited password oracle."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, FakeClock, login, register


def _change(client: TestClient, csrf: str, current: str) -> int:
    response = client.post(
        "/auth/password",
        json={"current_password": current, "new_password": "a brand new password"},
        headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
    )
    return response.status_code


def test_wrong_current_passwords_lock_the_account_like_failed_logins(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    csrf = login(client)
    assert [_change(client, csrf, f"guess number {n}") for n in range(3)] == [401, 401, 401]
    assert _change(client, csrf, PASSWORD) == 429  # locked, even with the right password
    stranger = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert stranger.status_code == 429
    clock.advance(61)
    assert _change(client, csrf, PASSWORD) == 204

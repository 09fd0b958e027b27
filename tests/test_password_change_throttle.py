"""A stolen session must not become an unlimited password oracle, nor a way to lock
the owner out (OWASP: lockout as a weapon)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, bearer, login, register, token_login

NEW_PASSWORD = "a brand new password"


def _change(client: TestClient, csrf: str, current: str) -> int:
    response = client.post(
        "/auth/password",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
    )
    return response.status_code


def test_wrong_current_passwords_end_the_guessing_session_not_the_account(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client)
    csrf = login(client)
    assert [_change(client, csrf, f"guess number {n}") for n in range(3)] == [401, 401, 401]
    # The third wrong guess ended the session that made them.
    assert client.get("/auth/me").status_code == 401
    assert _change(client, csrf, PASSWORD) == 401
    # The account is not locked: the owner signs in and changes the password.
    client.cookies.clear()
    owner_csrf = login(client)
    assert _change(client, owner_csrf, PASSWORD) == 204


def test_wrong_current_passwords_end_the_guessing_token_family(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_max_failures="2")
    register(client)
    pair = token_login(client)
    auth = bearer(pair["access_token"])
    for n in range(2):
        response = client.post(
            "/auth/password",
            json={"current_password": f"guess number {n}", "new_password": NEW_PASSWORD},
            headers=auth,
        )
        assert response.status_code == 401
    assert client.get("/auth/me", headers=auth).status_code == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401


def test_account_lockout_by_others_does_not_refuse_the_owners_password_change(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(login_max_failures="3", login_lockout="300")
    register(client)
    csrf = login(client)
    attacker = TestClient(client.app, base_url=str(client.base_url), client=("192.0.2.66", 1))
    for n in range(3):
        guess = {"email": "ada@example.com", "password": f"attacker guess {n}"}
        assert attacker.post("/auth/login", json=guess).status_code == 401
    locked = attacker.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert locked.status_code == 429
    assert _change(client, csrf, PASSWORD) == 204

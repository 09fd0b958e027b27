"""Sign-ins with a second factor, from the attacker's side (DESIGN §3.3): the password
alone grants nothing, the pending step is single use, short-lived and bounded, and
wrong codes lock the account as wrong passwords do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pyotp
import pytest
from starlette.testclient import TestClient

from gatepass.mfa import TOTP_STEP_SECONDS
from tests.conftest import PASSWORD, FakeClock, bearer, login, register

EMAIL = "ada@example.com"
MakeClient = Callable[..., TestClient]


def code_at(secret: str, clock: FakeClock) -> str:
    return pyotp.TOTP(secret).at(clock())


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def enable_totp(client: TestClient, clock: FakeClock) -> tuple[str, list[str]]:
    """Sign in, set up and confirm TOTP, sign out; one step later (the confirming
    code is spent). Returns the secret and the recovery codes."""
    csrf = login(client)
    headers = {"X-CSRF-Token": csrf}
    secret = client.post("/auth/mfa/totp/setup", headers=headers).json()["secret"]
    confirmed = client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    client.post("/auth/logout", headers=headers)
    client.cookies.clear()
    clock.advance(TOTP_STEP_SECONDS)
    return secret, list(confirmed.json()["recovery_codes"])


def password_step(client: TestClient, kind: str = "web") -> Any:
    return client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD, "client": kind})


def mfa_token(client: TestClient, kind: str = "web") -> str:
    answer = password_step(client, kind)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["mfa_token"])


def verify(client: TestClient, token: str, method: str, code: str) -> Any:
    return client.post(
        "/auth/mfa/verify", json={"mfa_token": token, "method": method, "code": code}
    )


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    made = make_client()
    register(made)
    return made


@pytest.mark.parametrize("kind", ["web", "mobile", "api"])
def test_the_password_alone_grants_no_session_and_no_token(
    client: TestClient, clock: FakeClock, kind: str
) -> None:
    enable_totp(client, clock)
    answer = password_step(client, kind)
    assert answer.status_code == 200
    body = answer.json()
    assert body["mfa_required"] is True
    assert body["methods"] == ["totp", "recovery_code"]
    assert set(body) == {"mfa_required", "mfa_token", "methods"}
    assert "set-cookie" not in {k.lower() for k in answer.headers}
    assert client.get("/auth/me").status_code == 401


@pytest.mark.parametrize("kind", ["mobile", "api"])
def test_a_token_login_finishes_with_a_pair_whose_access_token_names_both_factors(
    client: TestClient, clock: FakeClock, kind: str
) -> None:
    secret, _ = enable_totp(client, clock)
    finished = verify(client, mfa_token(client, kind), "totp", code_at(secret, clock))
    assert finished.status_code == 200, finished.text
    pair = finished.json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] == int(clock())
    me = client.get("/auth/me", headers=bearer(pair["access_token"])).json()
    assert me["amr"] == ["pwd", "otp", "mfa"]
    rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    assert jwt.decode(rotated["access_token"], options={"verify_signature": False})["amr"] == [
        "pwd",
        "otp",
        "mfa",
    ]


def test_a_web_login_finishes_with_a_new_session(client: TestClient, clock: FakeClock) -> None:
    secret, _ = enable_totp(client, clock)
    finished = verify(client, mfa_token(client), "totp", code_at(secret, clock))
    assert finished.status_code == 200, finished.text
    assert finished.json()["csrf_token"]
    me = client.get("/auth/me").json()
    assert (me["method"], me["amr"]) == ("session", ["pwd", "otp", "mfa"])


def test_a_replayed_totp_code_is_refused(client: TestClient, clock: FakeClock) -> None:
    secret, _ = enable_totp(client, clock)
    code = code_at(secret, clock)
    assert verify(client, mfa_token(client, "api"), "totp", code).status_code == 200
    replay = verify(client, mfa_token(client, "api"), "totp", code)
    assert replay.status_code == 401


def test_a_used_recovery_code_is_refused(client: TestClient, clock: FakeClock) -> None:
    _, codes = enable_totp(client, clock)
    assert verify(client, mfa_token(client, "api"), "recovery_code", codes[0]).status_code == 200
    again = verify(client, mfa_token(client, "api"), "recovery_code", codes[0])
    assert again.status_code == 401
    assert client.get("/auth/mfa", headers=bearer(_pair_with(client, codes[1]))).json() == {
        "totp": True,
        "recovery_codes_left": 8,
        "passkeys": 0,
    }


def _pair_with(client: TestClient, recovery_code: str) -> str:
    finished = verify(client, mfa_token(client, "api"), "recovery_code", recovery_code)
    return str(finished.json()["access_token"])


def test_an_mfa_token_works_once(client: TestClient, clock: FakeClock) -> None:
    secret, _ = enable_totp(client, clock)
    token = mfa_token(client, "api")
    assert verify(client, token, "totp", code_at(secret, clock)).status_code == 200
    clock.advance(TOTP_STEP_SECONDS)
    assert verify(client, token, "totp", code_at(secret, clock)).status_code == 401


def test_an_expired_mfa_token_is_refused(client: TestClient, clock: FakeClock) -> None:
    secret, _ = enable_totp(client, clock)
    token = mfa_token(client, "api")
    clock.advance(301)  # GATEPASS_MFA_TOKEN_TTL defaults to 300
    assert verify(client, token, "totp", code_at(secret, clock)).status_code == 401


def test_five_wrong_codes_kill_the_mfa_token(make_client: MakeClient, clock: FakeClock) -> None:
    client = make_client(login_max_failures="50")  # the lockout is not what stops it here
    register(client)
    secret, _ = enable_totp(client, clock)
    token = mfa_token(client, "api")
    for _ in range(5):
        assert verify(client, token, "totp", wrong(code_at(secret, clock))).status_code == 401
    assert verify(client, token, "totp", code_at(secret, clock)).status_code == 401


def test_wrong_codes_lock_the_account_as_failed_passwords_do(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="5")
    register(client)
    secret, _ = enable_totp(client, clock)
    for _ in range(5):
        token = mfa_token(client, "api")
        assert verify(client, token, "totp", wrong(code_at(secret, clock))).status_code == 401
    locked = password_step(client, "api")
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers


def test_a_locked_account_refuses_the_second_step_with_429(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="5")
    register(client)
    secret, _ = enable_totp(client, clock)
    token = mfa_token(client, "api")
    for _ in range(4):
        verify(client, mfa_token(client, "api"), "totp", wrong(code_at(secret, clock)))
    verify(client, mfa_token(client, "api"), "totp", wrong(code_at(secret, clock)))
    refused = verify(client, token, "totp", code_at(secret, clock))
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers


def test_an_mfa_token_is_no_other_credential(client: TestClient, clock: FakeClock) -> None:
    enable_totp(client, clock)
    token = mfa_token(client, "api")
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401
    client.cookies.set("__Host-gatepass_session", token)
    assert client.get("/auth/me").status_code == 401
    client.cookies.clear()
    assert client.post("/auth/refresh", json={"refresh_token": token}).status_code == 401


def test_a_password_change_between_the_steps_kills_the_pending_sign_in(
    client: TestClient, clock: FakeClock
) -> None:
    secret, _ = enable_totp(client, clock)
    token = mfa_token(client, "api")
    pair = verify(client, mfa_token(client, "api"), "totp", code_at(secret, clock)).json()
    changed = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "a different passphrase"},
        headers=bearer(pair["access_token"]),
    )
    assert changed.status_code == 204
    clock.advance(TOTP_STEP_SECONDS)
    assert verify(client, token, "totp", code_at(secret, clock)).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mfa_token": "x", "method": "sms", "code": "1"},
        {"mfa_token": 5, "method": "totp", "code": "1"},
        {"mfa_token": "x", "method": "totp", "code": ["1"]},
        {"mfa_token": "x", "method": "webauthn", "credential": "nope"},
    ],
)
def test_a_malformed_second_step_is_422(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post("/auth/mfa/verify", json=body).status_code == 422


def test_a_dead_token_of_any_shape_is_401(client: TestClient) -> None:
    for token in ("", "x", "é" * 10, "A" * 5000):
        assert verify(client, token, "totp", "123456").status_code == 401


# freshness and reauthentication --------------------------------------------------


def test_a_stale_sign_in_cannot_add_a_factor_until_it_reauthenticates(
    client: TestClient, clock: FakeClock
) -> None:
    csrf = login(client)
    cookie = client.cookies.get("__Host-gatepass_session")
    clock.advance(301)
    headers = {"X-CSRF-Token": csrf}
    stale = client.post("/auth/mfa/totp/setup", headers=headers)
    assert stale.status_code == 403
    assert stale.json()["code"] == "reauthentication_required"
    wrong_password = client.post(
        "/auth/reauthenticate", json={"current_password": "not it"}, headers=headers
    )
    assert wrong_password.status_code == 401
    done = client.post("/auth/reauthenticate", json={"current_password": PASSWORD}, headers=headers)
    assert done.status_code == 204
    assert client.cookies.get("__Host-gatepass_session") == cookie  # the session ID is kept
    assert client.get("/auth/me").json()["auth_time"] == int(clock())
    assert client.post("/auth/mfa/totp/setup", headers=headers).status_code == 200


def test_a_bearer_client_reauthenticates_its_family(client: TestClient, clock: FakeClock) -> None:
    pair = client.post(
        "/auth/login", json={"email": EMAIL, "password": PASSWORD, "client": "api"}
    ).json()
    clock.advance(301)
    headers = bearer(pair["access_token"])
    assert client.post("/auth/mfa/totp/setup", headers=headers).status_code == 403
    done = client.post("/auth/reauthenticate", json={"current_password": PASSWORD}, headers=headers)
    assert done.status_code == 204
    # The family is fresh again: the token the client holds passes, and so do new ones.
    assert client.post("/auth/mfa/totp/setup", headers=headers).status_code == 200
    rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    claims = jwt.decode(rotated["access_token"], options={"verify_signature": False})
    assert claims["auth_time"] == int(clock())


def test_reauthentication_with_a_totp_code(client: TestClient, clock: FakeClock) -> None:
    secret, _ = enable_totp(client, clock)
    pair = verify(client, mfa_token(client, "api"), "totp", code_at(secret, clock)).json()
    clock.advance(301)
    headers = bearer(pair["access_token"])
    wrong_code = client.post(
        "/auth/reauthenticate",
        json={"method": "totp", "code": wrong(code_at(secret, clock))},
        headers=headers,
    )
    assert wrong_code.status_code == 401
    done = client.post(
        "/auth/reauthenticate",
        json={"method": "totp", "code": code_at(secret, clock)},
        headers=headers,
    )
    assert done.status_code == 204
    assert client.post("/auth/mfa/recovery-codes", headers=headers).status_code == 200


def test_wrong_reauthentication_codes_end_the_session_and_count_toward_the_lockout(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="5")
    register(client)
    secret, _ = enable_totp(client, clock)
    pair = verify(client, mfa_token(client, "api"), "totp", code_at(secret, clock)).json()
    headers = bearer(pair["access_token"])
    clock.advance(301)
    bad = {"method": "totp", "code": wrong(code_at(secret, clock))}
    for _ in range(5):
        assert client.post("/auth/reauthenticate", json=bad, headers=headers).status_code == 401
    # The family that guessed is over, and the account is locked for clients that
    # never signed in there (a device that did keeps its own count).
    assert client.get("/auth/me", headers=headers).status_code == 401
    client.cookies.clear()
    assert password_step(client, "api").status_code == 429


def test_a_stolen_fresh_session_cannot_guess_its_way_to_removing_totp(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(login_max_failures="5")
    register(client)
    secret, _ = enable_totp(client, clock)
    pair = verify(client, mfa_token(client, "api"), "totp", code_at(secret, clock)).json()
    headers = bearer(pair["access_token"])
    bad = {"code": wrong(code_at(secret, clock))}
    for _ in range(5):
        assert client.request(
            "DELETE", "/auth/mfa/totp", json=bad, headers=headers
        ).status_code in (
            401,
            422,
        )
    assert client.get("/auth/me", headers=headers).status_code == 401

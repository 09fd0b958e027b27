"""Passkeys as a way to sign in (DESIGN §3.3): passwordless for every client type,
and as the second factor after a password; from the attacker's side."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, bearer
from tests.test_passkey_api import add_passkey, web_user
from tests.webauthn_authenticator import SoftAuthenticator

EMAIL = "ada@example.com"


def passkey_user(client: TestClient) -> SoftAuthenticator:
    """Ada, registered with one passkey; the jar emptied."""
    device, _ = add_passkey(client, web_user(client))
    client.cookies.clear()
    return device


def passwordless(client: TestClient, device: SoftAuthenticator, kind: str, **get: Any) -> Any:
    options = client.post("/auth/passkeys/login/options", headers={"Origin": ORIGIN})
    assert options.status_code == 200, options.text
    credential = device.get(options.text, **get)
    return client.post("/auth/passkeys/login", json={"credential": credential, "client": kind})


@pytest.fixture
def client(make_client: Any) -> TestClient:
    made: TestClient = make_client()
    return made


@pytest.mark.parametrize("kind", ["web", "mobile", "api"])
def test_a_user_verified_passkey_signs_in_without_a_password(client: TestClient, kind: str) -> None:
    device = passkey_user(client)
    answer = passwordless(client, device, kind)
    assert answer.status_code == 200, answer.text
    if kind == "web":
        me = client.get("/auth/me").json()
    else:
        access = answer.json()["access_token"]
        assert jwt.decode(access, options={"verify_signature": False})["amr"] == [
            "hwk",
            "user",
            "mfa",
        ]
        me = client.get("/auth/me", headers=bearer(access)).json()
    assert me["email"] == EMAIL
    assert me["amr"] == ["hwk", "user", "mfa"]


def test_a_passkey_without_user_verification_is_no_passwordless_sign_in(
    client: TestClient,
) -> None:
    device = passkey_user(client)
    assert passwordless(client, device, "api", user_verified=False).status_code == 401


def test_an_assertion_is_refused_for_another_challenge_origin_or_rp_id(
    client: TestClient,
) -> None:
    device = passkey_user(client)
    for forged in (
        {"challenge": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
    ):
        assert passwordless(client, device, "api", **forged).status_code == 401


def test_a_challenge_is_single_use(client: TestClient) -> None:
    device = passkey_user(client)
    options = client.post("/auth/passkeys/login/options", headers={"Origin": ORIGIN}).text
    first = device.get(options)
    second = device.get(options)
    assert client.post("/auth/passkeys/login", json={"credential": first}).status_code == 200
    client.cookies.clear()
    assert client.post("/auth/passkeys/login", json={"credential": second}).status_code == 401


def test_a_lowered_signature_counter_is_refused(client: TestClient) -> None:
    device = passkey_user(client)
    assert passwordless(client, device, "api").status_code == 200
    cloned = passwordless(client, device, "api", counter=1)
    assert cloned.status_code == 401


def test_a_passkey_is_the_second_factor_after_a_password(client: TestClient) -> None:
    device = passkey_user(client)
    step = client.post(
        "/auth/login", json={"email": EMAIL, "password": PASSWORD, "client": "mobile"}
    ).json()
    assert step["mfa_required"] is True
    assert step["methods"] == ["webauthn"]
    options = client.post("/auth/mfa/webauthn/options", json={"mfa_token": step["mfa_token"]})
    assert options.status_code == 200
    assert options.json()["allowCredentials"]  # bound to this user's passkeys
    finished = client.post(
        "/auth/mfa/verify",
        json={
            "mfa_token": step["mfa_token"],
            "method": "webauthn",
            "credential": device.get(options.text),
        },
    )
    assert finished.status_code == 200, finished.text
    claims = jwt.decode(finished.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "hwk", "user", "mfa"]


def test_a_passwordless_assertion_cannot_finish_a_pending_sign_in(client: TestClient) -> None:
    device = passkey_user(client)
    step = client.post(
        "/auth/login", json={"email": EMAIL, "password": PASSWORD, "client": "api"}
    ).json()
    # A challenge for a passwordless sign-in is not one for this user's second step.
    login_options = client.post("/auth/passkeys/login/options", headers={"Origin": ORIGIN}).text
    finished = client.post(
        "/auth/mfa/verify",
        json={
            "mfa_token": step["mfa_token"],
            "method": "webauthn",
            "credential": device.get(login_options),
        },
    )
    assert finished.status_code == 401


def test_passwordless_options_are_rate_limited(make_client: Any) -> None:
    client: TestClient = make_client(login_ip_limit="3")
    for _ in range(3):
        assert client.post("/auth/passkeys/login/options").status_code == 200
    refused = client.post("/auth/passkeys/login/options")
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers


def test_a_passkey_reauthenticates_a_stale_session(client: TestClient, clock: Any) -> None:
    device = passkey_user(client)
    assert passwordless(client, device, "web").status_code == 200
    csrf = client.get("/auth/csrf").json()["csrf_token"]
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    clock.advance(301)
    assert client.post("/auth/passkeys/register/options", headers=headers).status_code == 403
    options = client.post("/auth/reauthenticate/options", headers=headers)
    assert options.status_code == 200, options.text
    done = client.post(
        "/auth/reauthenticate", json={"credential": device.get(options.text)}, headers=headers
    )
    assert done.status_code == 204
    assert client.post("/auth/passkeys/register/options", headers=headers).status_code == 200


def test_a_passwordless_sign_in_of_an_unverified_address_is_refused_when_mandatory(
    make_client: Any,
) -> None:
    client: TestClient = make_client(email_verification="optional")
    device = passkey_user(client)
    strict: TestClient = make_client(email_verification="mandatory")
    answer = passwordless(strict, device, "api")
    assert answer.status_code == 403
    assert answer.json()["code"] == "email_not_verified"

"""HTTP routes of the caller's passkeys (/auth/passkeys*): a real ceremony with
the software authenticator, list, rename, delete; CSRF, other users' IDs and
malformed bodies from the attacker's side."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, FakeClock, bearer, login, register, token_login
from tests.webauthn_authenticator import SoftAuthenticator

MakeClient = Callable[..., TestClient]


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def web_user(client: TestClient, email: str = "ada@example.com") -> dict[str, str]:
    """Register and sign in ``email`` in the client's jar; the headers of its
    state-changing requests."""
    register(client, email)
    client.cookies.clear()
    return {"X-CSRF-Token": login(client, email), "Origin": ORIGIN}


def add_passkey(
    client: TestClient, headers: dict[str, str], name: str | None = "Laptop"
) -> tuple[SoftAuthenticator, dict[str, Any]]:
    options = client.post("/auth/passkeys/register/options", headers=headers)
    assert options.status_code == 200, options.text
    device = SoftAuthenticator(origin=ORIGIN)
    body: dict[str, Any] = {"credential": device.create(options.text)}
    if name is not None:
        body["name"] = name
    created = client.post("/auth/passkeys/register", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return device, created.json()


def test_a_passkey_is_registered_listed_renamed_and_deleted(client: TestClient) -> None:
    headers = web_user(client)
    _, created = add_passkey(client, headers)
    assert set(created) == {"id", "name", "created_at"}
    assert created["name"] == "Laptop"
    assert created["created_at"].endswith("Z")

    listed = client.get("/auth/passkeys")
    assert listed.status_code == 200
    assert listed.json() == [{**created, "last_used_at": None}]

    renamed = client.patch(
        f"/auth/passkeys/{created['id']}", json={"name": "Phone"}, headers=headers
    )
    assert renamed.status_code == 200
    assert renamed.json() == {**created, "name": "Phone", "last_used_at": None}

    deleted = client.delete(f"/auth/passkeys/{created['id']}", headers=headers)
    assert deleted.status_code == 204
    assert client.get("/auth/passkeys").json() == []
    metrics = client.get("/metrics").text
    assert 'gatepass_factor_events_total{event="added",factor="webauthn"} 1.0' in metrics
    assert 'gatepass_factor_events_total{event="removed",factor="webauthn"} 1.0' in metrics


def test_creation_options_are_the_whole_json_body(client: TestClient) -> None:
    headers = web_user(client)
    response = client.post("/auth/passkeys/register/options", headers=headers)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    options = json.loads(response.text)
    assert options["rp"] == {"name": "testserver", "id": "testserver"}
    assert options["user"]["name"] == "ada@example.com"
    assert set(options) >= {"challenge", "pubKeyCredParams", "authenticatorSelection"}


def test_a_token_client_manages_passkeys_without_csrf(client: TestClient) -> None:
    register(client)
    client.cookies.clear()
    pair = token_login(client)
    _, created = add_passkey(client, bearer(pair["access_token"]))
    listed = client.get("/auth/passkeys", headers=bearer(pair["access_token"]))
    assert [p["id"] for p in listed.json()] == [created["id"]]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/auth/passkeys/register/options", None),
        ("POST", "/auth/passkeys/register", {"credential": {}, "name": "x"}),
        ("PATCH", "/auth/passkeys/some-id", {"name": "x"}),
        ("DELETE", "/auth/passkeys/some-id", None),
    ],
)
def test_a_cross_site_request_without_the_csrf_token_is_refused(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    headers = web_user(client)
    _, created = add_passkey(client, headers)
    path = path.replace("some-id", created["id"])
    forged = client.request(method, path, json=body, headers={"Origin": ORIGIN})
    assert forged.status_code == 403
    wrong = client.request(
        method, path, json=body, headers={"Origin": ORIGIN, "X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    foreign = client.request(
        method,
        path,
        json=body,
        headers={"Origin": "https://evil.example", "X-CSRF-Token": headers["X-CSRF-Token"]},
    )
    assert foreign.status_code == 403
    assert [p["name"] for p in client.get("/auth/passkeys").json()] == ["Laptop"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/passkeys/register/options"),
        ("POST", "/auth/passkeys/register"),
        ("GET", "/auth/passkeys"),
        ("PATCH", "/auth/passkeys/some-id"),
        ("DELETE", "/auth/passkeys/some-id"),
    ],
)
def test_an_anonymous_caller_is_refused(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_another_users_passkey_is_not_found_for_rename_or_delete(client: TestClient) -> None:
    ada = web_user(client)
    _, adas = add_passkey(client, ada)
    ada_cookies = dict(client.cookies)
    client.cookies.clear()
    eve = web_user(client, "eve@example.com")
    for response in (
        client.patch(f"/auth/passkeys/{adas['id']}", json={"name": "Eve's"}, headers=eve),
        client.delete(f"/auth/passkeys/{adas['id']}", headers=eve),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/auth/passkeys").json() == []
    # Ada's own session (a new password sign-in would need her passkey now).
    client.cookies.clear()
    client.cookies.update(ada_cookies)
    assert [p["name"] for p in client.get("/auth/passkeys").json()] == ["Laptop"]


@pytest.mark.parametrize("passkey_id", ["nope", "%00", "x" * 500, "%F0%9F%94%91", "..%2F"])
def test_a_malformed_or_unknown_id_is_not_found(client: TestClient, passkey_id: str) -> None:
    headers = web_user(client)
    add_passkey(client, headers)
    assert client.delete(f"/auth/passkeys/{passkey_id}", headers=headers).status_code == 404
    renamed = client.patch(f"/auth/passkeys/{passkey_id}", json={"name": "x"}, headers=headers)
    assert renamed.status_code == 404


def test_a_registration_with_a_bad_attestation_is_400(client: TestClient) -> None:
    headers = web_user(client)
    options = client.post("/auth/passkeys/register/options", headers=headers).text
    credential = SoftAuthenticator(origin="https://evil.example").create(options)
    response = client.post(
        "/auth/passkeys/register", json={"credential": credential, "name": "x"}, headers=headers
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/auth/passkeys").json() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"credential": "a string"},
        {"credential": [1, 2]},
        {"credential": {}, "name": 5},
    ],
)
def test_a_malformed_registration_body_is_422(client: TestClient, body: dict[str, Any]) -> None:
    headers = web_user(client)
    response = client.post("/auth/passkeys/register", json=body, headers=headers)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "credential",
    [{}, {"id": "x", "rawId": "x", "response": {}, "type": "public-key"}, {"response": None}],
)
def test_a_malformed_credential_is_400(client: TestClient, credential: dict[str, Any]) -> None:
    headers = web_user(client)
    client.post("/auth/passkeys/register/options", headers=headers)
    response = client.post(
        "/auth/passkeys/register", json={"credential": credential}, headers=headers
    )
    assert response.status_code == 400


def test_a_passkey_without_a_name_gets_one_and_a_bad_new_name_is_422(
    client: TestClient,
) -> None:
    headers = web_user(client)
    _, created = add_passkey(client, headers, name=None)
    assert created["name"].startswith("Passkey ")
    response = client.patch(
        f"/auth/passkeys/{created['id']}", json={"name": "x" * 65}, headers=headers
    )
    assert response.status_code == 422
    missing = client.patch(f"/auth/passkeys/{created['id']}", json={}, headers=headers)
    assert missing.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/auth/passkeys/register/options", None),
        ("POST", "/auth/passkeys/register", {"credential": {}, "name": "x"}),
        ("PATCH", "/auth/passkeys/some-id", {"name": "x"}),
        ("DELETE", "/auth/passkeys/some-id", None),
    ],
)
def test_a_stale_sign_in_cannot_change_passkeys(
    client: TestClient, clock: FakeClock, method: str, path: str, body: dict[str, Any] | None
) -> None:
    headers = web_user(client)
    _, created = add_passkey(client, headers)
    # Still signed in (the session is in use), but the sign-in is older than 300 s.
    for _ in range(3):
        clock.advance(120)
        assert client.get("/auth/passkeys").status_code == 200
    path = path.replace("some-id", created["id"])
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "reauthentication_required"
    assert [p["name"] for p in client.get("/auth/passkeys").json()] == ["Laptop"]

"""Weak passwords are refused where a password is set (register and password change),
through the HTTP API, as NIST SP 800-63B asks; passwords set before still sign in."""

from __future__ import annotations

import httpx2
import pytest
from starlette.testclient import TestClient

from gatepass.core import Gatepass
from gatepass.passwords import PasswordHasher
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD, login, register

#: On the bundled list, in several spellings.
COMMON = [
    "password",
    "12345678",
    "iloveyou",
    "Password1",
    "QWERTYUIOP",
    # Full-width p, and mathematical Fraktur letters: NFKC makes both "password".
    "\uff50assword",
    "\U0001d52d\U0001d51e\U0001d530\U0001d530\U0001d534\U0001d52c\U0001d52f\U0001d521",
]
WHITE_SPACE = [" " * 8, "\t" * 12, "\u3000" * 8, " \n" * 5]
#: Four typed characters that NFKC expands to eight ("ffffffff").
LIGATURES = "\ufb00" * 4


def register_response(client: TestClient, password: str) -> httpx2.Response:
    return client.post("/auth/register", json={"email": "ada@example.com", "password": password})


def change_response(client: TestClient, csrf: str, new_password: str) -> httpx2.Response:
    return client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers={"X-CSRF-Token": csrf},
    )


def assert_refused(response: httpx2.Response, rule: str, password: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert rule in body["detail"]
    if password.strip() and password.strip() != "password":
        assert password.strip() not in response.text


def signed_in(client: TestClient) -> str:
    register(client)
    return login(client)


def login_status(client: TestClient, password: str, email: str = "ada@example.com") -> int:
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": email, "password": password})
    client.cookies.clear()
    return response.status_code


# --- register -------------------------------------------------------------------------


@pytest.mark.parametrize("password", COMMON)
def test_common_password_is_refused(client: TestClient, password: str) -> None:
    assert_refused(register_response(client, password), "commonly used", password)
    assert login_status(client, password) == 401


@pytest.mark.parametrize("password", WHITE_SPACE)
def test_whitespace_only_password_is_refused(client: TestClient, password: str) -> None:
    assert_refused(register_response(client, password), "white space", password)


def test_ligature_password_counts_typed_characters(client: TestClient) -> None:
    assert_refused(register_response(client, LIGATURES), "8 to 1024 characters", LIGATURES)
    # Eight typed ligatures are eight characters: accepted, and NFKC-equal to ASCII.
    assert register_response(client, "\ufb00" * 8).status_code == 201
    assert login_status(client, "ff" * 8) == 200


def test_decomposed_accents_count_as_typed(client: TestClient) -> None:
    # Eight typed code points that NFKC composes into four characters.
    assert register_response(client, "e\u0301" * 4).status_code == 201
    assert login_status(client, "\u00e9" * 4) == 200


@pytest.mark.parametrize("password", ["", "Zq9#kP2", "Zq9#" * 256 + "!"])
def test_password_outside_8_to_1024_typed_characters_is_refused(
    client: TestClient, password: str
) -> None:
    assert_refused(register_response(client, password), "8 to 1024 characters", password)


def test_password_of_1024_typed_characters_is_accepted(client: TestClient) -> None:
    assert register_response(client, "Zq9#" * 256).status_code == 201


# --- password change ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_password", "rule"),
    [
        ("password", "commonly used"),
        ("iloveyou", "commonly used"),
        (" " * 10, "white space"),
        (LIGATURES, "8 to 1024 characters"),
    ],
)
def test_password_change_to_a_weak_password_is_refused(
    client: TestClient, new_password: str, rule: str
) -> None:
    csrf = signed_in(client)
    assert_refused(change_response(client, csrf, new_password), rule, new_password)
    assert login_status(client, PASSWORD) == 200
    assert login_status(client, new_password) == 401


def test_password_change_to_a_strong_password_is_accepted(client: TestClient) -> None:
    csrf = signed_in(client)
    assert change_response(client, csrf, "a brand new passphrase").status_code == 204
    assert login_status(client, "a brand new passphrase") == 200


# --- passwords set before the policy --------------------------------------------------


def test_account_with_a_password_set_before_the_policy_still_signs_in(
    client: TestClient,
) -> None:
    # Refusing an existing common password at sign-in would lock its owner out;
    # the policy applies when a password is set.
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    legacy_hash = PasswordHasher(**FAST_HASHER_PARAMS).hash_sync("password")
    portal = client.portal
    assert portal is not None
    portal.call(gp.store.create_user, "old@example.com", legacy_hash, ("user",), 0.0)
    assert login_status(client, "password", "old@example.com") == 200
    assert login_status(client, "not it at all", "old@example.com") == 401

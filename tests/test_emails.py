"""One mailbox, one account: addresses are validated and compared in one normal form
(local part NFKC + case folded, domain as its IDNA A-label), attacked through the API."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest
from starlette.testclient import TestClient

from gatepass.accounts import normalise_email as normalise_email_from_accounts
from gatepass.emails import MAX_EMAIL_OCTETS, MAX_LOCAL_PART_OCTETS, InvalidEmail, normalise_email
from tests.conftest import PASSWORD, register

MakeClient = Callable[..., TestClient]

#: 64 + 1 + 189 = 254 octets: the longest address there is.
LONGEST = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"


def register_response(client: TestClient, email: str) -> httpx2.Response:
    return client.post("/auth/register", json={"email": email, "password": PASSWORD})


def login_response(client: TestClient, email: str, password: str = PASSWORD) -> httpx2.Response:
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": email, "password": password})
    client.cookies.clear()
    return response


def assert_refused_without_echo(response: httpx2.Response, email: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert "email" in body["detail"]
    stripped = email.strip()
    for fragment in (stripped, stripped.split("@")[0][:20], stripped.split("@")[-1][:20]):
        if fragment:
            assert fragment not in response.text


# --- equivalent spellings are one account (409) ---------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # A full-width domain is the ASCII one under UTS #46.
        ("victim@example.com", "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"),
        # U-label and A-label of one internationalised domain.
        ("victim@b\u00fccher.de", "victim@xn--bcher-kva.de"),
        ("victim@xn--bcher-kva.de", "victim@B\u00dcCHER.de"),
        # Upper and lower case, in the local part and the domain.
        ("victim@example.com", "VICTIM@Example.COM"),
        # Compatibility characters in the local part: full-width letters, a ligature,
        # and a sharp s that case-folds to "ss".
        ("victim@example.com", "\uff56\uff49\uff43\uff54\uff49\uff4d@example.com"),
        ("office@example.com", "o\ufb03ce@example.com"),
        ("strasse@example.com", "stra\u00dfe@example.com"),
        # Canonically equivalent accents (precomposed and combining).
        ("jos\u00e9@example.com", "jose\u0301@example.com"),
    ],
)
def test_equivalent_spelling_of_a_registered_address_is_refused(
    client: TestClient, first: str, second: str
) -> None:
    register(client, first)
    duplicate = register_response(client, second)
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.headers["content-type"] == "application/problem+json"


def test_registered_address_is_stored_in_its_normal_form(client: TestClient) -> None:
    body = register(client, "Victim@B\u00fccher.DE")
    assert body["email"] == "victim@xn--bcher-kva.de"


def test_every_spelling_signs_in_to_the_one_account(client: TestClient) -> None:
    user = register(client, "victim@b\u00fccher.de")
    for spelling in (
        "victim@xn--bcher-kva.de",
        "VICTIM@B\u00dcCHER.DE",
        "\uff56ictim@b\u00fccher.de",
    ):
        response = login_response(client, spelling)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == user["id"]


@pytest.mark.parametrize(
    "spelling",
    [
        "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        "\uff56\uff49\uff43\uff54\uff49\uff4d@example.com",
        "VICTIM@EXAMPLE.COM",
    ],
)
def test_locked_account_is_locked_under_a_full_width_spelling(
    make_client: MakeClient, spelling: str
) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client, "victim@example.com")
    for _ in range(3):
        assert login_response(client, "victim@example.com", "wrong password").status_code == 401
    # The attacker's other spelling of the address hits the same lockout key.
    assert login_response(client, spelling).status_code == 429
    assert login_response(client, "victim@example.com").status_code == 429


def test_locked_account_is_locked_under_its_u_label_spelling(make_client: MakeClient) -> None:
    client = make_client(login_max_failures="3", login_lockout="60")
    register(client, "victim@xn--bcher-kva.de")
    for _ in range(3):
        assert login_response(client, "victim@b\u00fccher.de", "wrong password").status_code == 401
    assert login_response(client, "victim@xn--bcher-kva.de").status_code == 429
    assert login_response(client, "victim@B\u00dcCHER.de").status_code == 429


# --- invalid addresses are 422, without the address in the answer ---------------------


@pytest.mark.parametrize(
    "email",
    [
        # 65 octets before the @.
        "v" * 65 + "@example.com",
        # 33 characters, 66 octets of UTF-8 that NFKC does not shrink.
        "\u00e9" * 33 + "@example.com",
        # A lone combining mark as the local part, or leading it.
        "\u0301@example.com",
        "\u0301victim@example.com",
        # Control characters.
        "vic\x00tim@example.com",
        "vic\x07tim@example.com",
        "victim\r\n@example.com",
        "victim@exa\x1bmple.com",
        # Bidi override and zero-width space.
        "vic\u202etim@example.com",
        "vic\u200btim@example.com",
        # 255 octets in all.
        "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com",
        # A full-width at sign becomes a second "@" under NFKC.
        "victim\uff20evil@example.com",
        # An A-label that is not valid IDNA.
        "victim@xn--zz.com",
    ],
)
def test_invalid_address_is_refused_naming_the_field_not_the_value(
    client: TestClient, email: str
) -> None:
    assert_refused_without_echo(register_response(client, email), email)


def test_over_long_local_part_is_refused_with_the_rule() -> None:
    with pytest.raises(InvalidEmail, match="at most 64 octets"):
        normalise_email("v" * (MAX_LOCAL_PART_OCTETS + 1) + "@example.com")


def test_over_long_address_is_refused_with_the_rule() -> None:
    with pytest.raises(InvalidEmail, match="at most 254 octets"):
        normalise_email(LONGEST.replace("@", "@e."))


def test_longest_address_is_accepted(client: TestClient) -> None:
    assert len(LONGEST.encode()) == MAX_EMAIL_OCTETS
    assert register(client, LONGEST)["email"] == LONGEST


def test_local_part_of_64_octets_after_folding_is_accepted() -> None:
    # 64 full-width letters are 192 octets as typed, 64 once NFKC makes them ASCII.
    assert normalise_email("\uff56" * 64 + "@example.com") == "v" * 64 + "@example.com"


# --- the function itself --------------------------------------------------------------


def test_normal_form_is_stable() -> None:
    for raw in ("Victim@B\u00fccher.DE", "o\ufb03ce@example.com", "\u1e9e@example.com"):
        normal = normalise_email(raw)
        assert normalise_email(normal) == normal


def test_invalid_email_is_a_value_error_without_the_address() -> None:
    with pytest.raises(ValueError, match="email") as info:
        normalise_email("secret-name\x00@example.com")
    assert isinstance(info.value, InvalidEmail)
    assert "secret-name" not in str(info.value)
    assert "secret-name" not in repr(info.value)


def test_accounts_keeps_exporting_the_normaliser() -> None:
    assert normalise_email_from_accounts is normalise_email

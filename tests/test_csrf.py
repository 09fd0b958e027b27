"""Tests of gatepass.csrf: the Origin check and the synchronizer token check, and which
methods and header the server applies them to."""

from __future__ import annotations

import secrets

import pytest
from starlette.testclient import TestClient

from gatepass.config import normalise_origin
from gatepass.csrf import check_csrf_token, check_origin
from gatepass.errors import CSRFFailed
from tests.conftest import ORIGIN, login, register

TRUSTED = frozenset({normalise_origin(ORIGIN), normalise_origin("https://app.example:8443")})
TOKEN = secrets.token_urlsafe(32)


# Origin --------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        ORIGIN,
        "https://testserver:443",
        "HTTPS://TESTSERVER",
        "https://TestServer",
        "https://testserver/",
        "https://app.example:8443",
    ],
)
def test_trusted_origin_accepted(origin: str) -> None:
    check_origin(origin, TRUSTED)


def test_absent_origin_accepted() -> None:
    check_origin(None, TRUSTED)


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "NULL",
        "",
        " ",
        "https://evil.com",
        "https://testserver.evil.com",
        "https://evil-testserver",
        "https://eviltestserver",
        "https://testserver-evil.com",
        "https://testserver.",
        "https://sub.testserver",
        "https://testserver@evil.com",
        "https://evil.com@testserver",
        "https://testserver:x@evil.com",
        "https://testserver%2eevil.com",
        "https://testserver\x00.evil.com",
        "https://t\u0435stserver",  # Cyrillic e
        "https://\uff54estserver",  # full-width t
        "https://testserver/evil",
        "https://testserver?x=1",
        "https://app.example",  # trusted only on port 8443
    ],
)
def test_foreign_or_look_alike_origin_refused(origin: str) -> None:
    with pytest.raises(CSRFFailed):
        check_origin(origin, TRUSTED)


@pytest.mark.parametrize(
    "origin",
    [
        "http://testserver",
        "ws://testserver",
        "https://testserver:8443",
        "https://testserver:80",
        "http://testserver:443",
        "https://app.example:443",
    ],
)
def test_origin_with_other_scheme_or_port_refused(origin: str) -> None:
    with pytest.raises(CSRFFailed):
        check_origin(origin, TRUSTED)


@pytest.mark.parametrize(
    "origin",
    [
        "https://testserver:99999",
        "https://testserver:port",
        "https://[::1",
        "https://[not-ipv6]",
        "https://\ud800",
        "\udcff",
        "https://testserver\u2100evil",  # NFKC changes the netloc: urlsplit refuses it
        "x" * 10_000,
    ],
)
def test_malformed_origin_raises_only_csrf_failed(origin: str) -> None:
    with pytest.raises(CSRFFailed):
        check_origin(origin, TRUSTED)


def test_no_origin_is_trusted_when_list_empty() -> None:
    with pytest.raises(CSRFFailed):
        check_origin(ORIGIN, frozenset())


# token ---------------------------------------------------------------------


def test_matching_token_accepted() -> None:
    check_csrf_token(TOKEN, str(TOKEN))


@pytest.mark.parametrize("presented", [None, ""])
def test_missing_token_refused(presented: str | None) -> None:
    with pytest.raises(CSRFFailed):
        check_csrf_token(TOKEN, presented)


@pytest.mark.parametrize(
    "presented",
    [
        "wrong",
        TOKEN[:-1],
        TOKEN + "A",
        TOKEN.upper() if TOKEN.upper() != TOKEN else TOKEN.lower(),
        f" {TOKEN}",
        TOKEN[::-1],
    ],
)
def test_wrong_token_refused(presented: str) -> None:
    with pytest.raises(CSRFFailed):
        check_csrf_token(TOKEN, presented)


def test_other_sessions_token_refused() -> None:
    other_session_token = secrets.token_urlsafe(32)
    with pytest.raises(CSRFFailed):
        check_csrf_token(TOKEN, other_session_token)


@pytest.mark.parametrize(
    "presented",
    [
        "\u00e9" * 43,
        "\U0001f600" * 43,
        "\ud800",
        "\udfff" + TOKEN,
        TOKEN + "\x00",
        "\u202e" + TOKEN,
        "\uff41" * 43,
        "x" * 1_000_000,
    ],
)
def test_non_ascii_or_odd_token_raises_only_csrf_failed(presented: str) -> None:
    with pytest.raises(CSRFFailed):
        check_csrf_token(TOKEN, presented)


def test_csrf_failure_messages_do_not_echo_the_token() -> None:
    with pytest.raises(CSRFFailed) as info:
        check_csrf_token(TOKEN, "attacker-sent-value")
    assert TOKEN not in str(info.value)
    assert "attacker-sent-value" not in str(info.value)


# which requests the server checks ---------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_safe_method_needs_no_csrf_token_even_from_a_foreign_origin(
    client: TestClient, method: str
) -> None:
    register(client)
    login(client)  # the session cookie is in the client's jar
    response = client.request(method, "/auth/me", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "passed"),
    [("POST", "/auth/logout", 204), ("DELETE", "/auth/sessions/no-such-handle", 404)],
)
def test_unsafe_method_needs_the_token_in_the_x_csrf_token_header(
    client: TestClient, method: str, url: str, passed: int
) -> None:
    register(client)
    token = login(client)
    for refused in ({}, {"X-CSRF": token}, {"CSRF-Token": token}, {"X-CSRF-Token": "wrong"}):
        response = client.request(method, url, headers=refused)
        assert response.status_code == 403, refused
    response = client.request(method, url, headers={"X-CSRF-Token": token})
    assert response.status_code == passed  # past the CSRF check: the route itself answered

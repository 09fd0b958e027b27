"""HTTP tests of browser sessions: cookie flags, replay, tampering, secret rotation,
fixation, idle and absolute expiry, the sessions list, ending sessions, and the
rule that a session ID never leaves the cookie.

Cookies are passed explicitly (``Cookie`` header, empty jar) so that each test
says exactly which credential a request carries.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from itsdangerous import Signer
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, FakeClock, register

COOKIE = "__Host-gatepass_session"
DEV_COOKIE = "gatepass_session"
SECRET_OLD = "old-secret-" + "o" * 32
SECRET_NEW = "new-secret-" + "n" * 32
SECRET_OTHER = "other-secret-" + "x" * 32
NEW_PASSWORD = "a brand new passphrase"

MakeClient = Callable[..., TestClient]


def fresh_login(
    client: TestClient,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
    cookie_name: str = COOKIE,
) -> tuple[str, str]:
    """Sign in with an empty jar; return (session cookie value, CSRF token)."""
    client.cookies.clear()
    response = client.post(
        "/auth/login", json={"email": email, "password": password}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    cookie = response.cookies[cookie_name]
    client.cookies.clear()
    return cookie, str(response.json()["csrf_token"])


def send(
    client: TestClient,
    method: str,
    url: str,
    cookie: str | None = None,
    *,
    csrf: str | None = None,
    origin: str | None = ORIGIN,
    headers: dict[str, str] | None = None,
    cookie_name: str = COOKIE,
    **kwargs: Any,
) -> httpx2.Response:
    """One request carrying exactly the given cookie, CSRF token and Origin."""
    client.cookies.clear()
    sent: dict[str, str] = {}
    if cookie is not None:
        sent["Cookie"] = f"{cookie_name}={cookie}"
    if csrf is not None:
        sent["X-CSRF-Token"] = csrf
    if origin is not None:
        sent["Origin"] = origin
    sent.update(headers or {})
    response = client.request(method, url, headers=sent, **kwargs)
    client.cookies.clear()
    return response


def me_status(client: TestClient, cookie: str, cookie_name: str = COOKIE) -> int:
    return send(client, "GET", "/auth/me", cookie, cookie_name=cookie_name).status_code


def session_id_of(cookie: str) -> str:
    """The secret part of a cookie: the ID before the signature."""
    session_id, _, signature = cookie.rpartition(".")
    assert session_id
    assert signature
    return session_id


def set_cookie_attributes(response: httpx2.Response, name: str) -> dict[str, str]:
    """Attributes (lower-case keys) of the Set-Cookie header for ``name``."""
    for header in response.headers.get_list("set-cookie"):
        first, *attrs = [part.strip() for part in header.split(";")]
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            parsed = {"": value}
            for attr in attrs:
                key, _, val = attr.partition("=")
                parsed[key.lower()] = val
            return parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def flip(text: str, index: int) -> str:
    """``text`` with one character changed to a different base64url character."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def handles(client: TestClient, cookie: str) -> list[dict[str, Any]]:
    response = send(client, "GET", "/auth/sessions", cookie)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


# --- cookie flags -----------------------------------------------------------------------


def test_session_cookie_is_host_prefixed_secure_httponly_lax_root_without_domain(
    client: TestClient,
) -> None:
    register(client)
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    attrs = set_cookie_attributes(response, COOKIE)
    assert "httponly" in attrs
    assert "secure" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    assert len(attrs[""]) >= 43  # 256-bit ID plus signature
    assert not any(name.startswith(DEV_COOKIE) for name in response.cookies if name != COOKIE), (
        "only the __Host- cookie is set outside dev mode"
    )


def test_dev_mode_cookie_drops_secure_and_host_prefix(make_client: MakeClient) -> None:
    client = make_client(dev="1")
    register(client)
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert COOKIE not in response.cookies
    attrs = set_cookie_attributes(response, DEV_COOKIE)
    assert "secure" not in attrs
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    assert me_status(client, attrs[""], cookie_name=DEV_COOKIE) == 200


def test_logout_clears_the_cookie_with_the_same_name_and_path(client: TestClient) -> None:
    register(client)
    cookie, csrf = fresh_login(client)
    response = send(client, "POST", "/auth/logout", cookie, csrf=csrf)
    assert response.status_code == 204
    attrs = set_cookie_attributes(response, COOKIE)
    assert attrs[""] in ("", '""')
    assert attrs.get("max-age") == "0" or "expires" in attrs
    assert attrs["path"] == "/"
    assert "secure" in attrs


# --- replay, tampering, forgery, rotation ---------------------------------------------


def test_logged_out_cookie_replayed_is_refused(client: TestClient) -> None:
    register(client)
    cookie, csrf = fresh_login(client)
    assert me_status(client, cookie) == 200
    assert send(client, "POST", "/auth/logout", cookie, csrf=csrf).status_code == 204
    replay = send(client, "GET", "/auth/me", cookie)
    assert replay.status_code == 401
    assert replay.headers["content-type"] == "application/problem+json"
    assert send(client, "GET", "/auth/sessions", cookie).status_code == 401
    assert send(client, "POST", "/auth/logout", cookie, csrf=csrf).status_code == 401


@pytest.mark.parametrize("part", ["id", "signature"])
@pytest.mark.parametrize("position", [0, 10, 20])
def test_tampered_cookie_is_refused(client: TestClient, part: str, position: int) -> None:
    register(client)
    cookie, _ = fresh_login(client)
    session_id, _, signature = cookie.rpartition(".")
    if part == "id":
        tampered = f"{flip(session_id, position)}.{signature}"
    else:
        tampered = f"{session_id}.{flip(signature, position)}"
    assert tampered != cookie
    assert me_status(client, tampered) == 401
    assert me_status(client, cookie) == 200, "the genuine cookie still works"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c.rpartition(".")[0],  # ID without signature
        lambda c: c.rpartition(".")[0] + ".",  # empty signature
        lambda c: "." + c.rpartition(".")[2],  # signature without ID
        lambda c: c + "A",  # extra character
        lambda c: c + "." + c.rpartition(".")[2],  # signature twice
        lambda c: c.upper(),
        lambda c: c * 4,  # far too long
    ],
    ids=["no-signature", "empty-signature", "no-id", "appended", "double-signed", "upper", "long"],
)
def test_malformed_cookie_is_refused(client: TestClient, mangle: Callable[[str], str]) -> None:
    register(client)
    cookie, _ = fresh_login(client)
    response = send(client, "GET", "/auth/me", mangle(cookie))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_cookie_of_a_real_session_signed_with_another_secret_is_refused(
    make_client: MakeClient,
) -> None:
    # Both servers share one database: the session really exists, only the signature
    # comes from a secret this server does not hold.
    ours = make_client(session_secrets=SECRET_NEW)
    foreign = make_client(session_secrets=SECRET_OTHER)
    register(ours)
    cookie, _ = fresh_login(foreign)
    assert me_status(foreign, cookie) == 200
    assert me_status(ours, cookie) == 401


def test_cookie_forged_with_itsdangerous_and_a_guessed_secret_is_refused(
    client: TestClient,
) -> None:
    register(client)
    forged = Signer(
        "guessed-secret-" + "g" * 32, salt="gatepass.session-cookie", key_derivation="hmac"
    ).sign(secrets.token_urlsafe(32))
    assert me_status(client, forged.decode()) == 401


def test_cookie_signed_with_a_retired_secret_works_while_listed_then_is_refused(
    make_client: MakeClient,
) -> None:
    before = make_client(session_secrets=SECRET_OLD)
    register(before)
    old_cookie, _ = fresh_login(before)

    rotated = make_client(session_secrets=f"{SECRET_NEW},{SECRET_OLD}")
    assert me_status(rotated, old_cookie) == 200, "second secret still verifies"
    new_cookie, _ = fresh_login(rotated)
    assert me_status(rotated, new_cookie) == 200
    assert me_status(before, new_cookie) == 401, "new cookies are signed with the first secret"

    retired = make_client(session_secrets=SECRET_NEW)
    assert me_status(retired, old_cookie) == 401, "removed secret no longer verifies"
    assert me_status(retired, new_cookie) == 200


# --- where a session ID may come from -------------------------------------------------


@pytest.mark.parametrize(
    "param", [COOKIE, DEV_COOKIE, "session", "session_id", "sid", "gatepass_session"]
)
def test_session_id_in_query_string_is_ignored(client: TestClient, param: str) -> None:
    register(client)
    cookie, _ = fresh_login(client)
    for value in (cookie, session_id_of(cookie)):
        response = send(client, "GET", "/auth/me", params={param: value})
        assert response.status_code == 401
        response = send(client, "GET", "/auth/sessions", params={param: value})
        assert response.status_code == 401


def test_session_id_in_json_or_form_body_is_ignored(client: TestClient) -> None:
    register(client)
    cookie, csrf = fresh_login(client)
    for value in (cookie, session_id_of(cookie)):
        body = {COOKIE: value, "session": value, "session_id": value, "csrf_token": csrf}
        response = send(client, "POST", "/auth/logout", csrf=csrf, json=body)
        assert response.status_code == 401
        response = send(client, "POST", "/auth/logout", data=body)
        assert response.status_code == 401
    assert me_status(client, cookie) == 200, "the session was never ended"


# --- fixation -------------------------------------------------------------------------


def test_login_destroys_a_planted_valid_session_and_issues_a_new_id(client: TestClient) -> None:
    register(client, "mallory@example.com")
    register(client, "ada@example.com")
    planted, _ = fresh_login(client, "mallory@example.com")

    response = send(
        client,
        "POST",
        "/auth/login",
        planted,
        json={"email": "ada@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    victim = response.cookies[COOKIE]
    assert victim != planted
    assert session_id_of(victim) != session_id_of(planted)

    assert me_status(client, planted) == 401, "the planted session is destroyed"
    me = send(client, "GET", "/auth/me", victim)
    assert me.json()["email"] == "ada@example.com"


def test_planted_session_of_the_same_user_is_replaced_at_login(client: TestClient) -> None:
    register(client)
    planted, _ = fresh_login(client)
    response = send(
        client,
        "POST",
        "/auth/login",
        planted,
        json={"email": "ada@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    assert response.cookies[COOKIE] != planted
    assert me_status(client, planted) == 401
    assert me_status(client, response.cookies[COOKIE]) == 200


@pytest.mark.parametrize(
    "planted",
    [
        "attacker-chosen-value",
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32) + "." + secrets.token_urlsafe(32),
    ],
    ids=["word", "bare-id", "id-with-bogus-signature"],
)
def test_arbitrary_planted_cookie_never_authenticates_as_the_victim(
    client: TestClient, planted: str
) -> None:
    register(client)
    response = send(
        client,
        "POST",
        "/auth/login",
        planted,
        json={"email": "ada@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    issued = response.cookies[COOKIE]
    assert issued != planted
    assert planted not in issued
    assert me_status(client, planted) == 401
    assert me_status(client, issued) == 200


# --- idle and absolute expiry ---------------------------------------------------------


def test_session_expires_after_idle_timeout(make_client: MakeClient, clock: FakeClock) -> None:
    client = make_client(session_idle_timeout="60", session_absolute_timeout="3600")
    register(client)
    cookie, _ = fresh_login(client)
    clock.advance(59)
    assert me_status(client, cookie) == 200
    clock.advance(60)
    assert me_status(client, cookie) == 401
    clock.advance(-119)  # even back in time, an expired session stays dead
    assert me_status(client, cookie) == 401


def test_untouched_session_is_dead_exactly_at_idle_timeout(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(session_idle_timeout="60", session_absolute_timeout="3600")
    register(client)
    cookie, _ = fresh_login(client)
    clock.advance(60)
    assert me_status(client, cookie) == 401


def test_session_in_use_never_idles_out(make_client: MakeClient, clock: FakeClock) -> None:
    client = make_client(session_idle_timeout="60", session_absolute_timeout="3600")
    register(client)
    cookie, _ = fresh_login(client)
    for _ in range(20):  # 20 x 30 s = 10 idle timeouts
        clock.advance(30)
        assert me_status(client, cookie) == 200
    clock.advance(60)
    assert me_status(client, cookie) == 401


def test_session_used_just_under_idle_timeout_apart_stays_alive(
    make_client: MakeClient, clock: FakeClock
) -> None:
    # The touch interval is min(60 s, 10 % of idle) = 6 s; a gap of idle - 6 s
    # is the longest one the write throttling guarantees to survive.
    client = make_client(session_idle_timeout="60", session_absolute_timeout="3600")
    register(client)
    cookie, _ = fresh_login(client)
    for _ in range(10):
        clock.advance(54)
        assert me_status(client, cookie) == 200


def test_session_expires_at_absolute_timeout_even_when_in_use(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(session_idle_timeout="60", session_absolute_timeout="100")
    register(client)
    cookie, _ = fresh_login(client)
    for _ in range(3):
        clock.advance(30)
        assert me_status(client, cookie) == 200
    clock.advance(10)  # 100 s after login
    assert me_status(client, cookie) == 401


def test_absolute_timeout_counts_from_login_across_password_change(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(session_idle_timeout="60", session_absolute_timeout="100")
    register(client)
    cookie, csrf = fresh_login(client)
    clock.advance(50)
    response = send(
        client,
        "POST",
        "/auth/password",
        cookie,
        csrf=csrf,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204
    renewed = response.cookies[COOKIE]
    clock.advance(40)
    assert me_status(client, renewed) == 200
    clock.advance(10)
    assert me_status(client, renewed) == 401


def test_cookie_max_age_matches_absolute_timeout(make_client: MakeClient) -> None:
    client = make_client(session_absolute_timeout="777")
    register(client)
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert set_cookie_attributes(response, COOKIE)["max-age"] == "777"


# --- the sessions list ----------------------------------------------------------------


def test_sessions_list_shows_device_ip_agent_and_exactly_one_current(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    phone, _ = fresh_login(client, headers={"User-Agent": "PhoneBrowser/1.0"})
    clock.advance(5)
    laptop, _ = fresh_login(client, headers={"User-Agent": "LaptopBrowser/2.0"})

    response = send(client, "GET", "/auth/sessions", laptop)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    rows = response.json()
    assert len(rows) == 2
    for row in rows:
        assert set(row) >= {"id", "kind", "created_at", "last_seen_at", "ip", "user_agent"}
        assert row["kind"] == "web"
        assert row["ip"] == "127.0.0.1"
    by_agent = {row["user_agent"]: row for row in rows}
    assert set(by_agent) == {"PhoneBrowser/1.0", "LaptopBrowser/2.0"}
    assert [row["current"] for row in rows].count(True) == 1
    assert by_agent["LaptopBrowser/2.0"]["current"] is True
    assert by_agent["PhoneBrowser/1.0"]["current"] is False
    assert by_agent["PhoneBrowser/1.0"]["created_at"] < by_agent["LaptopBrowser/2.0"]["created_at"]

    from_phone = handles(client, phone)
    assert [r["current"] for r in from_phone].count(True) == 1
    assert next(r for r in from_phone if r["current"])["user_agent"] == "PhoneBrowser/1.0"


def test_sessions_list_shows_only_the_callers_sessions(client: TestClient) -> None:
    register(client, "ada@example.com")
    register(client, "bob@example.com")
    ada, _ = fresh_login(client, "ada@example.com")
    bob, _ = fresh_login(client, "bob@example.com")
    ada_handles = {r["id"] for r in handles(client, ada)}
    bob_handles = {r["id"] for r in handles(client, bob)}
    assert len(ada_handles) == 1
    assert len(bob_handles) == 1
    assert ada_handles.isdisjoint(bob_handles)


def test_sessions_list_needs_a_session(client: TestClient) -> None:
    response = send(client, "GET", "/auth/sessions")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


# --- ending one session ---------------------------------------------------------------


def test_delete_session_ends_another_session_of_the_caller(client: TestClient) -> None:
    register(client)
    other, _ = fresh_login(client, headers={"User-Agent": "Other"})
    mine, csrf = fresh_login(client, headers={"User-Agent": "Mine"})
    target = next(r["id"] for r in handles(client, mine) if not r["current"])

    response = send(client, "DELETE", f"/auth/sessions/{target}", mine, csrf=csrf)
    assert response.status_code == 204
    assert me_status(client, other) == 401
    assert me_status(client, mine) == 200
    assert [r["user_agent"] for r in handles(client, mine)] == ["Mine"]

    again = send(client, "DELETE", f"/auth/sessions/{target}", mine, csrf=csrf)
    assert again.status_code == 404


def test_delete_own_current_session_ends_it(client: TestClient) -> None:
    register(client)
    mine, csrf = fresh_login(client)
    current = handles(client, mine)[0]["id"]
    response = send(client, "DELETE", f"/auth/sessions/{current}", mine, csrf=csrf)
    assert response.status_code == 204
    assert me_status(client, mine) == 401


def test_delete_session_of_another_user_is_404_and_leaves_it_alive(client: TestClient) -> None:
    register(client, "ada@example.com")
    register(client, "bob@example.com")
    ada, ada_csrf = fresh_login(client, "ada@example.com")
    bob, _ = fresh_login(client, "bob@example.com")
    bob_handle = handles(client, bob)[0]["id"]

    response = send(client, "DELETE", f"/auth/sessions/{bob_handle}", ada, csrf=ada_csrf)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert me_status(client, bob) == 200


@pytest.mark.parametrize(
    "path_id",
    [
        "random-" + secrets.token_urlsafe(16),
        secrets.token_urlsafe(16),
        "..%2F",
        "..%2F..%2Fauth%2Fme",
        "%2E%2E",
        "x" * 5000,
        "%C3%BCn%C3%AFc%C3%B6d%C3%A9",
        "%F0%9F%92%A9",
        "%E2%80%AE",
        "%00",
        "%FF",
        "' OR '1'='1",
        "%25",
    ],
    ids=[
        "random",
        "random-shaped-like-handle",
        "dot-dot-slash",
        "traversal",
        "encoded-dots",
        "very-long",
        "unicode",
        "emoji",
        "bidi",
        "nul",
        "bad-utf8",
        "sql",
        "percent",
    ],
)
def test_delete_session_with_unknown_or_malformed_id_is_404(
    client: TestClient, path_id: str
) -> None:
    register(client)
    mine, csrf = fresh_login(client)
    response = send(client, "DELETE", f"/auth/sessions/{path_id}", mine, csrf=csrf)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert me_status(client, mine) == 200


def test_session_secret_id_is_not_a_valid_handle(client: TestClient) -> None:
    register(client)
    other, _ = fresh_login(client)
    mine, csrf = fresh_login(client)
    for guess in (other, session_id_of(other)):
        response = send(client, "DELETE", f"/auth/sessions/{guess}", mine, csrf=csrf)
        assert response.status_code == 404
    assert me_status(client, other) == 200


# --- the session ID never leaves the cookie -------------------------------------------


def test_session_id_never_appears_in_bodies_pages_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    register(client)
    other, _ = fresh_login(client, headers={"User-Agent": "Other"})
    cookie, csrf = fresh_login(client, headers={"User-Agent": "Mine"})
    secrets_ = [cookie, session_id_of(cookie), other, session_id_of(other)]
    secrets_ += [s.rpartition(".")[2] for s in (cookie, other)]  # signatures too

    bodies: list[str] = []

    def record(response: httpx2.Response) -> httpx2.Response:
        bodies.append(response.text)
        for name, value in response.headers.items():
            if name.lower() != "set-cookie":
                bodies.append(value)
        return response

    rows = record(send(client, "GET", "/auth/sessions", cookie)).json()
    assert len(rows) == 2
    account = record(send(client, "GET", "/account", cookie))
    assert account.status_code == 200
    assert "text/html" in account.headers["content-type"]
    assert "Other" in account.text
    record(send(client, "GET", "/auth/me", cookie))
    record(send(client, "GET", "/auth/csrf", cookie))
    record(send(client, "GET", "/login", cookie))
    record(send(client, "POST", "/auth/logout", cookie, csrf="wrong"))
    record(send(client, "DELETE", "/auth/sessions/nope", cookie, csrf=csrf))
    record(send(client, "GET", "/auth/me", cookie, headers={"Authorization": cookie}))
    record(send(client, "GET", "/metrics"))
    other_handle = next(r["id"] for r in rows if not r["current"])
    record(send(client, "DELETE", f"/auth/sessions/{other_handle}", cookie, csrf=csrf))
    record(send(client, "GET", "/auth/me", other))
    record(send(client, "POST", "/auth/logout", cookie, csrf=csrf))
    record(send(client, "GET", "/auth/me", cookie))

    for row in rows:
        assert row["id"] not in secrets_
        assert all(row["id"] not in s for s in secrets_)
    assert bodies
    for text in bodies:
        for secret in secrets_:
            assert secret not in text
    assert caplog.records, "DEBUG logging of all loggers was captured"
    for log_record in caplog.records:
        line = f"{log_record.getMessage()} {log_record.args!r} {log_record.exc_text or ''}"
        for secret in secrets_:
            assert secret not in line, log_record.name
    for secret in secrets_:
        assert secret not in caplog.text


# --- ending every session -------------------------------------------------------------


def test_logout_all_ends_every_session_of_the_user_only(client: TestClient) -> None:
    register(client, "ada@example.com")
    register(client, "bob@example.com")
    first, _ = fresh_login(client)
    second, _ = fresh_login(client)
    third, csrf = fresh_login(client)
    bob, _ = fresh_login(client, "bob@example.com")

    response = send(client, "POST", "/auth/logout-all", third, csrf=csrf)
    assert response.status_code == 204
    assert set_cookie_attributes(response, COOKIE)[""] in ("", '""')
    for cookie in (first, second, third):
        assert me_status(client, cookie) == 401
    assert me_status(client, bob) == 200
    fresh, _ = fresh_login(client)
    assert len(handles(client, fresh)) == 1


# --- password change ------------------------------------------------------------------


def change_password(
    client: TestClient, cookie: str, csrf: str, current: str, new: str
) -> httpx2.Response:
    return send(
        client,
        "POST",
        "/auth/password",
        cookie,
        csrf=csrf,
        json={"current_password": current, "new_password": new},
    )


def login_status(client: TestClient, password: str) -> int:
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": password})
    client.cookies.clear()
    return response.status_code


def test_password_change_ends_other_sessions_and_renews_the_current_one(
    client: TestClient,
) -> None:
    register(client)
    other, _ = fresh_login(client, headers={"User-Agent": "Other"})
    current, csrf = fresh_login(client, headers={"User-Agent": "Current"})
    handle_before = next(r["id"] for r in handles(client, current) if r["current"])

    response = change_password(client, current, csrf, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 204
    renewed = response.cookies[COOKIE]
    attrs = set_cookie_attributes(response, COOKIE)
    assert {"httponly", "secure"} <= set(attrs)
    assert session_id_of(renewed) != session_id_of(current)

    assert me_status(client, current) == 401, "the old cookie is dead at once"
    assert me_status(client, other) == 401, "every other session ended"
    assert me_status(client, renewed) == 200
    rows = handles(client, renewed)
    assert len(rows) == 1
    assert rows[0]["current"] is True
    assert rows[0]["user_agent"] == "Current"
    assert rows[0]["id"] == handle_before

    assert login_status(client, NEW_PASSWORD) == 200
    assert login_status(client, PASSWORD) == 401


def test_password_change_gives_a_new_csrf_token(client: TestClient) -> None:
    register(client)
    current, csrf = fresh_login(client)
    response = change_password(client, current, csrf, PASSWORD, NEW_PASSWORD)
    renewed = response.cookies[COOKIE]
    token = send(client, "GET", "/auth/csrf", renewed).json()["csrf_token"]
    assert token != csrf
    refused = send(client, "POST", "/auth/logout", renewed, csrf=csrf)
    assert refused.status_code == 403
    assert send(client, "POST", "/auth/logout", renewed, csrf=token).status_code == 204


def test_password_change_with_wrong_current_password_is_401_and_changes_nothing(
    client: TestClient,
) -> None:
    register(client)
    other, _ = fresh_login(client)
    current, csrf = fresh_login(client)
    response = change_password(client, current, csrf, "not my password", NEW_PASSWORD)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert COOKIE not in response.cookies
    assert me_status(client, current) == 200
    assert me_status(client, other) == 200
    assert login_status(client, PASSWORD) == 200
    assert login_status(client, NEW_PASSWORD) == 401


@pytest.mark.parametrize("new", ["short", "1234567", "", "x" * 1025], ids=str.__len__)
def test_password_change_to_invalid_password_is_422_and_changes_nothing(
    client: TestClient, new: str
) -> None:
    register(client)
    other, _ = fresh_login(client)
    current, csrf = fresh_login(client)
    response = change_password(client, current, csrf, PASSWORD, new)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert me_status(client, current) == 200
    assert me_status(client, other) == 200
    assert login_status(client, PASSWORD) == 200


def test_password_change_needs_a_session(client: TestClient) -> None:
    register(client)
    response = send(
        client,
        "POST",
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 401
    assert login_status(client, PASSWORD) == 200


# --- Authorization header never falls back to the cookie ------------------------------


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWRhOnNlY3JldA==", "Bearer not-a-token", "Bearer ", "Token abc", "", "garbage"],
    ids=["basic", "bad-bearer", "empty-bearer", "other-scheme", "empty", "garbage"],
)
def test_authorization_header_that_is_not_a_valid_bearer_is_401_despite_cookie(
    client: TestClient, authorization: str
) -> None:
    register(client)
    cookie, csrf = fresh_login(client)
    headers = {"Authorization": authorization}
    for method, url in [("GET", "/auth/me"), ("GET", "/auth/sessions"), ("GET", "/auth/csrf")]:
        response = send(client, method, url, cookie, headers=headers)
        assert response.status_code == 401, url
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.headers["content-type"] == "application/problem+json"
    response = send(client, "POST", "/auth/logout", cookie, csrf=csrf, headers=headers)
    assert response.status_code == 401
    assert me_status(client, cookie) == 200, "the cookie's session was not ended"


def test_missing_credentials_get_plain_bearer_challenge(client: TestClient) -> None:
    response = send(client, "GET", "/auth/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

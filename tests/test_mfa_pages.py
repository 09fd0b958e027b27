"""The HTML side of second factors, through the ASGI app: the second step of a form
sign-in (code, recovery code, passkey), and what the account page shows of the
user's factors and passkeys.

From the attacker's side: the password alone by form sets no session, a wrong code
grants nothing, and no TOTP secret, code, recovery code or ``mfa_token`` reaches a
log line or the account page.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, FakeClock, session_cookie
from tests.test_account_pages import form_token, post_form
from tests.test_mfa_login import EMAIL, code_at, enable_totp, wrong
from tests.test_passkey_api import add_passkey, web_user

MakeClient = Callable[..., TestClient]


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    made = make_client()
    made.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
    return made


def hidden_field(page: httpx2.Response, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def password_by_form(client: TestClient) -> httpx2.Response:
    """Open /login as a browser does, then post its form with the right password."""
    page = client.get("/login")
    assert page.status_code == 200
    fields = {
        "csrf_token": form_token(page),
        "client": "web",
        "email": EMAIL,
        "password": PASSWORD,
    }
    return post_form(client, "/auth/login", fields)


def code_by_form(
    client: TestClient, step: httpx2.Response, code: str, method: str = "totp"
) -> httpx2.Response:
    """Post the second step's form as it is rendered in ``step``."""
    fields = {
        "csrf_token": form_token(step),
        "mfa_token": hidden_field(step, "mfa_token"),
        "method": method,
        "code": code,
    }
    return post_form(client, "/auth/mfa/verify", fields)


def sets_session(response: httpx2.Response) -> bool:
    return any("gatepass_session" in v for v in response.headers.get_list("set-cookie"))


def test_a_form_password_sign_in_of_a_totp_user_renders_the_second_step_without_a_session(
    client: TestClient, clock: FakeClock
) -> None:
    enable_totp(client, clock)
    step = password_by_form(client)
    assert step.status_code == 200, step.text
    assert step.headers["content-type"].startswith("text/html")
    assert 'id="mfa-form"' in step.text
    assert hidden_field(step, "mfa_token")
    # A TOTP-only user is offered no passkey, so the page loads no passkey script.
    assert 'id="mfa-passkey"' not in step.text
    assert not sets_session(step)
    assert session_cookie(client) is None
    assert client.get("/auth/me").status_code == 401
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login"


def test_the_right_code_by_form_lands_on_account_with_a_session(
    client: TestClient, clock: FakeClock
) -> None:
    secret, _ = enable_totp(client, clock)
    step = password_by_form(client)
    finished = code_by_form(client, step, code_at(secret, clock))
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == "/account"
    assert sets_session(finished)
    account = client.get("/account")
    assert account.status_code == 200
    assert EMAIL in account.text
    assert client.get("/auth/me").json()["amr"] == ["pwd", "otp", "mfa"]


def test_a_recovery_code_by_form_lands_on_account(client: TestClient, clock: FakeClock) -> None:
    _, codes = enable_totp(client, clock)
    finished = code_by_form(client, password_by_form(client), codes[0], method="recovery_code")
    assert finished.status_code == 303, finished.text
    assert client.get("/auth/me").status_code == 200


def test_a_wrong_code_by_form_renders_the_step_again_and_grants_nothing(
    client: TestClient, clock: FakeClock
) -> None:
    secret, _ = enable_totp(client, clock)
    step = password_by_form(client)
    again = code_by_form(client, step, wrong(code_at(secret, clock)))
    assert again.status_code == 401
    assert 'id="mfa-error"' in again.text
    assert "That code did not work" in again.text
    assert not sets_session(again)
    assert client.get("/auth/me").status_code == 401
    # The same pending sign-in goes on: the page again offers the step for it.
    assert hidden_field(again, "mfa_token") == hidden_field(step, "mfa_token")
    finished = code_by_form(client, again, code_at(secret, clock))
    assert finished.status_code == 303, finished.text


def test_a_second_step_form_without_its_double_submit_token_is_refused(
    client: TestClient, clock: FakeClock
) -> None:
    """A cross-site form (no token of ours) cannot finish a victim's pending sign-in."""
    secret, _ = enable_totp(client, clock)
    step = password_by_form(client)
    fields = {
        "mfa_token": hidden_field(step, "mfa_token"),
        "method": "totp",
        "code": code_at(secret, clock),
    }
    forged = post_form(client, "/auth/mfa/verify", {"csrf_token": "forged", **fields})
    assert forged.status_code == 403
    assert not sets_session(forged)


def test_a_passkey_user_gets_the_passkey_step_by_form(client: TestClient) -> None:
    client.cookies.clear()
    add_passkey(client, web_user(client, "bo@example.com"))
    client.cookies.clear()
    page = client.get("/login")
    fields = {
        "csrf_token": form_token(page),
        "client": "web",
        "email": "bo@example.com",
        "password": PASSWORD,
    }
    step = post_form(client, "/auth/login", fields)
    assert step.status_code == 200, step.text
    button = re.search(
        r'<button type="button" id="mfa-passkey" data-mfa-token="([^"]+)"', step.text
    )
    assert button is not None, step.text
    assert '<script src="/static/passkeys.js" defer></script>' in step.text
    # No TOTP: no code form.
    assert 'id="mfa-form"' not in step.text
    assert not sets_session(step)


def test_the_login_page_offers_passwordless_passkey_sign_in(client: TestClient) -> None:
    page = client.get("/login")
    assert 'id="passkey-login"' in page.text
    assert '<script src="/static/passkeys.js" defer></script>' in page.text
    script = client.get("/static/passkeys.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


def test_the_pages_carry_no_inline_script_or_event_handler(
    client: TestClient, clock: FakeClock
) -> None:
    """The CSP (script-src 'self') would block them, breaking the page silently."""
    enable_totp(client, clock)
    pages = [client.get("/login"), password_by_form(client)]
    client.cookies.clear()
    add_passkey(client, web_user(client, "bo@example.com"))
    pages.append(client.get("/account"))
    for page in pages:
        assert page.status_code == 200
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text) is None
        assert re.search(r"\son[a-z]+\s*=", page.text) is None
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_account_page_shows_factors_and_passkeys(client: TestClient, clock: FakeClock) -> None:
    client.cookies.clear()
    headers = web_user(client, "bo@example.com")
    before = client.get("/account").text
    assert 'id="totp-begin"' in before
    assert 'id="no-passkeys">' in before
    _, created = add_passkey(client, headers, name="Work laptop")
    secret = client.post("/auth/mfa/totp/setup", headers=headers).json()["secret"]
    confirmed = client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=headers
    )
    assert confirmed.status_code == 200
    after = client.get("/account").text
    assert 'id="totp-begin"' not in after
    assert 'id="totp-remove-form"' in after
    assert '<span id="recovery-codes-left">10</span>' in after
    assert f'<li data-passkey="{created["id"]}">' in after
    assert 'value="Work laptop"' in after
    assert 'id="no-passkeys" hidden>' in after


def test_the_account_page_never_shows_the_totp_secret_or_recovery_codes(
    client: TestClient, clock: FakeClock
) -> None:
    """They are in the set-up answers only (no-store): a page kept in a history or a
    shared screen later shows none of them."""
    client.cookies.clear()
    headers = web_user(client, "bo@example.com")
    secret = client.post("/auth/mfa/totp/setup", headers=headers).json()["secret"]
    pending = client.get("/account").text
    assert secret not in pending
    codes = client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=headers
    ).json()["recovery_codes"]
    page = client.get("/account").text
    assert secret not in page
    assert [c for c in codes if c in page] == []


def test_no_secret_code_or_mfa_token_is_logged(
    client: TestClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret, codes = enable_totp(client, clock)
    step = password_by_form(client)
    mfa_token = hidden_field(step, "mfa_token")
    wrong_code = wrong(code_at(secret, clock))
    again = code_by_form(client, step, wrong_code)
    right_code = code_at(secret, clock)
    assert code_by_form(client, again, right_code).status_code == 303
    client.cookies.clear()
    assert (
        code_by_form(client, password_by_form(client), codes[0], method="recovery_code").status_code
        == 303
    )
    secrets_seen = [secret, mfa_token, wrong_code, right_code, *codes]
    lines = [r.getMessage() for r in caplog.records]
    assert any(r.name == "gatepass.audit" for r in caplog.records)
    leaks = [s for s in secrets_seen if any(s in line for line in lines)]
    assert leaks == []

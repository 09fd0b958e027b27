"""Second factors and passkeys driven in real headless Chromium against the real server.

WebAuthn needs a domain, so the pages are opened at ``http://localhost:PORT`` (the
server's public URL is ``http://127.0.0.1:PORT``, so its RP ID is ``localhost`` and
every loopback spelling is its own origin). Passkeys live on a virtual authenticator
that Chromium's DevTools protocol provides (user verification always succeeds,
presence is simulated), so the real browser ceremonies run with no person present.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyotp
import pytest

from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, running_server, unavailable
from tests.test_browser import (
    EMAIL,
    TIMEOUT_MS,
    browser,  # noqa: F401 - the module-scoped Chromium fixture, shared
    register,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

TOTP_STEP = 30
PASSKEY_NAME = "Test laptop"
VIRTUAL_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@dataclass
class Tab:
    """A page on ``http://localhost:PORT`` and what it reported."""

    page: Page
    csp_violations: list[str]


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    env = {"GATEPASS_DEV": "1", **getattr(request, "param", {})}
    with ExitStack() as stack:
        try:
            started = stack.enter_context(running_server(tmp_path, env))
        except OSError as exc:
            unavailable(f"gatepass serve could not be run: {exc}")
        with httpx.Client(base_url=started.url, timeout=30.0) as client:
            register(client)
        yield started


@pytest.fixture
def tab(browser: Browser, server: RunningServer) -> Iterator[Tab]:  # noqa: F811
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context: BrowserContext = browser.new_context(base_url=f"http://localhost:{server.port}")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    violations: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_AUTHENTICATOR})
    try:
        yield Tab(page, violations)
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page's JavaScript: {errors}"
    assert violations == [], f"the pages broke their own CSP: {violations}"


def password_step(page: Page) -> Any:
    """Post the /login form with the right password; the response of the post."""
    page.goto("/login")
    page.fill('#login-form input[name="email"]', EMAIL)
    page.fill('#login-form input[name="password"]', PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/auth/login")) as posted:
        page.click('#login-form button[type="submit"]')
    return posted.value


def sign_out(page: Page) -> None:
    page.click("#logout")
    page.wait_for_url("**/login")
    assert page.request.get("/auth/me").status == 401


def amr(page: Page) -> list[str]:
    me = page.request.get("/auth/me")
    assert me.status == 200, me.text()
    return list(me.json()["amr"])


#: Without the WebAuthn Level 3 JSON helpers, as in browsers older than Chromium's:
#: passkeys.js converts the base64url fields itself.
WITHOUT_JSON_HELPERS = """
delete PublicKeyCredential.parseCreationOptionsFromJSON;
delete PublicKeyCredential.parseRequestOptionsFromJSON;
delete PublicKeyCredential.prototype.toJSON;
"""


@pytest.mark.parametrize("helpers", ["level3", "fallback"])
def test_a_passkey_added_on_account_signs_in_alone_and_as_the_second_factor(
    tab: Tab, helpers: str
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    if helpers == "fallback":
        page.add_init_script(WITHOUT_JSON_HELPERS)
        page.goto("/login")
        assert page.evaluate("typeof PublicKeyCredential.prototype.toJSON") == "undefined"
    assert password_step(page).status == 303
    page.wait_for_url("**/account")
    expect(page.locator("#no-passkeys")).to_be_visible()

    page.fill('#passkey-add-form input[name="name"]', PASSKEY_NAME)
    page.click("#add-passkey")
    row = page.locator("#passkeys li[data-passkey]")
    expect(row).to_have_count(1)
    expect(row.locator("input.passkey-name")).to_have_value(PASSKEY_NAME)
    expect(page.locator("#no-passkeys")).to_be_hidden()

    row.locator("input.passkey-name").fill("Renamed key")
    row.locator("button.rename-passkey").click()
    expect(page.locator("#status")).to_have_text("Passkey renamed.")
    assert [p["name"] for p in page.request.get("/auth/passkeys").json()] == ["Renamed key"]

    sign_out(page)
    # Passwordless: the passkey alone (user-verified) is both factors.
    expect(page.locator("#passkey-login")).to_be_visible()
    page.click("#passkey-login")
    page.wait_for_url("**/account")
    assert amr(page) == ["hwk", "user", "mfa"]

    sign_out(page)
    # The password alone is no sign-in now: the second step asks for the passkey.
    step = password_step(page)
    assert step.status == 200
    assert not [c for c in page.context.cookies() if c["name"] == "gatepass_session"]
    expect(page.locator("#mfa-passkey")).to_be_visible()
    page.click("#mfa-passkey")
    page.wait_for_url("**/account")
    assert amr(page) == ["pwd", "hwk", "user", "mfa"]

    # And it can be removed again from the list.
    page.locator("#passkeys li[data-passkey] button.remove-passkey").click()
    expect(page.locator("#passkeys li[data-passkey]")).to_have_count(0)
    expect(page.locator("#no-passkeys")).to_be_visible()
    assert page.request.get("/auth/mfa").json()["passkeys"] == 0


def wait_for_the_next_step(after: float) -> None:
    """Sleep until the TOTP step after the one of ``after`` (a code is accepted once)."""
    deadline = time.time() + TOTP_STEP + 1
    step = int(after // TOTP_STEP)
    while int(time.time() // TOTP_STEP) == step:
        assert time.time() < deadline
        time.sleep(0.2)


def test_totp_set_up_on_account_then_a_sign_in_with_a_code_from_the_shown_secret(
    tab: Tab,
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    assert password_step(page).status == 303
    page.wait_for_url("**/account")
    page.click("#totp-begin")
    expect(page.locator("#totp-setup")).to_be_visible()
    # The QR code is shown as SVG (parsed, not set as HTML) and the key as text.
    expect(page.locator("#totp-qr svg")).to_have_count(1)
    secret = page.locator("#totp-secret").inner_text().strip()
    assert len(secret) >= 16, secret
    totp = pyotp.TOTP(secret)
    confirmed_at = time.time()
    page.fill('#totp-confirm-form input[name="code"]', totp.at(confirmed_at))
    page.click('#totp-confirm-form button[type="submit"]')
    codes = page.locator("#recovery-code-list li")
    expect(codes).to_have_count(10)
    first_set = codes.all_inner_texts()
    page.click("#recovery-saved")
    expect(page.locator("#recovery-codes-left")).to_have_text("10")
    expect(page.locator("#recovery-codes")).to_be_hidden()
    assert secret not in page.content()

    sign_out(page)
    step = password_step(page)
    assert step.status == 200
    expect(page.locator("#mfa-form")).to_be_visible()
    assert me_is_anonymous(page)
    wait_for_the_next_step(confirmed_at)
    page.fill('#mfa-form input[name="code"]', totp.now())
    page.click('#mfa-form button[type="submit"]')
    page.wait_for_url("**/account")
    methods = amr(page)
    assert "otp" in methods
    assert "mfa" in methods

    # New recovery codes replace the old set; one of them removes TOTP.
    page.click("#recovery-regenerate")
    expect(codes).to_have_count(10)
    second_set = codes.all_inner_texts()
    assert set(second_set).isdisjoint(first_set)
    page.click("#recovery-saved")
    page.fill('#totp-remove-form input[name="code"]', second_set[0])
    page.click('#totp-remove-form button[type="submit"]')
    expect(page.locator("#totp-begin")).to_be_visible()
    assert page.request.get("/auth/mfa").json()["totp"] is False


def me_is_anonymous(page: Page) -> bool:
    return page.request.get("/auth/me").status == 401


@pytest.mark.parametrize("server", [{"GATEPASS_FRESH_AUTH_MAX_AGE": "3"}], indirect=True)
def test_a_stale_sign_in_confirms_the_password_then_the_change_goes_through(tab: Tab) -> None:
    from playwright.sync_api import expect

    page = tab.page
    assert password_step(page).status == 303
    page.wait_for_url("**/account")
    time.sleep(4.5)  # the sign-in is older than GATEPASS_FRESH_AUTH_MAX_AGE now
    page.click("#totp-begin")
    form = page.locator("#reauth-form")
    expect(form).to_be_visible()
    expect(page.locator("#totp-setup")).to_be_hidden()

    form.locator('input[name="current_password"]').fill("not the password")
    form.locator('button[type="submit"]').click()
    expect(page.locator("#status")).to_have_class("error")
    expect(form).to_be_visible()
    expect(page.locator("#totp-setup")).to_be_hidden()

    form.locator('input[name="current_password"]').fill(PASSWORD)
    form.locator('button[type="submit"]').click()
    # The action is retried once the password is confirmed.
    expect(page.locator("#totp-setup")).to_be_visible()
    expect(form).to_be_hidden()
    assert page.locator("#totp-secret").inner_text().strip()

"""The sign-in and account pages driven in real headless Chromium against the real server.

Playwright never downloads a browser here: it launches Debian's ``chromium``. The
server runs in dev mode so its cookies (no ``Secure``) work on ``http://127.0.0.1``;
its public URL is ``http://127.0.0.1:PORT`` (see ``running_server``), so
``http://localhost:PORT`` is its own origin too, and any other port is not.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gatepass.device_names import device_name
from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, running_server, unavailable
from tests.smtp_server import SmtpServer, link_in, mail_with_link

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COOKIE = "gatepass_session"  # dev mode: no Secure, so no __Host- prefix
EMAIL = "ada@example.com"
OTHER_DEVICE = "e2e-other-device/1.0"
TIMEOUT_MS = 15_000
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        unavailable(f"chromium not installed: {CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        unavailable(f"playwright not installed: {exc}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with ExitStack() as stack:
        try:
            started = stack.enter_context(running_server(tmp_path, {"GATEPASS_DEV": "1"}))
        except OSError as exc:  # the command itself is missing; a crash is an error
            unavailable(f"gatepass serve could not be run: {exc}")
        yield started


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page's JavaScript: {errors}"


@pytest.fixture
def api(server: RunningServer) -> Iterator[Callable[..., httpx.Client]]:
    """Plain HTTP clients of the same server: another device of the same user."""
    clients: list[httpx.Client] = []

    def make(**kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=server.url, timeout=30.0, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def attacker_site() -> Iterator[Callable[[str, str], str]]:
    """Serve one HTML page from another local HTTP server; returns its URL for a host name."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def serve(body: str, host: str) -> str:
        payload = body.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return f"http://{host}:{httpd.server_address[1]}/"

    yield serve
    for httpd, thread in servers:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def register(client: httpx.Client, email: str = EMAIL) -> None:
    response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text


def login_other_device(client: httpx.Client, email: str = EMAIL) -> str:
    response = client.post(
        "/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"User-Agent": OTHER_DEVICE},
    )
    assert response.status_code == 200, response.text
    return client.cookies[COOKIE]


def sign_in_with_form(page: Page, email: str = EMAIL, password: str = PASSWORD) -> None:
    """Sign in the way a person does: the /login form, then the redirect to /account."""
    page.goto("/login")
    page.fill('#login-form input[name="email"]', email)
    page.fill('#login-form input[name="password"]', password)
    with page.expect_response(lambda r: r.url.endswith("/auth/login")) as posted:
        page.click('#login-form button[type="submit"]')
    assert posted.value.status == 303, f"{posted.value.status}: {page.content()}"
    page.wait_for_url("**/account")


def sign_in(page: Page, email: str = EMAIL) -> None:
    """Sign the browser in through the JSON API (its cookie lands in the browser's jar),
    then open /account. Keeps the account-page tests independent of the form's bug."""
    response = page.request.post("/auth/login", data={"email": email, "password": PASSWORD})
    assert response.status == 200, response.text()
    page.goto("/account")
    assert page.url.endswith("/account")


def browser_cookie(page: Page) -> str:
    values = [c["value"] for c in page.context.cookies() if c["name"] == COOKIE]
    assert len(values) == 1, page.context.cookies()
    return values[0]


def secrets_of(cookie_value: str) -> list[str]:
    """The cookie value, its secret session ID and that ID's stored SHA-256."""
    session_id = cookie_value.rsplit(".", 1)[0]
    return [cookie_value, session_id, hashlib.sha256(session_id.encode()).hexdigest()]


def me_status(page: Page) -> int:
    """``GET /auth/me`` with the browser's own cookies."""
    return page.request.get("/auth/me").status


# Regression: with Referrer-Policy no-referrer, Chromium posts the /login form with
# ``Origin: null`` (Fetch standard), which the CSRF check refuses; the pages must use
# a policy that keeps a real Origin on same-origin posts.


def assert_account_page_lists_this_device(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#account-email")).to_have_text(EMAIL)
    current = page.locator("#sessions tr.current")
    expect(current).to_have_count(1)
    expect(current).to_contain_text("(this device)")
    # The device by name; the raw user agent only as the cell's tooltip.
    agent = page.evaluate("navigator.userAgent")
    expect(current).to_contain_text(device_name(agent))
    expect(current.locator("td.device")).to_have_attribute("title", agent)
    expect(current).to_contain_text("127.0.0.1")
    # The current session has no "Sign out" button of its own in the list.
    expect(current.locator("button.end-session")).to_have_count(0)
    assert me_status(page) == 200


def test_sign_in_form_lands_on_account_with_this_device_listed(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    register(api())
    sign_in_with_form(page)
    assert_account_page_lists_this_device(page)


def test_sign_in_form_works_under_the_localhost_spelling_of_the_public_url(
    browser: Browser, server: RunningServer, api: Callable[..., httpx.Client]
) -> None:
    from playwright.sync_api import expect

    register(api())
    context = browser.new_context(base_url=f"http://localhost:{server.port}")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        sign_in_with_form(page)
        expect(page.locator("#account-email")).to_have_text(EMAIL)
        assert me_status(page) == 200
    finally:
        context.close()


def test_account_page_shows_the_email_and_this_device(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    register(api())
    sign_in(page)
    assert_account_page_lists_this_device(page)


def test_wrong_password_in_the_form_stays_on_login_without_a_session(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    from playwright.sync_api import expect

    register(api())
    page.goto("/login")
    page.fill('#login-form input[name="email"]', EMAIL)
    page.fill('#login-form input[name="password"]', "wrong password 1")
    with page.expect_response(lambda r: r.url.endswith("/auth/login")) as posted:
        page.click('#login-form button[type="submit"]')
    assert posted.value.status == 401
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Invalid email or password.")
    assert "wrong password 1" not in page.content()
    assert [c for c in page.context.cookies() if c["name"] == COOKIE] == []
    assert me_status(page) == 401


def test_account_page_never_shows_a_session_secret(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    register(api())
    other_cookie = login_other_device(api())
    sign_in(page)
    own_cookie = browser_cookie(page)

    rendered = page.content()
    raw = page.request.get("/account").text()
    assert EMAIL in raw  # the page really is the signed-in account page
    for secret in [*secrets_of(own_cookie), *secrets_of(other_cookie)]:
        assert secret not in rendered
        assert secret not in raw
        assert html.escape(secret) not in raw


def test_ending_another_session_removes_its_row_and_kills_its_cookie(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    from playwright.sync_api import expect

    register(api())
    sign_in(page)
    other = api()
    login_other_device(other)
    assert other.get("/auth/me").status_code == 200

    page.reload()
    # The device cell names the device; its raw user agent is the cell's tooltip.
    row = page.locator("#sessions tbody tr", has=page.locator(f'td[title="{OTHER_DEVICE}"]'))
    expect(row).to_have_count(1)
    expect(page.locator("#sessions tbody tr")).to_have_count(2)
    row.get_by_role("button", name="Sign out").click()

    expect(row).to_have_count(0)
    expect(page.locator("#status")).to_have_text("Session ended.")
    assert other.get("/auth/me").status_code == 401
    assert me_status(page) == 200  # only the other session ended
    page.reload()
    expect(page.locator("#sessions tbody tr")).to_have_count(1)
    expect(page.locator("#sessions tr.current")).to_have_count(1)


def test_sign_out_everywhere_returns_to_login_and_ends_every_session(
    page: Page, api: Callable[..., httpx.Client]
) -> None:
    register(api())
    sign_in(page)
    own_cookie = browser_cookie(page)
    other = api()
    login_other_device(other)

    page.get_by_role("button", name="Sign out everywhere").click()
    page.wait_for_url("**/login")

    assert me_status(page) == 401
    assert other.get("/auth/me").status_code == 401
    # The browser's old cookie is dead on the server, not merely deleted by the browser.
    replay = api()
    assert replay.get("/auth/me", headers={"Cookie": f"{COOKIE}={own_cookie}"}).status_code == 401
    page.goto("/account")
    page.wait_for_url("**/login")


@pytest.mark.parametrize(
    ("attacker_host", "refusals"),
    [
        # Same site, other origin: SameSite=Lax sends the cookie, so CSRF rules must refuse.
        ("127.0.0.1", {403}),
        # Another site: the Lax cookie is withheld on a cross-site POST, and CSRF refuses too.
        ("localhost", {401, 403}),
    ],
    ids=["other-origin", "other-site"],
)
def test_cross_site_form_post_cannot_sign_out_everywhere(
    page: Page,
    api: Callable[..., httpx.Client],
    server: RunningServer,
    attacker_site: Callable[[str, str], str],
    attacker_host: str,
    refusals: set[int],
) -> None:
    register(api())
    sign_in(page)
    other = api()
    login_other_device(other)
    target = f"{server.url}/auth/logout-all"
    attacker = attacker_site(
        f"""<!doctype html><html><body>
        <form method="post" action="{target}">
          <input type="hidden" name="csrf_token" value="guessed-token">
        </form>
        <script>document.forms[0].submit();</script>
        </body></html>""",
        attacker_host,
    )

    with page.expect_response(lambda r: r.url == target) as info:
        page.goto(attacker, wait_until="commit")
    response = info.value
    assert response.request.method == "POST"
    assert response.status in refusals

    # Nothing changed: both sessions still work (checked from a fresh tab of the same
    # browser, so the attacker page's navigation cannot interfere).
    tab = page.context.new_page()
    tab.goto(f"{server.url}/account")
    assert tab.url == f"{server.url}/account"
    tab.close()
    assert me_status(page) == 200
    assert other.get("/auth/me").status_code == 200


@pytest.fixture
def mail_server(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[RunningServer]:
    """A dev-mode server that sends its mail to the loopback SMTP server."""
    env = {"GATEPASS_DEV": "1", "GATEPASS_SMTP_URL": smtp_server.url}
    with ExitStack() as stack:
        try:
            started = stack.enter_context(running_server(tmp_path / "mail", env))
        except OSError as exc:
            unavailable(f"gatepass serve could not be run: {exc}")
        yield started


def test_sign_up_verify_sign_in_then_reset_the_password_from_the_mails(
    browser: Browser, mail_server: RunningServer, smtp_server: SmtpServer
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    email = f"ada-{secrets.token_hex(5)}@example.com"
    context = browser.new_context(base_url=mail_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/login")
        page.click("#register-link")
        page.wait_for_url("**/register")
        page.fill('#register-form input[name="email"]', email)
        page.fill('#register-form input[name="password"]', PASSWORD)
        page.click('#register-form button[type="submit"]')
        expect(page.locator("#register-sent")).to_contain_text(email)

        verify_link = link_in(smtp_server.wait_for(email)[0])
        page.goto(verify_link)
        assert page.url == f"{mail_server.url}/verify-email"  # the token left the URL
        page.click('#verify-form button[type="submit"]')
        expect(page.locator("#verify-done")).to_contain_text(email)

        sign_in_with_form(page, email)
        expect(page.locator("#email-verified")).to_be_visible()
        page.click("#logout")
        page.wait_for_url("**/login")

        page.click("#forgot-link")
        page.wait_for_url("**/forgot-password")
        page.fill('#forgot-form input[name="email"]', email)
        page.click('#forgot-form button[type="submit"]')
        expect(page.locator("#forgot-sent")).to_be_visible()

        reset_link = link_in(mail_with_link(smtp_server.wait_for(email, 2), "/reset-password"))
        page.goto(reset_link)
        assert page.url == f"{mail_server.url}/reset-password"
        page.fill('#reset-form input[name="new_password"]', NEW_PASSWORD)
        page.click('#reset-form button[type="submit"]')
        expect(page.locator("#reset-done")).to_be_visible()
        for link in (verify_link, reset_link):
            assert link.partition("token=")[2] not in page.content()

        sign_in_with_form(page, email, NEW_PASSWORD)
        expect(page.locator("#account-email")).to_have_text(email)
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page's JavaScript: {errors}"

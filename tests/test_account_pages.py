"""The HTML pages for sign-up, forgotten passwords and mail links, through the ASGI app,
and the account page's device names, address status and forms.

Attacks are tested from the attacker's side: a cross-site post without the form's
double-submit token, a link token leaking into a page, a URL or a Location, a token
for one purpose used at another page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, FakeClock, login, register
from tests.smtp_server import SmtpServer, link_in, link_token, own_address

MakeClient = Callable[..., TestClient]

FORM_COOKIE = "__Host-gatepass_login_csrf"
RESET_COOKIE = "__Secure-gatepass_reset_link"
VERIFY_COOKIE = "__Secure-gatepass_verify_link"
NEW_PASSWORD = "a brand new passphrase"
EVIL = "https://evil.example"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
FORM_PAGES = ["/register", "/forgot-password"]
#: (page, its link cookie, the longest the cookie may live: the link's TTL, an hour at most)
LINK_PAGES = [("/reset-password", RESET_COOKIE, 1800), ("/verify-email", VERIFY_COOKIE, 3600)]
ALL_POSTS = ["/register", "/forgot-password", "/reset-password", "/verify-email"]


def form_token(page: httpx2.Response) -> str:
    """The double-submit token a page's form carries (it equals the cookie set with it)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def post_form(
    client: TestClient, path: str, fields: dict[str, str], **kwargs: object
) -> httpx2.Response:
    return client.post(path, data=fields, follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def submit(client: TestClient, path: str, **fields: str) -> httpx2.Response:
    """Open the page as a browser does (cookie in the jar), then post its form."""
    page = client.get(path, follow_redirects=False)
    assert page.status_code == 200, page.text
    return post_form(client, path, {"csrf_token": form_token(page), **fields})


class Recorder:
    """Every body and header (but Set-Cookie, where the token is meant to go) the
    browser was shown, to check that a link token appears in none of them."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, response: httpx2.Response, *, arrival: bool = False) -> httpx2.Response:
        for hop in [*response.history, response]:
            self.seen.append(hop.text)
            if not arrival:  # the mail link itself is the URL a browser arrives with
                self.seen.append(str(hop.url))
            self.seen += [v for k, v in hop.headers.items() if k.lower() != "set-cookie"]
        return response

    def assert_never_shown(self, token: str) -> None:
        assert self.seen
        for text in self.seen:
            assert token not in text


def open_link(client: TestClient, link: str, record: Recorder | None = None) -> httpx2.Response:
    """Follow a mail link as a browser does: the 303 that moves the token into a
    cookie, then the bare page."""
    moved = client.get(link, follow_redirects=False)
    assert moved.status_code == 303, moved.text
    page = client.get(moved.headers["location"], follow_redirects=False)
    if record is not None:
        record(moved, arrival=True)
        record(page)
    return page


# the pages and their links -------------------------------------------------------------


def test_login_page_links_to_sign_up_and_forgotten_password(client: TestClient) -> None:
    page = client.get("/login")
    assert 'href="/register"' in page.text
    assert 'href="/forgot-password"' in page.text


def test_register_page_links_back_to_sign_in(client: TestClient) -> None:
    page = client.get("/register")
    assert page.status_code == 200
    assert 'href="/login"' in page.text


@pytest.mark.parametrize("path", FORM_PAGES)
def test_form_pages_carry_the_double_submit_token_in_cookie_and_field(
    client: TestClient, path: str
) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "content-security-policy" in page.headers
    assert page.cookies[FORM_COOKIE] == form_token(page)
    assert f'action="{path}"' in page.text


# CSRF: forged posts --------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_POSTS)
def test_cross_site_form_post_without_the_double_submit_token_is_refused(
    client: TestClient, path: str
) -> None:
    fields = {"email": "ada@example.com", "password": PASSWORD, "new_password": NEW_PASSWORD}
    response = post_form(client, path, fields)
    assert response.status_code == 403


@pytest.mark.parametrize("path", ALL_POSTS)
def test_form_post_with_the_attackers_own_token_is_refused(client: TestClient, path: str) -> None:
    # The attacker fetched a form of their own: a token, but not the victim's cookie.
    attackers = form_token(client.get("/register"))
    client.cookies.clear()
    client.get("/forgot-password")  # the victim's own form cookie, a different value
    response = post_form(client, path, {"csrf_token": attackers, "email": "ada@example.com"})
    assert response.status_code == 403


@pytest.mark.parametrize("path", ALL_POSTS)
def test_foreign_origin_form_post_is_refused_even_with_a_token_pair(
    client: TestClient, path: str
) -> None:
    token = form_token(client.get("/register"))
    response = post_form(
        client, path, {"csrf_token": token, "email": "ada@example.com"}, headers={"Origin": EVIL}
    )
    assert response.status_code == 403


def test_forged_sign_up_post_creates_no_account(client: TestClient) -> None:
    post_form(client, "/register", {"email": "ada@example.com", "password": PASSWORD})
    register(client)  # 201: the forged post created nothing


def test_json_post_to_a_form_page_is_refused_without_creating_anything(
    client: TestClient,
) -> None:
    response = client.post("/register", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 415
    register(client)


# sign-up --------------------------------------------------------------------------------


def test_sign_up_without_verification_redirects_to_sign_in(make_client: MakeClient) -> None:
    client = make_client(email_verification="none")
    response = submit(client, "/register", email="ada@example.com", password=PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    login(client)


def test_sign_up_with_optional_verification_says_a_mail_was_sent(
    make_client: MakeClient,
) -> None:
    client = make_client(email_verification="optional")
    response = submit(client, "/register", email="ada@example.com", password=PASSWORD)
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert "ada@example.com" in response.text
    login(client)


def test_sign_up_with_a_taken_address_is_409_under_optional(client: TestClient) -> None:
    register(client)
    response = submit(client, "/register", email="ada@example.com", password=PASSWORD)
    assert response.status_code == 409
    assert "already has an account" in response.text
    assert 'id="register-form"' in response.text
    assert PASSWORD not in response.text


def test_sign_up_under_mandatory_answers_alike_for_a_new_and_a_taken_own_address(
    make_client: MakeClient,
) -> None:
    client = make_client(email_verification="mandatory")
    new = submit(client, "/register", email="ada@example.com", password=PASSWORD)
    taken = submit(client, "/register", email="ada@example.com", password="another passphrase")
    assert new.status_code == taken.status_code == 200
    assert new.text == taken.text


def test_sign_up_with_a_weak_password_shows_the_problem_and_keeps_the_own_address(
    client: TestClient,
) -> None:
    response = submit(client, "/register", email="ada@example.com", password="short")
    assert response.status_code == 422
    assert 'id="form-error"' in response.text
    assert 'value="ada@example.com"' in response.text
    register(client)  # nothing was created


def test_sign_up_posts_over_the_ip_limit_are_429(make_client: MakeClient) -> None:
    client = make_client(register_ip_limit="2")
    for n in range(2):
        submit(client, "/register", email=f"user{n}@example.com", password=PASSWORD)
    response = submit(client, "/register", email="user9@example.com", password=PASSWORD)
    assert response.status_code == 429
    assert "Too many" in response.text
    assert int(response.headers["retry-after"]) > 0


# forgotten password ------------------------------------------------------------------------


def test_forgot_password_answers_alike_for_a_known_and_an_unknown_own_address(
    client: TestClient,
) -> None:
    register(client)
    known = submit(client, "/forgot-password", email="ada@example.com")
    unknown = submit(client, "/forgot-password", email="bob@example.com")
    assert known.status_code == unknown.status_code == 200
    assert "If an account exists" in known.text
    assert known.text.replace("ada@example.com", "X") == unknown.text.replace(
        "bob@example.com", "X"
    )


# link tokens: out of the URL, into a cookie ------------------------------------------------


@pytest.mark.parametrize(("path", "cookie", "max_age"), LINK_PAGES)
def test_link_token_in_the_url_is_moved_to_a_page_scoped_cookie(
    client: TestClient, path: str, cookie: str, max_age: int
) -> None:
    token = "T" * 43
    response = client.get(f"{path}?token={token}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == path
    assert token not in response.headers["location"]
    assert response.headers["referrer-policy"] == "no-referrer"
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{cookie}={token};")
    flags = {part.strip().split("=")[0].lower(): part for part in set_cookie.split(";")[1:]}
    assert "httponly" in flags
    assert "secure" in flags
    assert flags["samesite"].strip().lower() == "samesite=lax"
    assert flags["path"].strip() == f"Path={path}"
    assert 0 < int(flags["max-age"].split("=")[1]) <= max_age


@pytest.mark.parametrize(("path", "cookie", "max_age"), LINK_PAGES)
@pytest.mark.parametrize("token", ["a;b=c", "x" * 129, "", "ü", "a b"])
def test_link_token_of_a_shape_never_issued_is_not_written_into_a_cookie(
    client: TestClient, path: str, cookie: str, max_age: int, token: str
) -> None:
    response = client.get(path, params={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == path
    assert not response.cookies.get(cookie)


@pytest.mark.parametrize(("path", "cookie", "max_age"), LINK_PAGES)
def test_page_without_a_link_cookie_shows_the_expired_page(
    client: TestClient, path: str, cookie: str, max_age: int
) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert "expired or was already used" in page.text
    assert "<form" not in page.text


@pytest.mark.parametrize(("path", "cookie", "max_age"), LINK_PAGES)
def test_unknown_link_token_shows_the_expired_page(
    client: TestClient, path: str, cookie: str, max_age: int
) -> None:
    page = client.get(f"{path}?token={'A' * 43}")  # follows the 303 with the cookie
    assert page.url.path == path
    assert "expired or was already used" in page.text


@pytest.mark.parametrize(("path", "cookie", "max_age"), LINK_PAGES)
def test_form_post_without_a_link_cookie_is_400_with_the_expired_page(
    client: TestClient, path: str, cookie: str, max_age: int
) -> None:
    token = form_token(client.get("/forgot-password"))
    response = post_form(client, path, {"csrf_token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert "expired or was already used" in response.text


def test_reset_expired_page_links_to_a_new_request(client: TestClient) -> None:
    page = client.get("/reset-password")
    assert 'href="/forgot-password"' in page.text


# the account page ---------------------------------------------------------------------------


def test_account_page_names_the_device_and_keeps_the_raw_agent_as_a_tooltip(
    client: TestClient,
) -> None:
    register(client)
    client.headers["User-Agent"] = CHROME_LINUX
    login(client)
    page = client.get("/account")
    assert "Chrome 156 on Linux" in page.text
    assert f'title="{CHROME_LINUX}"' in page.text


def test_hostile_user_agent_is_escaped_on_the_account_page(client: TestClient) -> None:
    register(client)
    agent = '"><script>alert(1)</script>'
    client.headers["User-Agent"] = agent
    login(client)
    page = client.get("/account")
    assert agent not in page.text
    assert "<script>alert(1)" not in page.text
    assert "Unknown device" in page.text


def test_account_page_offers_address_change_and_deletion(client: TestClient) -> None:
    register(client)
    login(client)
    page = client.get("/account")
    assert 'id="email-form"' in page.text
    assert 'id="delete-form"' in page.text
    assert 'id="email-unverified"' in page.text
    assert 'id="resend-verification"' in page.text


# the links mail carries, end to end over real mail -------------------------------------------


def test_sign_up_page_mail_link_verifies_the_address_through_the_confirm_button(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    assert submit(client, "/register", email=email, password=PASSWORD).status_code == 200
    (message,) = smtp_server.wait_for(email)
    page = open_link(client, link_in(message))
    assert page.status_code == 200
    assert 'id="verify-form"' in page.text
    done = post_form(client, "/verify-email", {"csrf_token": form_token(page)})
    assert done.status_code == 200
    assert "Address verified" in done.text
    assert not done.cookies.get(VERIFY_COOKIE)  # the cookie is cleared with the link used
    login(client, email)
    assert client.get("/auth/me").json()["email_verified"] is True
    assert 'id="email-verified"' in client.get("/account").text


def test_used_verification_link_shows_the_expired_page_the_second_time(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    link = link_in(smtp_server.wait_for(email)[0])
    page = open_link(client, link)
    post_form(client, "/verify-email", {"csrf_token": form_token(page)})
    again = open_link(client, link)
    assert "expired or was already used" in again.text
    assert "<form" not in again.text


def test_mail_scanner_prefetching_the_link_does_not_use_it(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    link = link_in(smtp_server.wait_for(email)[0])
    for _ in range(3):  # a scanner's GETs, with and without its cookie
        open_link(client, link)
        client.cookies.clear()
    page = open_link(client, link)
    done = post_form(client, "/verify-email", {"csrf_token": form_token(page)})
    assert "Address verified" in done.text


def test_reset_from_the_mail_link_sets_the_new_password_and_the_old_one_stops_working(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    assert "If an account exists" in submit(client, "/forgot-password", email=email).text
    (message,) = smtp_server.wait_for(email)
    page = open_link(client, link_in(message))
    assert 'id="reset-form"' in page.text

    weak = post_form(
        client, "/reset-password", {"csrf_token": form_token(page), "new_password": "x"}
    )
    assert weak.status_code == 422
    assert 'id="reset-form"' in weak.text  # the link stays valid: the form again
    done = post_form(
        client, "/reset-password", {"csrf_token": form_token(weak), "new_password": NEW_PASSWORD}
    )
    assert done.status_code == 200
    assert 'href="/login"' in done.text
    assert "Sign in with your new password" in done.text

    old = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    login(client, email, NEW_PASSWORD)
    assert "expired or was already used" in open_link(client, link_in(message)).text


def test_link_tokens_never_appear_in_a_page_body_url_or_location(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    record = Recorder()
    email = own_address()
    record(submit(client, "/register", email=email, password=PASSWORD))
    (verify_mail,) = smtp_server.wait_for(email)
    page = open_link(client, link_in(verify_mail), record)
    record(post_form(client, "/verify-email", {"csrf_token": form_token(page)}))
    record(open_link(client, link_in(verify_mail)))  # used: the expired page

    record(submit(client, "/forgot-password", email=email))
    (_, reset_mail) = smtp_server.wait_for(email, count=2)
    page = open_link(client, link_in(reset_mail), record)
    fields = {"csrf_token": form_token(page), "new_password": "short"}
    page = record(post_form(client, "/reset-password", fields))
    fields = {"csrf_token": form_token(page), "new_password": NEW_PASSWORD}
    record(post_form(client, "/reset-password", fields))

    for message in (verify_mail, reset_mail):
        record.assert_never_shown(link_token(message))


def test_verification_token_is_refused_by_the_reset_page(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    page = open_link(client, f"/reset-password?token={token}")
    assert "expired or was already used" in page.text
    # Forged straight into the reset page's cookie and posted: still refused.
    client.cookies.set(RESET_COOKIE, token, path="/reset-password")
    csrf = form_token(client.get("/forgot-password"))
    response = post_form(
        client, "/reset-password", {"csrf_token": csrf, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 400
    login(client, email)  # the password did not change
    # ...and the verification link still works where it belongs.
    page = open_link(client, f"/verify-email?token={token}")
    assert 'id="verify-form"' in page.text


def test_reset_token_is_refused_by_the_verification_page(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    submit(client, "/forgot-password", email=email)
    token = link_token(smtp_server.wait_for(email)[0])
    assert "expired or was already used" in open_link(client, f"/verify-email?token={token}").text
    client.cookies.set(VERIFY_COOKIE, token, path="/verify-email")
    csrf = form_token(client.get("/forgot-password"))
    assert post_form(client, "/verify-email", {"csrf_token": csrf}).status_code == 400


def test_expired_reset_link_shows_the_expired_page(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer, clock: FakeClock
) -> None:
    client = mail_client(email_verification="none", password_reset_ttl="600")
    email = own_address()
    register(client, email)
    submit(client, "/forgot-password", email=email)
    link = link_in(smtp_server.wait_for(email)[0])
    page = open_link(client, link)
    assert 'id="reset-form"' in page.text
    clock.advance(601)
    assert "expired or was already used" in client.get("/reset-password").text
    fields = {"csrf_token": form_token(page), "new_password": NEW_PASSWORD}
    response = post_form(client, "/reset-password", fields)
    assert response.status_code == 400
    assert 'href="/forgot-password"' in response.text


def test_address_change_link_is_confirmed_on_the_verification_page(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    old, new = own_address("old"), own_address("new")
    register(client, old)
    csrf = login(client, old)
    response = client.post(
        "/auth/email/change",
        json={"new_email": new, "current_password": PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 202, response.text
    page = open_link(client, link_in(smtp_server.wait_for(new)[0]))
    done = post_form(client, "/verify-email", {"csrf_token": form_token(page)})
    assert done.status_code == 200
    assert new in done.text

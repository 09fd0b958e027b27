"""Account flows over real mail (DESIGN §3.2): verification, reset, e-mail change and
deletion, each driven through the HTTP API with the links the mail carried.

Mail goes to a real SMTP server on loopback (aiosmtpd, tests/smtp_server.py); each
test writes to addresses of its own, so the shared server keeps them apart.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import (
    BASE_URL,
    PASSWORD,
    FakeClock,
    bearer,
    bearer_me_status,
    login,
    token_login,
)
from tests.servers import Backend
from tests.smtp_server import (
    SmtpServer,
    link_in,
    link_token,
    mail_with_link,
    own_address,
    text_body,
)

NEW_PASSWORD = "a brand new passphrase"


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` (mail work runs after the answer); its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def register(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    response = client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def verify(client: TestClient, token: str) -> Any:
    return client.post("/auth/email/verify", json={"token": token})


def reset(client: TestClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return client.post("/auth/password/reset", json={"token": token, "new_password": password})


def forgot(client: TestClient, email: str) -> Any:
    return client.post("/auth/password/forgot", json={"email": email})


# verification ----------------------------------------------------------------


def test_registration_mails_a_link_that_verifies_the_own_address(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    user = register(client, email)
    login(client, email)
    assert client.get("/auth/me").json()["email_verified"] is False
    (message,) = smtp_server.wait_for(email)
    assert message["To"] == email
    assert link_in(message).startswith(f"{BASE_URL}/verify-email?token=")
    answer = verify(client, link_token(message))
    assert answer.status_code == 200
    assert answer.json() == {"id": user["id"], "email": email, "email_verified": True}
    assert client.get("/auth/me").json()["email_verified"] is True


def test_a_used_verification_link_is_refused_the_second_time(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    assert verify(client, token).status_code == 200
    second = verify(client, token)
    assert second.status_code == 400
    assert second.headers["content-type"].startswith("application/problem+json")


def test_an_expired_verification_link_is_refused(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer, clock: FakeClock
) -> None:
    client = mail_client(email_verify_ttl="600")
    email = own_address()
    register(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    clock.advance(601)
    assert verify(client, token).status_code == 400
    login(client, email)
    assert client.get("/auth/me").json()["email_verified"] is False


@pytest.mark.parametrize(
    "forged",
    ["", "x", secrets.token_urlsafe(32), "A" * 5000, "token with spaces", "\u0000", "é" * 40],
)
def test_a_forged_verification_token_of_any_shape_is_400(
    mail_client: Callable[..., TestClient], forged: str
) -> None:
    answer = verify(mail_client(), forged)
    assert answer.status_code == 400
    assert forged not in answer.text or forged in ("", "x")


@pytest.mark.parametrize("body", [{}, {"token": 5}, {"token": None}, {"token": ["a"]}])
def test_a_missing_or_non_string_token_is_422(
    mail_client: Callable[..., TestClient], body: dict[str, Any]
) -> None:
    assert mail_client().post("/auth/email/verify", json=body).status_code == 422


def test_a_verification_token_is_refused_for_a_reset_and_a_reset_token_for_verification(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    verify_token = link_token(smtp_server.wait_for(email)[0])
    assert forgot(client, email).status_code == 202
    reset_token = link_token(mail_with_link(smtp_server.wait_for(email, 2), "/reset-password"))
    assert reset(client, verify_token).status_code == 400
    assert verify(client, reset_token).status_code == 400
    # Each still works for its own purpose: the refusals consumed nothing.
    assert verify(client, verify_token).status_code == 200
    assert reset(client, reset_token).status_code == 204


def test_resend_mails_a_new_link_and_the_older_one_still_works(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    answer = client.post("/auth/email/resend", json={"email": email})
    assert answer.status_code == 202
    assert answer.json() == {"status": "sent_if_exists"}
    first, second = smtp_server.wait_for(email, 2)
    assert link_token(first) != link_token(second)
    assert verify(client, link_token(first)).status_code == 200
    # Verified: the newer link has nothing left to do.
    assert verify(client, link_token(second)).status_code == 400


def test_no_mail_and_no_verification_when_verification_is_off(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    assert client.post("/auth/email/resend", json={"email": email}).status_code == 202
    login(client, email)
    assert client.get("/auth/me").status_code == 200
    forgot(client, own_address("probe"))  # something to wait for: nothing else arrives first
    assert smtp_server.received_for(email) == []


# mandatory verification ------------------------------------------------------


def test_mandatory_sign_up_answers_the_same_for_a_new_and_a_taken_own_address(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="mandatory")
    email = own_address()
    first = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    again = client.post("/auth/register", json={"email": email, "password": "another passphrase"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"status": "verification_sent"}
    assert first.headers.get("set-cookie") is None
    # Both mails are sent after the answers, in either order.
    mails = smtp_server.wait_for(email, 2)
    with_link = [m for m in mails if "token=" in text_body(m)]
    assert len(with_link) == 1  # the verification of the new account
    (notice,) = [m for m in mails if m not in with_link]
    # The owner is told; the notice carries no link that does anything.
    assert "token=" not in notice.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_mandatory_verification_refuses_an_unverified_password_login_of_every_client(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="mandatory")
    email = own_address()
    client.post("/auth/register", json={"email": email, "password": PASSWORD})
    smtp_server.wait_for(email)
    for kind in ("web", "mobile", "api"):
        answer = client.post(
            "/auth/login", json={"email": email, "password": PASSWORD, "client": kind}
        )
        assert answer.status_code == 403
        assert answer.json()["code"] == "email_not_verified"
        assert "set-cookie" not in answer.headers
        assert "access_token" not in answer.text
    # Each refusal mailed a fresh link, within the per-address limit (3 per 900 s).
    mails = smtp_server.wait_for(email, 3)
    assert verify(client, link_token(mails[-1])).status_code == 200
    assert token_login(client, email)["token_type"] == "Bearer"


def test_a_wrong_password_for_an_unverified_address_is_the_usual_401(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="mandatory")
    email = own_address()
    client.post("/auth/register", json={"email": email, "password": PASSWORD})
    answer = client.post("/auth/login", json={"email": email, "password": "not the password"})
    assert answer.status_code == 401
    assert "code" not in answer.json()


# password reset --------------------------------------------------------------


def test_a_reset_from_the_mail_link_ends_every_credential_and_the_old_password(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    login(client, email)
    pair = token_login(client, email)
    assert forgot(client, email).json() == {"status": "sent_if_exists"}
    (message,) = smtp_server.wait_for(email)
    assert link_in(message).startswith(f"{BASE_URL}/reset-password?token=")
    assert reset(client, link_token(message)).status_code == 204
    assert client.get("/auth/me").status_code == 401  # the web session
    assert bearer_me_status(client, pair["access_token"]) == 401  # the access token
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401  # the family
    old = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    login(client, email, NEW_PASSWORD)
    assert reset(client, link_token(message)).status_code == 400  # single use


def test_a_reset_clears_the_lockout_of_the_account(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none", login_max_failures="3")
    email = own_address()
    register(client, email)
    for _ in range(3):
        client.post("/auth/login", json={"email": email, "password": "guessing wrong"})
    locked = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429
    forgot(client, email)
    assert reset(client, link_token(smtp_server.wait_for(email)[0])).status_code == 204
    login(client, email, NEW_PASSWORD)


def test_a_refused_new_password_keeps_the_reset_link_valid(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    forgot(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    assert reset(client, token, "short").status_code == 422
    assert reset(client, token, "password").status_code == 422  # a common password
    assert client.post("/auth/password/reset", json={"token": token}).status_code == 422
    assert reset(client, token).status_code == 204


def test_a_reset_link_dies_when_the_password_changes_by_another_route(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    forgot(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    csrf = login(client, email)
    changed = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert changed.status_code == 204
    assert reset(client, token, "yet another passphrase").status_code == 400
    login(client, email, NEW_PASSWORD)


def test_an_expired_reset_link_is_refused(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer, clock: FakeClock
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    forgot(client, email)
    token = link_token(smtp_server.wait_for(email)[0])
    clock.advance(1801)  # GATEPASS_PASSWORD_RESET_TTL defaults to 1800
    assert reset(client, token).status_code == 400
    login(client, email)


# e-mail change ---------------------------------------------------------------


def change_email(client: TestClient, csrf: str, new_email: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/auth/email/change",
        json={"new_email": new_email, "current_password": password},
        headers={"X-CSRF-Token": csrf},
    )


def test_an_email_change_completes_only_through_the_new_addresses_link(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    old, new = own_address("old"), own_address("new")
    user = register(client, old)
    csrf = login(client, old)
    answer = change_email(client, csrf, new)
    assert answer.status_code == 202
    assert answer.json() == {"status": "verification_sent"}
    (message,) = smtp_server.wait_for(new)
    assert client.get("/auth/me").json()["email"] == old  # nothing moved yet
    moved = verify(client, link_token(message))
    assert moved.json() == {"id": user["id"], "email": new, "email_verified": True}
    assert client.get("/auth/me").json()["email"] == new
    (notice,) = smtp_server.wait_for(old)
    assert new in text_body(notice)
    assert "token=" not in text_body(notice)
    login(client, new)
    gone = client.post("/auth/login", json={"email": old, "password": PASSWORD})
    assert gone.status_code == 401


def test_an_email_change_to_a_taken_address_answers_the_same_and_tells_its_owner(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    mine, theirs, free = own_address("mine"), own_address("theirs"), own_address("free")
    register(client, mine)
    register(client, theirs)
    csrf = login(client, mine)
    taken = change_email(client, csrf, theirs)
    fresh = change_email(client, csrf, free)
    assert taken.status_code == fresh.status_code == 202
    assert taken.json() == fresh.json()
    (notice,) = smtp_server.wait_for(theirs)
    assert "token=" not in text_body(notice)
    smtp_server.wait_for(free)
    assert client.get("/auth/me").json()["email"] == mine


def test_an_email_change_needs_the_current_password_and_csrf(
    mail_client: Callable[..., TestClient],
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    csrf = login(client, email)
    assert change_email(client, csrf, own_address(), "wrong password").status_code == 401
    forged = client.post(
        "/auth/email/change", json={"new_email": own_address(), "current_password": PASSWORD}
    )
    assert forged.status_code == 403


# deletion --------------------------------------------------------------------


def test_deleting_the_account_kills_every_credential_at_once(
    mail_client: Callable[..., TestClient],
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    web = mail_client(email_verification="none")
    login(web, email)
    pair = token_login(client, email)
    assert bearer_me_status(client, pair["access_token"]) == 200  # used just before
    deleted = client.request(
        "DELETE",
        "/auth/account",
        json={"current_password": PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert deleted.status_code == 204
    assert web.get("/auth/me").status_code == 401
    assert bearer_me_status(client, pair["access_token"]) == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401
    # The address is free at once.
    register(client, email, "a different passphrase")


def test_deleting_the_account_needs_the_current_password(
    mail_client: Callable[..., TestClient],
) -> None:
    client = mail_client(email_verification="none")
    email = own_address()
    register(client, email)
    csrf = login(client, email)
    wrong = client.request(
        "DELETE",
        "/auth/account",
        json={"current_password": "not it"},
        headers={"X-CSRF-Token": csrf},
    )
    assert wrong.status_code == 401
    no_csrf = client.request("DELETE", "/auth/account", json={"current_password": PASSWORD})
    assert no_csrf.status_code == 403
    assert client.get("/auth/me").status_code == 200
    done = client.request(
        "DELETE",
        "/auth/account",
        json={"current_password": PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert done.status_code == 204
    assert "gatepass_session" in done.headers["set-cookie"]


# from the attacker's side: enumeration, limits, leaks --------------------------


@pytest.mark.parametrize(
    ("path", "field"), [("/auth/email/resend", "email"), ("/auth/password/forgot", "email")]
)
def test_mail_routes_answer_the_same_for_known_and_unknown_addresses(
    mail_client: Callable[..., TestClient], path: str, field: str
) -> None:
    client = mail_client()
    known = own_address()
    register(client, known)
    answers = [client.post(path, json={field: e}) for e in (known, own_address("nobody"))]
    assert answers[0].status_code == answers[1].status_code == 202
    assert answers[0].content == answers[1].content
    assert dict(answers[0].headers).keys() == dict(answers[1].headers).keys()


def test_sign_up_is_limited_per_client_ip_whatever_the_outcome(
    mail_client: Callable[..., TestClient],
) -> None:
    client = mail_client(
        register_ip_limit="3", email_verification="none", trusted_proxies="127.0.0.1"
    )
    taken = own_address()
    register(client, taken)
    assert (
        client.post("/auth/register", json={"email": taken, "password": PASSWORD}).status_code
        == 409
    )
    weak = client.post("/auth/register", json={"email": own_address(), "password": "short"})
    assert weak.status_code == 422
    refused = client.post("/auth/register", json={"email": own_address(), "password": PASSWORD})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # Another client address has its own budget.
    elsewhere = mail_client(register_ip_limit="3", email_verification="none")
    assert elsewhere.post(
        "/auth/register", json={"email": own_address(), "password": PASSWORD}
    ).status_code in (201, 429)


def test_mail_requests_are_limited_per_client_ip(mail_client: Callable[..., TestClient]) -> None:
    client = mail_client(mail_ip_limit="2")
    assert forgot(client, own_address()).status_code == 202
    assert client.post("/auth/email/resend", json={"email": own_address()}).status_code == 202
    refused = forgot(client, own_address())
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers


def test_mail_beyond_the_address_limit_is_silently_not_sent(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(mail_address_limit="2", email_verification="none")
    email = own_address()
    register(client, email)
    answers = [forgot(client, email) for _ in range(4)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    smtp_server.wait_for(email, 2)
    suppressed = 'gatepass_mails_total{result="suppressed",template="reset_password"} 2.0'
    assert wait_until(lambda: suppressed in client.get("/metrics").text)
    # Mail handed over after the suppressed ones: once it has arrived, they would have.
    probe = own_address("probe")
    register(client, probe)
    forgot(client, probe)
    smtp_server.wait_for(probe)
    assert len(smtp_server.received_for(email)) == 2


def test_no_link_token_reaches_a_log_line_a_response_or_the_metrics(
    mail_client: Callable[..., TestClient],
    smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = mail_client()
    email = own_address()
    register(client, email)
    forgot(client, email)
    mails = smtp_server.wait_for(email, 2)
    verify_mail = mail_with_link(mails, "/verify-email")
    reset_mail = mail_with_link(mails, "/reset-password")
    tokens = [link_token(verify_mail), link_token(reset_mail)]
    responses = [verify(client, tokens[0]), reset(client, tokens[1]), verify(client, tokens[0])]
    responses.append(client.get("/metrics"))
    for token in tokens:
        assert all(token not in r.text for r in responses)
        assert all(token not in "".join(r.headers.values()) for r in responses)
        # "mail.log" is the receiving SMTP server's own log: the mailbox, not gatepass.
        leaks = [r.name for r in caplog.records if r.name != "mail.log" and token in r.getMessage()]
        assert leaks == []
    audit = [r.getMessage() for r in caplog.records if r.name == "gatepass.audit"]
    assert any("verified" in line for line in audit)
    assert any("password reset for user" in line for line in audit)


def test_account_events_are_counted_in_metrics(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client()
    email = own_address()
    register(client, email)
    verify(client, link_token(smtp_server.wait_for(email)[0]))
    forgot(client, email)
    reset(client, link_token(mail_with_link(smtp_server.wait_for(email, 2), "/reset-password")))
    metrics = client.get("/metrics").text
    for event in ("email_verified", "password_reset_requested", "password_reset"):
        assert f'gatepass_account_events_total{{event="{event}"}} 1.0' in metrics


def test_an_intruders_pending_email_change_dies_when_the_owner_resets_the_password(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    owner, intruder = own_address("owner"), own_address("intruder")
    register(client, owner)
    csrf = login(client, owner)  # the intruder's stolen session, and the password
    assert change_email(client, csrf, intruder).status_code == 202
    (change_mail,) = smtp_server.wait_for(intruder)
    forgot(client, owner)
    assert reset(client, link_token(smtp_server.wait_for(owner)[0])).status_code == 204
    assert verify(client, link_token(change_mail)).status_code == 400
    login(client, owner, NEW_PASSWORD)
    assert client.get("/auth/me").json()["email"] == owner


def test_a_reset_link_for_the_old_address_dies_with_an_email_change(
    mail_client: Callable[..., TestClient], smtp_server: SmtpServer
) -> None:
    client = mail_client(email_verification="none")
    old, new = own_address("old"), own_address("new")
    register(client, old)
    forgot(client, old)
    (reset_mail,) = smtp_server.wait_for(old)
    csrf = login(client, old)
    change_email(client, csrf, new)
    assert verify(client, link_token(smtp_server.wait_for(new)[0])).status_code == 200
    assert reset(client, link_token(reset_mail)).status_code == 400


# every backend -----------------------------------------------------------------


def test_reset_and_deletion_end_every_credential_on_every_backend(
    make_client: Callable[..., TestClient], smtp_server: SmtpServer, backend: Backend
) -> None:
    """SQLite; PostgreSQL; PostgreSQL + Redis (sessions and counters there); and
    PostgreSQL + Redis Cluster."""
    client = make_client(smtp_url=smtp_server.url, email_verification="none", **backend.env())
    email = own_address()
    register(client, email)
    login(client, email)
    pair = token_login(client, email)
    forgot(client, email)
    assert reset(client, link_token(smtp_server.wait_for(email)[0])).status_code == 204
    assert client.get("/auth/me").status_code == 401
    assert bearer_me_status(client, pair["access_token"]) == 401
    csrf = login(client, email, NEW_PASSWORD)
    pair = token_login(client, email, NEW_PASSWORD)
    deleted = client.request(
        "DELETE",
        "/auth/account",
        json={"current_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert deleted.status_code == 204
    assert bearer_me_status(client, pair["access_token"]) == 401
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401
    register(client, email)

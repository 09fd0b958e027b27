"""Account mail through a real ``gatepass serve`` process: the embedded default
writes mail to the outbox (``make run`` needs no mail server), and with
``GATEPASS_SMTP_URL`` the same flows reach a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import stat
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e_support import running_server
from tests.smtp_server import SmtpServer, link_in, mail_with_link

pytestmark = pytest.mark.e2e

OUTBOX_WAIT_SECONDS = 10.0


def token_of(message: EmailMessage) -> str:
    return parse_qs(urlsplit(link_in(message)).query)["token"][0]


def wait_for_outbox(outbox: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + OUTBOX_WAIT_SECONDS
    while time.monotonic() < deadline:
        files = sorted(outbox.glob("*.eml")) if outbox.is_dir() else []
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise AssertionError(f"{count} mail file(s) expected in {outbox}")


def read_mail(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_without_smtp_mail_lands_in_the_outbox_and_its_link_verifies(tmp_path: Path) -> None:
    with running_server(tmp_path, {"GATEPASS_DEV": "1"}) as server:
        http = httpx.Client(base_url=server.url, headers={"Origin": server.url})
        created = http.post(
            "/auth/register", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert created.status_code == 201
        outbox = tmp_path / ".gatepass" / "outbox"
        (path,) = wait_for_outbox(outbox, 1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        message = read_mail(path)
        assert message["To"] == "ada@example.com"
        token = token_of(message)
        assert link_in(message).startswith(f"{server.url}/verify-email?token=")
        verified = http.post("/auth/email/verify", json={"token": token})
        assert verified.json()["email_verified"] is True
        logs = server.logs()
        assert path.name in logs  # the operator learns where the mail is...
        assert token not in logs  # ...and never its link


def test_with_smtp_a_forgotten_password_is_reset_from_the_mail(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    env = {"GATEPASS_DEV": "1", "GATEPASS_SMTP_URL": smtp_server.url}
    with running_server(tmp_path, env) as server:
        http = httpx.Client(base_url=server.url, headers={"Origin": server.url})
        address = f"reset-{tmp_path.name}@example.com".lower()
        http.post("/auth/register", json={"email": address, "password": PASSWORD})
        login = http.post(
            "/auth/login", json={"email": address, "password": PASSWORD, "client": "mobile"}
        )
        pair = login.json()
        assert http.post("/auth/password/forgot", json={"email": address}).status_code == 202
        mails = smtp_server.wait_for(address, 2)
        verification = mail_with_link(mails, "/verify-email")
        reset_mail = mail_with_link(mails, "/reset-password")
        reset = http.post(
            "/auth/password/reset",
            json={"token": token_of(reset_mail), "new_password": "an entirely new one"},
        )
        assert reset.status_code == 204
        me = http.get("/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 401
        old = http.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert old.status_code == 401
        assert token_of(reset_mail) not in server.logs()
        assert token_of(verification) not in server.logs()


def test_a_link_followed_to_the_server_leaves_no_token_in_its_access_log(tmp_path: Path) -> None:
    token = "Secr3tLinkToken-" + tmp_path.name
    with running_server(tmp_path, {"GATEPASS_DEV": "1"}) as server:
        for path in ("/reset-password", "/verify-email", "/nowhere"):
            for query in (f"token={token}", f"%74oken={token}", f"a=1&token={token}"):
                httpx.get(f"{server.url}{path}?{query}")
        httpx.get(f"{server.url}/healthz")
        deadline = time.monotonic() + OUTBOX_WAIT_SECONDS
        while "/healthz" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        logs = server.logs()
    assert "/reset-password?" in logs  # the requests were logged...
    assert token not in logs  # ...without their query strings

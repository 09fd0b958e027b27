"""Outgoing mail (gatepass.mail) against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.mail import Mailer
from gatepass.metrics import Metrics
from gatepass.passwords import PasswordHasher
from tests.conftest import FakeClock
from tests.smtp_server import (
    PASSWORD,
    USERNAME,
    SmtpServer,
    free_port,
    html_body,
    link_in,
    text_body,
)

#: Retries without waiting: the tests count attempts, not seconds.
NO_WAIT = (0.01, 0.01, 0.01)

MakeSettings = Callable[..., Settings]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def recipient() -> str:
    """An address no other test mails to (the servers are shared by the session)."""
    return f"user-{secrets.token_hex(6)}@example.com"


def verify_context() -> dict[str, str]:
    token = secrets.token_urlsafe(32)
    return {"link": f"https://testserver/verify-email?token={token}", "expires_in": "24 hours"}


def mails_counted(metrics: Metrics, template: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "gatepass_mails_total", {"template": template, "result": result}
    )
    return value or 0.0


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


@pytest.fixture
async def make_mailer() -> AsyncIterator[Callable[..., Mailer]]:
    """Started mailers, closed after the test."""
    mailers: list[Mailer] = []

    def make(settings: Settings, metrics: Metrics | None = None, **kwargs: object) -> Mailer:
        mailer = Mailer(settings, metrics or Metrics(), **kwargs)  # type: ignore[arg-type]
        mailers.append(mailer)
        return mailer

    yield make
    for mailer in mailers:
        await mailer.close()


# --- delivery over each scheme ---------------------------------------------------------


@pytest.mark.anyio
async def test_mail_is_delivered_over_plain_smtp_as_text_and_html(
    smtp_server: SmtpServer, make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    settings = make_settings(smtp_url=smtp_server.url, mail_from="accounts@example.org")
    metrics = Metrics()
    mailer = make_mailer(settings, metrics=metrics)
    await mailer.start()
    to, context = recipient(), verify_context()

    mailer.submit(to, "verify_email", context)
    await mailer.drain()

    [message] = smtp_server.wait_for(to)
    assert message["From"] == "accounts@example.org"
    assert message["To"] == to
    assert message["Subject"] == "Confirm your e-mail address for testserver"
    assert message["Date"] is not None
    assert message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert link_in(message) == context["link"]
    assert "24 hours" in text_body(message)
    assert f'href="{context["link"]}"' in html_body(message)
    assert mails_counted(metrics, "verify_email", "sent") == 1


@pytest.mark.anyio
async def test_mail_is_delivered_over_smtps_with_percent_encoded_credentials(
    smtps_server: SmtpServer, make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    assert "%40" in smtps_server.url  # the password's "@" travels encoded
    mailer = make_mailer(
        make_settings(smtp_url=smtps_server.url), ssl_context=smtps_server.client_ssl_context()
    )
    await mailer.start()
    to, context = recipient(), verify_context()

    mailer.submit(to, "reset_password", context)
    await mailer.drain()

    [message] = smtps_server.wait_for(to)
    assert link_in(message) == context["link"]
    assert message["Subject"] == "Reset your password for testserver"


@pytest.mark.anyio
async def test_mail_is_delivered_over_starttls_with_credentials(
    smtp_starttls_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
) -> None:
    mailer = make_mailer(
        make_settings(smtp_url=smtp_starttls_server.url),
        ssl_context=smtp_starttls_server.client_ssl_context(),
    )
    await mailer.start()
    to = recipient()

    mailer.submit(to, "email_changed", {"new_email": "new@example.com"})
    await mailer.drain()

    [message] = smtp_starttls_server.wait_for(to)
    assert "new@example.com" in text_body(message)
    assert "token=" not in message.as_string()


@pytest.mark.anyio
async def test_wrong_smtp_password_fails_once_and_is_never_logged(
    smtps_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-password-Zq81"
    url = f"smtps://{USERNAME}:{wrong}@{smtps_server.host}:{smtps_server.port}"
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=url),
        ssl_context=smtps_server.client_ssl_context(),
        retry_delays=NO_WAIT,
        metrics=metrics,
    )
    await mailer.start()
    to = recipient()

    with caplog.at_level(logging.INFO, logger="gatepass.mail"):
        mailer.submit(to, "verify_email", verify_context())
        await mailer.drain()

    assert smtps_server.received_for(to) == []
    assert mails_counted(metrics, "verify_email", "failed") == 1
    assert "SMTPAuthenticationError 535" in log_text(caplog)
    assert "retrying" not in log_text(caplog)  # 5xx: permanent
    assert wrong not in log_text(caplog)
    assert PASSWORD not in log_text(caplog)


@pytest.mark.anyio
async def test_plain_smtp_never_attempts_starttls(
    smtp_tls_cert: tuple[Path, Path],
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
) -> None:
    """smtp:// means plain, as configured: a local relay that offers STARTTLS with a
    certificate nobody trusts still gets the mail (an opportunistic upgrade would
    fail verification and lose every mail)."""
    relay = SmtpServer("offers_starttls", cert=smtp_tls_cert)
    relay.start()
    try:
        metrics = Metrics()
        mailer = make_mailer(make_settings(smtp_url=relay.url), metrics=metrics)
        await mailer.start()
        to = recipient()

        mailer.submit(to, "verify_email", verify_context())
        await mailer.drain()

        assert len(relay.wait_for(to)) == 1
        assert mails_counted(metrics, "verify_email", "sent") == 1
    finally:
        relay.stop()


# --- attacks on the connection -----------------------------------------------------------


@pytest.mark.anyio
async def test_starttls_stripped_by_the_server_is_refused(
    smtp_server: SmtpServer, make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    """smtp+starttls:// never falls back to plain text when STARTTLS is not offered."""
    url = f"smtp+starttls://{smtp_server.host}:{smtp_server.port}"
    metrics = Metrics()
    mailer = make_mailer(make_settings(smtp_url=url), retry_delays=NO_WAIT, metrics=metrics)
    await mailer.start()
    to = recipient()

    mailer.submit(to, "verify_email", verify_context())
    await mailer.drain()

    assert smtp_server.attempts[to] == 0  # nothing was sent in the clear
    assert mails_counted(metrics, "verify_email", "failed") == 1


@pytest.mark.anyio
async def test_untrusted_server_certificate_is_refused(
    smtps_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server with a certificate the system does not trust (a man in the middle)
    gets no mail and no password; the failure is not retried."""
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtps_server.url), retry_delays=NO_WAIT, metrics=metrics
    )
    await mailer.start()
    to = recipient()

    with caplog.at_level(logging.INFO, logger="gatepass.mail"):
        mailer.submit(to, "verify_email", verify_context())
        await mailer.drain()

    assert smtps_server.attempts[to] == 0
    assert mails_counted(metrics, "verify_email", "failed") == 1
    assert "retrying" not in log_text(caplog)


# --- without a mail server: the outbox -----------------------------------------------------


@pytest.mark.anyio
async def test_without_smtp_url_mail_is_an_eml_file_only_its_owner_can_read(
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    metrics = Metrics()
    mailer = make_mailer(settings, metrics=metrics)
    await mailer.start()
    to, context = recipient(), verify_context()

    with caplog.at_level(logging.DEBUG, logger="gatepass"):
        mailer.submit(to, "verify_email", context)
        await mailer.drain()

    outbox = settings.data_dir / "outbox"
    files = list(outbox.iterdir())
    assert [f.suffix for f in files] == [".eml"]  # no temporary file left behind
    [path] = files
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    from email import message_from_bytes, policy
    from email.message import EmailMessage

    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == to
    assert link_in(message) == context["link"]
    # The link stays on one line of the file, so a developer can copy it.
    assert context["link"].encode() in path.read_bytes()

    [line] = [r.getMessage() for r in caplog.records if r.name == "gatepass.mail"]
    assert path.name in line
    assert context["link"] not in log_text(caplog)
    assert "token" not in log_text(caplog)
    assert "confirm" not in log_text(caplog).lower()  # nothing of the body
    assert mails_counted(metrics, "verify_email", "sent") == 1


@pytest.mark.anyio
async def test_outbox_folder_made_readable_by_others_is_closed_again(
    make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    settings = make_settings()
    outbox = settings.data_dir / "outbox"
    outbox.mkdir(parents=True)
    outbox.chmod(0o755)
    mailer = make_mailer(settings)
    await mailer.start()

    mailer.submit(recipient(), "verify_email", verify_context())
    await mailer.drain()

    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700


# --- templates -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_user_template_overrides_the_bundled_one_of_its_name(
    tmp_path: Path,
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
) -> None:
    own = tmp_path / "templates" / "mail"
    own.mkdir(parents=True)
    (own / "verify_email.txt").write_text("Welcome to {{ site }}! Confirm: {{ link }}\n")
    (own / "verify_email.subject.txt").write_text("  Welcome aboard  \n")
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url, mail_template_dir=str(tmp_path / "templates"))
    )
    await mailer.start()
    to, context = recipient(), verify_context()

    mailer.submit(to, "verify_email", context)
    await mailer.drain()

    [message] = smtp_server.wait_for(to)
    assert message["Subject"] == "Welcome aboard"
    assert text_body(message) == f"Welcome to testserver! Confirm: {context['link']}\n"
    # The HTML part was not overridden: still the bundled one.
    assert "Confirm my address" in html_body(message)


@pytest.mark.anyio
async def test_markup_in_a_context_value_is_escaped_in_the_html_part(
    make_settings: MakeSettings,
) -> None:
    mailer = Mailer(make_settings(), Metrics())
    evil = '<a href="https://evil.example">x</a>@example.com'

    message = mailer.render(recipient(), "email_changed", {"new_email": evil})

    assert evil not in html_body(message)
    assert "&lt;a href=&#34;https://evil.example&#34;&gt;" in html_body(message)
    assert evil in text_body(message)  # plain text needs no escaping


def test_every_bundled_template_renders_and_notices_carry_no_link(
    make_settings: MakeSettings,
) -> None:
    mailer = Mailer(make_settings(), Metrics())
    link = "https://testserver/verify-email?token=T0KEN"
    contexts = {
        "verify_email": {"link": link, "expires_in": "24 hours"},
        "reset_password": {"link": link, "expires_in": "30 minutes"},
        "email_change": {"link": link, "expires_in": "24 hours", "new_email": "n@example.com"},
        "email_changed": {"new_email": "n@example.com"},
        "signup_existing": {
            "login_url": "https://testserver/login",
            "forgot_url": "https://testserver/forgot-password",
        },
        "email_change_existing": {},
    }
    for name, context in contexts.items():
        message = mailer.render("ada@example.com", name, context)
        assert message["Subject"], name
        text, html = text_body(message), html_body(message)
        if "link" in context:
            assert link_in(message) == link
            assert context["expires_in"] in text
            assert link in html
        else:
            assert "token=" not in text + html, name


@pytest.mark.anyio
async def test_a_broken_template_fails_that_mail_and_the_next_one_is_sent(
    tmp_path: Path,
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = tmp_path / "mail"
    own.mkdir()
    # Fails while rendering, with an error text that quotes the link.
    (own / "reset_password.txt").write_text("{{ {}[link] }}\n")
    (own / "email_changed.txt").write_text("{% if %}\n")  # does not compile
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url, mail_template_dir=str(tmp_path)), metrics=metrics
    )
    await mailer.start()
    to, context = recipient(), verify_context()

    with caplog.at_level(logging.WARNING, logger="gatepass.mail"):
        mailer.submit(to, "reset_password", context)
        mailer.submit(to, "email_changed", {"new_email": "n@example.com"})
        mailer.submit(to, "verify_email", context)
        await mailer.drain()

    [message] = smtp_server.wait_for(to)
    assert message["Subject"].startswith("Confirm your e-mail address")
    assert mails_counted(metrics, "reset_password", "failed") == 1
    assert mails_counted(metrics, "email_changed", "failed") == 1
    assert "email_changed.txt:1" in log_text(caplog)
    # Jinja's error quotes the link; the log names only the error's class.
    assert "UndefinedError" in log_text(caplog)
    assert context["link"] not in log_text(caplog)


# --- header injection ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_header_injection_in_the_recipient_is_refused(
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    victim, attacker = recipient(), recipient()
    metrics = Metrics()
    mailer = make_mailer(make_settings(smtp_url=smtp_server.url), metrics=metrics)
    await mailer.start()
    for injected in (
        f"{victim}\r\nBcc: {attacker}",
        f"{victim}\nBcc: {attacker}",
        f"{victim}, {attacker}",
        f"Victim <{victim}>",
    ):
        with pytest.raises(ValueError, match="one bare e-mail address"):
            mailer.render(injected, "verify_email", verify_context())
        with caplog.at_level(logging.WARNING, logger="gatepass.mail"):
            mailer.submit(injected, "verify_email", verify_context())  # refused, not raised
    await mailer.drain()

    assert "refused: the recipient must be one bare e-mail address" in log_text(caplog)
    assert attacker not in log_text(caplog)

    assert smtp_server.attempts[victim] == 0
    assert smtp_server.attempts[attacker] == 0
    assert mails_counted(metrics, "verify_email", "failed") == 4


def test_header_injection_through_the_subject_is_refused(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    own = tmp_path / "mail"
    own.mkdir()
    (own / "email_changed.subject.txt").write_text("Now {{ new_email }}\n")
    mailer = Mailer(make_settings(mail_template_dir=str(tmp_path)), Metrics())

    with pytest.raises(ValueError, match="subject"):
        mailer.render("ada@example.com", "email_changed", {"new_email": "x\r\nBcc: e@evil.example"})


def test_template_name_with_a_path_is_refused(make_settings: MakeSettings) -> None:
    mailer = Mailer(make_settings(), Metrics())
    with pytest.raises(ValueError, match="template name"):
        mailer.render("ada@example.com", "../../etc/passwd", {})


# --- the queue -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_mail_beyond_the_queue_limit_is_dropped_logged_and_counted(
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url, mail_queue_limit="1"), metrics=metrics
    )
    first, second = recipient(), recipient()
    context = verify_context()

    with caplog.at_level(logging.WARNING, logger="gatepass.mail"):
        # Not started yet: nothing takes mail off the queue.
        mailer.submit(first, "verify_email", context)
        mailer.submit(second, "verify_email", context)
    await mailer.start()
    await mailer.drain()

    assert len(smtp_server.wait_for(first)) == 1
    assert smtp_server.attempts[second] == 0
    assert mails_counted(metrics, "verify_email", "dropped") == 1
    assert "dropped" in log_text(caplog)
    assert context["link"] not in log_text(caplog)
    assert 'gatepass_mails_total{result="dropped",template="verify_email"} 1.0' in (
        metrics.render().decode()
    )


@pytest.mark.anyio
async def test_submit_returns_while_the_server_is_still_receiving(
    smtp_server: SmtpServer, make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    mailer = make_mailer(make_settings(smtp_url=smtp_server.url))
    await mailer.start()
    to = recipient()
    hold = smtp_server.hold(to)
    try:
        mailer.submit(to, "verify_email", verify_context())  # a plain call, not awaited
        # The server is in the middle of this mail's DATA, and submit is long done.
        assert await asyncio.to_thread(hold.reached.wait, 10)
        assert smtp_server.received_for(to) == []
    finally:
        hold.release.set()
    await mailer.drain()
    assert len(smtp_server.wait_for(to)) == 1


@pytest.mark.anyio
async def test_mail_still_queued_at_shutdown_is_counted_as_failed(
    make_settings: MakeSettings,
) -> None:
    metrics = Metrics()
    mailer = Mailer(make_settings(), metrics)  # never started: nothing sends

    mailer.submit(recipient(), "verify_email", verify_context())
    await mailer.close()

    assert mails_counted(metrics, "verify_email", "failed") == 1
    assert mails_counted(metrics, "verify_email", "sent") == 0


# --- failures and retries -----------------------------------------------------------------


@pytest.mark.anyio
async def test_transient_4xx_is_retried_until_the_mail_is_sent(
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url), retry_delays=NO_WAIT, metrics=metrics
    )
    await mailer.start()
    to, context = recipient(), verify_context()
    smtp_server.refuse(to, "451 4.3.0 Try again later", times=2)

    with caplog.at_level(logging.INFO, logger="gatepass.mail"):
        mailer.submit(to, "verify_email", context)
        await mailer.drain()

    assert len(smtp_server.wait_for(to)) == 1
    assert smtp_server.attempts[to] == 3
    assert mails_counted(metrics, "verify_email", "sent") == 1
    assert mails_counted(metrics, "verify_email", "failed") == 0
    assert "451" in log_text(caplog)
    assert context["link"] not in log_text(caplog)


@pytest.mark.anyio
async def test_transient_failures_give_up_after_the_last_retry(
    smtp_server: SmtpServer, make_settings: MakeSettings, make_mailer: Callable[..., Mailer]
) -> None:
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url), retry_delays=(0.01, 0.01), metrics=metrics
    )
    await mailer.start()
    to = recipient()
    smtp_server.refuse(to, "421 4.7.0 Too busy", times=10)

    mailer.submit(to, "verify_email", verify_context())
    await mailer.drain()

    assert smtp_server.attempts[to] == 3  # the first try and two retries
    assert mails_counted(metrics, "verify_email", "failed") == 1


@pytest.mark.anyio
async def test_permanent_5xx_is_not_retried_and_is_logged_without_the_link(
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=smtp_server.url), retry_delays=NO_WAIT, metrics=metrics
    )
    await mailer.start()
    to, context = recipient(), verify_context()
    # A server that quotes what it refused: the link must not reach the log anyway.
    smtp_server.refuse(to, f"550 5.7.1 Refused {context['link']}", times=5)

    with caplog.at_level(logging.DEBUG, logger="gatepass"):
        mailer.submit(to, "verify_email", context)
        await mailer.drain()

    assert smtp_server.attempts[to] == 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "SMTPRecipientsRefused 550 5.7.1 Refused" in warning.getMessage()
    token = context["link"].rpartition("=")[2]
    assert token not in log_text(caplog)
    assert 'gatepass_mails_total{result="failed",template="verify_email"} 1.0' in (
        metrics.render().decode()
    )


@pytest.mark.anyio
async def test_server_down_is_retried_then_logged_and_counted(
    make_settings: MakeSettings,
    make_mailer: Callable[..., Mailer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nobody = free_port()  # nothing listens there
    metrics = Metrics()
    mailer = make_mailer(
        make_settings(smtp_url=f"smtp://127.0.0.1:{nobody}"),
        retry_delays=(0.01, 0.01),
        metrics=metrics,
    )
    await mailer.start()
    context = verify_context()

    with caplog.at_level(logging.INFO, logger="gatepass.mail"):
        mailer.submit(recipient(), "reset_password", context)
        await mailer.drain()

    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    assert "SMTPConnectError" in warning.getMessage()
    assert context["link"] not in log_text(caplog)
    assert 'gatepass_mails_total{result="failed",template="reset_password"} 1.0' in (
        metrics.render().decode()
    )


# --- wiring into Gatepass -------------------------------------------------------------------


@pytest.mark.anyio
async def test_gatepass_starts_its_mailer_and_close_sends_what_is_queued(
    smtp_server: SmtpServer,
    make_settings: MakeSettings,
    clock: FakeClock,
    fast_hasher: PasswordHasher,
) -> None:
    gp = await Gatepass.open(
        make_settings(smtp_url=smtp_server.url), clock=clock, hasher=fast_hasher
    )
    to = recipient()
    try:
        gp.mailer.submit(to, "email_change_existing", {})
    finally:
        await gp.close()

    [message] = smtp_server.wait_for(to)
    assert message["Subject"] == "Someone tried to use your e-mail address on testserver"
    assert mails_counted(gp.metrics, "email_change_existing", "sent") == 1


@pytest.mark.anyio
async def test_an_injected_mailer_is_the_one_gatepass_uses(
    make_settings: MakeSettings, clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    settings = make_settings()
    mailer = Mailer(settings, Metrics())
    gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher, mailer=mailer)
    try:
        assert gp.mailer is mailer
        mailer.submit(recipient(), "email_changed", {"new_email": "n@example.com"})
    finally:
        await gp.close()
    assert len(list((settings.data_dir / "outbox").glob("*.eml"))) == 1

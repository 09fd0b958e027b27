"""Outgoing mail: rendered from Jinja2 templates, sent by one background task.

A request never waits for mail. :meth:`Mailer.submit` renders the message and
puts it on a bounded queue; one task per process sends it over SMTP
(``GATEPASS_SMTP_URL``: ``smtp://``, ``smtp+starttls://`` or ``smtps://``) or,
without that setting, writes it as an ``.eml`` file to the data folder's
``outbox/``. Transient failures (connection errors, timeouts, 4xx replies) are
retried after each of ``retry_delays``; a permanent one (a 5xx reply, a refused
certificate, a server without STARTTLS) is not. Every outcome is counted in
``gatepass_mails{template, result}``; a failure is logged with its reason,
never with the message, its link or the SMTP password.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib
import jinja2

from gatepass.config import Settings
from gatepass.metrics import Metrics

logger = logging.getLogger("gatepass.mail")

#: The bundled templates: ``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html``.
BUNDLED_TEMPLATES = Path(__file__).parent / "mail_templates"
#: Where under GATEPASS_MAIL_TEMPLATE_DIR the overriding templates live.
OVERRIDE_SUBDIR = "mail"
#: The ports each scheme of GATEPASS_SMTP_URL defaults to.
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
#: One send attempt (connect, TLS, AUTH, the whole transaction) gives up after this.
ATTEMPT_TIMEOUT = 30.0
#: How long :meth:`Mailer.close` waits for queued mail before it stops the task.
CLOSE_TIMEOUT = 10.0
OUTBOX_NAME = "outbox"

# A template name is a file stem, never a path.
_TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]*")
# One bare address: no display name, no whitespace (CR/LF included), nothing that
# separates addresses or starts a comment.
_ADDRESS = re.compile(r"[^@\s<>()\[\]\",;:\\]+@[^@\s<>()\[\]\",;:\\]+")
# A reply may quote what it refused; these never reach a log line.
_TOKEN_PARAM = re.compile(r"token=\S*", re.IGNORECASE)
_REASON_LENGTH = 120
# Lines up to 998 octets are legal (RFC 5322); 7bit keeps a link in the outbox file
# copyable instead of broken by quoted-printable soft line breaks.
_MAX_7BIT_LINE = 998
# Context values shorter than this are words ("24 hours"), not secrets worth redacting.
_MIN_REDACTED = 8


@dataclass(frozen=True, slots=True)
class _Outgoing:
    template: str
    message: EmailMessage
    #: Context values a failure reason must not repeat (the link above all).
    redact: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool

    @classmethod
    def from_url(cls, url: str) -> _SmtpTarget:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            # Settings validated this already; the message names no part of the URL.
            raise ValueError("GATEPASS_SMTP_URL must be smtp://, smtp+starttls:// or smtps://")
        return cls(
            hostname=parts.hostname,
            port=parts.port or DEFAULT_PORTS[scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=scheme == "smtps",
            start_tls=scheme == "smtp+starttls",
        )

    def __repr__(self) -> str:  # the password stays out of every repr
        return f"_SmtpTarget({self.hostname}:{self.port}, tls={self.use_tls or self.start_tls})"


class RefusedMail(ValueError):
    """A recipient, subject or template name that could break the message's headers.

    Its text never quotes the refused value (it may be an injection attempt), so
    it is safe to log.
    """


def _check_address(to: str) -> str:
    if not _ADDRESS.fullmatch(to) or not to.isprintable():
        raise RefusedMail("the recipient must be one bare e-mail address")
    return to


def _check_header(name: str, value: str) -> str:
    if not value or not value.isprintable():
        # isprintable() is False for CR, LF and every other control character.
        raise RefusedMail(f"the {name} must be one line of printable text")
    return value


def _set_part(message: EmailMessage, text: str, subtype: str, *, alternative: bool) -> None:
    body = text if text.endswith("\n") else text + "\n"
    plain = body.isascii() and all(len(line) <= _MAX_7BIT_LINE for line in body.splitlines())
    cte = "7bit" if plain else "quoted-printable"
    if alternative:
        message.add_alternative(body, subtype=subtype, cte=cte)
    else:
        message.set_content(body, subtype=subtype, cte=cte)


def _is_transient(exc: BaseException) -> bool:
    """Whether a later attempt may succeed."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= r.code < 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    seen: BaseException | None = exc
    while seen is not None:
        # A certificate that does not verify is a configuration (or an attack), not luck.
        if isinstance(seen, ssl.SSLCertVerificationError):
            return False
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return False
    return isinstance(exc, OSError | TimeoutError)


def _reason(exc: BaseException, redact: Sequence[str]) -> str:
    """``<class> [<code>] <first line of the reply>``, short and with no secret in it."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        detail = f"{first.code} {first.message}"
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"{exc.code} {exc.message}"
    elif isinstance(exc, aiosmtplib.SMTPException):
        detail = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    else:
        # Other exceptions (a bug, a template filter) may carry any value in their text.
        detail = ""
    lines = detail.strip().splitlines()
    short = "".join(c for c in (lines[0] if lines else "") if c.isprintable())
    for value in redact:
        if len(value) >= _MIN_REDACTED:
            short = short.replace(value, "[redacted]")
    short = _TOKEN_PARAM.sub("token=[redacted]", short)[:_REASON_LENGTH]
    return f"{type(exc).__name__} {short}".rstrip()


class Mailer:
    """Renders and sends gatepass's mail without ever blocking a request.

    ``ssl_context`` replaces the system trust store for ``smtps://`` and
    ``smtp+starttls://`` (a private CA); certificates are always verified.
    ``retry_delays`` are the seconds before each retry of a transient failure.
    Call :meth:`start` on the running loop and :meth:`close` at shutdown.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        ssl_context: ssl.SSLContext | None = None,
        retry_delays: Sequence[float] = (1.0, 5.0, 30.0),
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._ssl_context = ssl_context
        self._retry_delays = tuple(retry_delays)
        url = settings.smtp_url.get_secret_value() if settings.smtp_url is not None else None
        self._smtp = _SmtpTarget.from_url(url) if url is not None else None
        self._outbox = settings.data_dir / OUTBOX_NAME
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=settings.mail_queue_limit)
        self._task: asyncio.Task[None] | None = None
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(BUNDLED_TEMPLATES)]
        if settings.mail_template_dir is not None:
            loaders.insert(0, jinja2.FileSystemLoader(settings.mail_template_dir / OVERRIDE_SUBDIR))
        self._templates = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            # A mail without its link is worse than no mail: a missing key fails loudly.
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._public_url = settings.effective_public_url
        self._site = urlsplit(self._public_url).hostname or self._public_url

    def __repr__(self) -> str:
        return f"Mailer(via={'smtp' if self._smtp else 'outbox'}, queued={self._queue.qsize()})"

    async def start(self) -> None:
        """Start the background sender on the running loop (again after :meth:`close`)."""
        if self._task is not None and not self._task.done():
            return
        if (
            self._smtp is not None
            and self._smtp.username
            and not (self._smtp.use_tls or self._smtp.start_tls)
        ):
            logger.warning(
                "GATEPASS_SMTP_URL is smtp:// with credentials: the password crosses the "
                "network unencrypted (use smtp+starttls:// or smtps://)"
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gatepass-mail")

    def render(self, to: str, template: str, context: Mapping[str, str]) -> EmailMessage:
        """The message ``template`` makes for ``to``: multipart/alternative text + HTML.

        Raises :class:`RefusedMail` (a ``ValueError``) for a recipient that is not
        one bare address or a subject that is not one line (no header injection),
        and Jinja2's errors for a broken or missing template or context key.
        """
        _check_address(to)
        if not _TEMPLATE_NAME.fullmatch(template):
            raise RefusedMail("a template name is lower-case letters, digits and _")
        values = {"public_url": self._public_url, "site": self._site, **context}
        subject = self._templates.get_template(f"{template}.subject.txt").render(values).strip()
        text = self._templates.get_template(f"{template}.txt").render(values)
        html = self._templates.get_template(f"{template}.html").render(values)

        message = EmailMessage()
        sender = self._settings.effective_mail_from
        message["From"] = sender
        message["To"] = to
        message["Subject"] = _check_header("subject", subject)
        message["Date"] = email.utils.formatdate(time.time(), usegmt=True)
        # Our own ID under the sender's domain: make_msgid would ask DNS for this
        # host's name without one, and draws from the process-wide ``random`` state
        # (shared with whatever else runs here) rather than the OS's generator.
        message["Message-ID"] = f"<{secrets.token_hex(16)}@{sender.rpartition('@')[2]}>"
        # RFC 3834: tells auto-responders not to answer.
        message["Auto-Submitted"] = "auto-generated"
        _set_part(message, text, "plain", alternative=False)
        _set_part(message, html, "html", alternative=True)
        # Chosen here for the same reason: the email package would draw the
        # multipart boundary from the process-wide ``random`` state.
        message.set_boundary(f"=_{secrets.token_hex(16)}")
        return message

    def submit(self, to: str, template: str, context: Mapping[str, str]) -> None:
        """Queue one mail and return at once.

        Never raises for delivery problems: a mail that cannot be rendered (a bad
        recipient, a broken template) is logged and counted as failed, one beyond
        ``GATEPASS_MAIL_QUEUE_LIMIT`` as dropped.
        """
        label = template if _TEMPLATE_NAME.fullmatch(template) else "invalid"
        try:
            message = self.render(to, template, context)
        except RefusedMail as exc:
            self._failed(label, f"refused: {exc}")
            return
        except jinja2.TemplateNotFound as exc:
            self._failed(label, f"TemplateNotFound {exc.name}")
            return
        except jinja2.TemplateSyntaxError as exc:
            # Compile-time: the text is about the template file, never about a value.
            self._failed(label, f"TemplateSyntaxError {exc.name}:{exc.lineno} {exc.message}")
            return
        except Exception as exc:
            # Rendering-time errors may quote a context value (the link): class only.
            self._failed(label, f"{type(exc).__name__} while rendering")
            return
        try:
            self._queue.put_nowait(_Outgoing(label, message, tuple(context.values())))
        except asyncio.QueueFull:
            self._metrics.mails.labels(template=label, result="dropped").inc()
            logger.warning(
                "mail %r dropped: %d mails already wait (GATEPASS_MAIL_QUEUE_LIMIT)",
                label,
                self._queue.qsize(),
            )

    async def drain(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a bounded wait by design
        """Wait until every submitted mail is sent or given up; ``TimeoutError`` after
        ``timeout`` seconds (the mail keeps going)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        """Send what is queued (for at most :data:`CLOSE_TIMEOUT` seconds), then stop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await self.drain(CLOSE_TIMEOUT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            self._failed(self._queue.get_nowait().template, "not sent before shutdown")
            self._queue.task_done()

    def _failed(self, template: str, reason: str) -> None:
        self._metrics.mails.labels(template=template, result="failed").inc()
        logger.warning("mail %r failed: %s", template, reason)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            except asyncio.CancelledError:
                self._failed(item.template, "not sent before shutdown")
                raise
            except Exception as exc:
                # Whatever went wrong, the task lives on for the next mail.
                self._failed(item.template, _reason(exc, item.redact))
            else:
                self._metrics.mails.labels(template=item.template, result="sent").inc()
            finally:
                self._queue.task_done()

    async def _send(self, item: _Outgoing) -> None:
        """One mail, retried after each delay while the failure is transient."""
        delays = iter(self._retry_delays)
        while True:
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    await self._deliver(item)
                return
            except Exception as exc:
                delay = next(delays, None)
                if delay is None or not _is_transient(exc):
                    raise
                logger.info(
                    "mail %r not sent, retrying in %gs: %s",
                    item.template,
                    delay,
                    _reason(exc, item.redact),
                )
            await asyncio.sleep(delay)

    async def _deliver(self, item: _Outgoing) -> None:
        if self._smtp is None:
            path = await asyncio.to_thread(self._write_outbox, item.message)
            # The one line a developer without a mail server needs; the file has the rest.
            logger.info("mail %r written to %s", item.template, path)
            return
        target = self._smtp
        await aiosmtplib.send(
            item.message,
            hostname=target.hostname,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            # Explicit either way: required for smtp+starttls://, never attempted for
            # smtp:// (aiosmtplib's default would try it when offered).
            start_tls=target.start_tls,
            validate_certs=True,
            tls_context=self._ssl_context,
            timeout=ATTEMPT_TIMEOUT,
        )

    def _write_outbox(self, message: EmailMessage) -> Path:
        self._outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by the umask and ignored for an existing folder.
        os.chmod(self._outbox, 0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{secrets.token_hex(8)}.eml"
        final = self._outbox / name
        # Written under a hidden name and renamed: a reader never sees half a mail.
        temporary = self._outbox / f".{name}.tmp"
        data = message.as_bytes(policy=email.policy.SMTP)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return final

"""A real SMTP server on loopback (aiosmtpd), started once per test session.

Three session fixtures, each an :class:`SmtpServer` in its own thread on a free
127.0.0.1 port:

- ``smtp_server``: plain SMTP, no AUTH (``GATEPASS_SMTP_URL=smtp_server.url``);
- ``smtps_server``: implicit TLS, AUTH required;
- ``smtp_starttls_server``: STARTTLS required before anything else, AUTH required.

The TLS ones present a self-signed certificate for 127.0.0.1 generated into a
temporary folder; ``server.client_ssl_context()`` trusts it (pass it as the
Mailer's ``ssl_context``). A server keeps what it accepted in ``messages``;
:meth:`SmtpServer.wait_for` waits for the mail to one recipient. Each test that
asks for one of these fixtures starts with it cleared, so a test sees only its
own mail even when every test writes to ``ada@example.com``. ``refuse`` and
``hold`` make it answer 4xx/5xx or stall for one recipient.

aiosmtpd is a dev dependency: a server that cannot start fails the test, never
skips it.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import re
import socket
import ssl
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
#: Credentials the AUTH servers accept; the password needs percent-encoding in a URL.
USERNAME = "gatepass-mailer"
PASSWORD = "p@ss:w/rd%20 ok"
#: How long a held DATA waits for its release before answering anyway.
HOLD_LIMIT = 30.0

_LINK = re.compile(r"https?://[^\s<>\"']*token=[^\s<>\"']+")

#: plain; TLS from the first byte; STARTTLS required; STARTTLS offered but optional.
Security = Literal["plain", "implicit", "starttls", "offers_starttls"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Hold:
    """DATA for one recipient waits until ``release`` is set; ``reached`` says it arrived."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._owner.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self._owner._rcpt(address, envelope)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        holds = [h for r in envelope.rcpt_tos if (h := self._owner._hold_for(r)) is not None]
        for hold in holds:
            hold.reached.set()
            await asyncio.to_thread(hold.release.wait, HOLD_LIMIT)
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self._owner._accept(list(envelope.rcpt_tos), message)
        return "250 Message accepted"


class SmtpServer:
    """One aiosmtpd server; see the module docstring."""

    def __init__(
        self,
        security: Security = "plain",
        *,
        cert: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.security = security
        self.credentials = credentials
        self.host = HOST
        self.port = free_port()
        self._cert = cert
        self._lock = threading.Condition()
        self._received: list[tuple[list[str], EmailMessage]] = []
        self._refusals: dict[str, deque[str]] = defaultdict(deque)
        self._holds: dict[str, Hold] = {}
        #: RCPT commands seen per recipient (each delivery attempt sends one).
        self.attempts: dict[str, int] = defaultdict(int)
        kwargs: dict[str, Any] = {}
        if security != "plain":
            if cert is None:
                raise ValueError("a TLS server needs a certificate")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            if security == "implicit":
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=security == "starttls")
        if credentials is not None:
            # aiosmtpd offers AUTH only after its own STARTTLS; on implicit TLS (which it
            # does not count) the handler's MAIL check enforces authentication instead.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10.0, **kwargs
        )

    def __repr__(self) -> str:
        return f"SmtpServer({self.security}, {self.host}:{self.port})"

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._controller.start()
        except Exception as exc:  # aiosmtpd's own start-up errors vary by cause
            pytest.fail(f"the test SMTP server did not start: {exc!r}", pytrace=False)

    def stop(self) -> None:
        self._controller.stop()

    @property
    def url(self) -> str:
        """``GATEPASS_SMTP_URL`` for this server, credentials percent-encoded."""
        scheme = {
            "plain": "smtp",
            "implicit": "smtps",
            "starttls": "smtp+starttls",
            "offers_starttls": "smtp",
        }
        userinfo = ""
        if self.credentials is not None:
            user, password = self.credentials
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"{scheme[self.security]}://{userinfo}{self.host}:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and nothing else)."""
        if self._cert is None:
            raise ValueError("a plain server has no certificate")
        return ssl.create_default_context(cafile=str(self._cert[0]))

    # --- what tests read and steer ----------------------------------------------------

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [message for _, message in self._received]

    def received_for(self, to: str) -> list[EmailMessage]:
        with self._lock:
            return self._for(to)

    def wait_for(self, to: str, count: int = 1, timeout: float = 10) -> list[EmailMessage]:
        """The first ``count`` messages delivered to ``to``, waiting up to ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._for(to)) >= count, timeout):
                got = len(self._for(to))
                raise AssertionError(f"{count} mail(s) to {to} expected, {got} arrived")
            return self._for(to)[:count]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._refusals.clear()
            self._holds.clear()
            self.attempts.clear()

    def refuse(self, to: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` RCPT commands for ``to`` with ``reply`` (e.g.
        ``"451 4.3.0 Try again later"`` or ``"550 5.1.1 No such user"``)."""
        with self._lock:
            self._refusals[to.lower()].extend([reply] * times)

    def hold(self, to: str) -> Hold:
        """Stall the DATA of mail to ``to`` until the returned hold is released."""
        hold = Hold()
        with self._lock:
            self._holds[to.lower()] = hold
        return hold

    # --- called from the server's thread --------------------------------------------

    def _for(self, to: str) -> list[EmailMessage]:
        wanted = to.lower()
        return [m for rcpts, m in self._received if wanted in (r.lower() for r in rcpts)]

    def _rcpt(self, address: str, envelope: Envelope) -> str:
        with self._lock:
            self.attempts[address.lower()] += 1
            refusals = self._refusals.get(address.lower())
            if refusals:
                return refusals.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _hold_for(self, address: str) -> Hold | None:
        with self._lock:
            return self._holds.get(address.lower())

    def _accept(self, rcpts: list[str], message: EmailMessage) -> None:
        with self._lock:
            self._received.append((rcpts, message))
            self._lock.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self.credentials
        ok = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False)


# --- reading a received mail -----------------------------------------------------------


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert isinstance(part, EmailMessage), f"no text/{subtype} part"
    # Mail travels with CRLF line ends; tests compare with "\n".
    return str(part.get_content()).replace("\r\n", "\n")


def text_body(message: EmailMessage) -> str:
    return _part(message, "plain")


def html_body(message: EmailMessage) -> str:
    return _part(message, "html")


def own_address(name: str = "ada") -> str:
    """An address no other test mails: the SMTP servers are shared by the session."""
    return f"{name}-{uuid.uuid4().hex[:10]}@example.com"


def link_token(message: EmailMessage) -> str:
    """The token of the one link in ``message``'s text part."""
    return parse_qs(urlsplit(link_in(message)).query)["token"][0]


def mail_with_link(messages: list[EmailMessage], path: str) -> EmailMessage:
    """The one message whose link goes to ``path`` (``/reset-password``): mail sent
    after an answer may arrive in any order."""
    found = [m for m in messages if _LINK.search(text_body(m)) and path + "?" in link_in(m)]
    assert len(found) == 1, f"one mail with a {path} link expected, found {len(found)}"
    return found[0]


def link_in(message: EmailMessage) -> str:
    """The one http(s) link with ``token=`` in the text part."""
    links = set(_LINK.findall(text_body(message)))
    assert len(links) == 1, f"one token link expected in the text part, found {len(links)}"
    return links.pop()


# --- certificates and fixtures -----------------------------------------------------------


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatepass test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _running(server: SmtpServer) -> Iterator[SmtpServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


SERVER_FIXTURES = ("smtp_server", "smtps_server", "smtp_starttls_server")


@pytest.fixture(autouse=True)
def _smtp_servers_cleared(request: pytest.FixtureRequest) -> None:
    """Clear the session's servers a test uses before it runs (and start none it
    does not use)."""
    for name in SERVER_FIXTURES:
        if name in request.fixturenames:
            request.getfixturevalue(name).clear()


@pytest.fixture(scope="session")
def smtp_tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """Plain SMTP on loopback, no AUTH."""
    yield from _running(SmtpServer("plain"))


@pytest.fixture(scope="session")
def smtps_server(smtp_tls_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """SMTP over implicit TLS, AUTH required (``USERNAME`` / ``PASSWORD``)."""
    yield from _running(
        SmtpServer("implicit", cert=smtp_tls_cert, credentials=(USERNAME, PASSWORD))
    )


@pytest.fixture(scope="session")
def smtp_starttls_server(smtp_tls_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """SMTP that requires STARTTLS before anything else, then AUTH."""
    yield from _running(
        SmtpServer("starttls", cert=smtp_tls_cert, credentials=(USERNAME, PASSWORD))
    )


@pytest.fixture
def mail_client(make_client: Callable[..., Any], smtp_server: SmtpServer) -> Callable[..., Any]:
    """``make_client`` (tests/conftest.py) for apps that send mail to ``smtp_server``."""

    def make(**env: str) -> Any:
        return make_client(smtp_url=smtp_server.url, **env)

    return make

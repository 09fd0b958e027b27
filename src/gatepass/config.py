"""Settings, read from ``GATEPASS_*`` environment variables and validated once.

:func:`load_settings` turns every problem into a :class:`~gatepass.errors.ConfigError`
whose message names the offending variable, so the CLI can stop with one line
instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gatepass.errors import ConfigError
from gatepass.passwords import DEFAULT_MAX_PENDING

ENV_PREFIX = "GATEPASS_"
DATA_DIR_NAME = ".gatepass"
#: A configured session secret shorter than this is refused: it would be guessable.
MIN_SECRET_LENGTH = 32

Algorithm = Literal["EdDSA", "ES256", "RS256", "HS256"]
ProxyNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def normalise_origin(value: str) -> str:
    """Return ``scheme://host[:port]`` in lower case, or raise ``ValueError``.

    Default ports are dropped so ``https://a.example:443`` equals ``https://a.example``.
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an origin: {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"an origin has no path, query or credentials: {value!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in origin {value!r}") from exc
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    if port is None or port == default_port:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


#: Characters a base URL's path may hold (RFC 3986 ``pchar`` and ``/``).
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
#: A metrics token shorter than this is refused: /metrics has no rate limit.
MIN_METRICS_TOKEN_LENGTH = 16
#: RFC 6750 ``b64token``: what fits in ``Authorization: Bearer`` as sent.
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
#: GATEPASS_REVOCATION_FEED_TOKEN: 32 characters, e.g. 24 random bytes in base64.
MIN_REVOCATION_FEED_TOKEN_LENGTH = 32


def normalise_base_url(value: str) -> str:
    """Return an http(s) origin plus an optional path, without a trailing slash.

    The origin part is :func:`normalise_origin`'s form; query, fragment and
    credentials are refused (``ValueError``).
    """
    parts = urlsplit(value.strip())
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL has no query or fragment: {value!r}")
    if not _PATH_CHARS.fullmatch(parts.path):
        raise ValueError(f"bad path in base URL {value!r}")
    origin = normalise_origin(f"{parts.scheme}://{parts.netloc}")
    return origin + parts.path.rstrip("/")


def origin_of(base_url: str) -> str:
    """The normalised origin of a base URL (``ValueError`` if it is none)."""
    parts = urlsplit(base_url.strip())
    return normalise_origin(f"{parts.scheme}://{parts.netloc}")


def _url_host(host: str) -> str:
    # An IPv6 literal needs brackets inside a URL.
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


#: Schemes of GATEPASS_SMTP_URL: plain, upgraded with STARTTLS, or TLS from the start.
SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
#: GATEPASS_MAIL_FROM: one bare address, no display name, no header-breaking characters.
_MAIL_FROM = re.compile(r"[^@\s<>\",;]+@[^@\s<>\",;]+")

#: GATEPASS_WEBAUTHN_RP_ID: a DNS name of dot-separated labels, at least one letter
#: in the last (so never an IPv4 address).
_RP_ID = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?|xn--[a-z0-9-]+)"
)

#: A longer grace is a window for a stolen rotated token, not a retry.
MAX_REFRESH_REUSE_GRACE = 300


class Settings(BaseSettings):
    """Validated gatepass configuration. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # URLs may carry credentials: kept out of repr.
    database_url: str | None = Field(default=None, repr=False)
    redis_url: str | None = Field(default=None, repr=False)
    dev: bool = False
    issuer: str | None = None
    audience: str = Field(default="gatepass", min_length=1)
    jwt_algorithm: Algorithm = "EdDSA"
    access_token_ttl: PositiveInt = 900
    refresh_token_ttl: PositiveInt = 2_592_000
    session_idle_timeout: PositiveInt = 1800
    session_absolute_timeout: PositiveInt = 86_400
    session_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    leeway: int = Field(default=10, ge=0)
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    login_max_failures: PositiveInt = 5
    login_lockout: PositiveInt = 300
    login_ip_limit: PositiveInt = 50
    trusted_proxies: Annotated[tuple[ProxyNet, ...], NoDecode] = ()
    # Sign-in hardening: sessions and token families one user may hold (a new
    # sign-in beyond it ends the least recently used one), and password hashes
    # queued or running per process before new password work is refused (503).
    max_sessions_per_user: PositiveInt = 100
    password_queue_limit: PositiveInt = DEFAULT_MAX_PENDING
    # --- the server's own origin and /metrics access ----------------------------------
    #: Base URL the server is reached at: its origin is the own origin for CSRF
    #: (never the Host header); later the base of links. Default: the issuer.
    public_url: str | None = None
    #: Bearer token /metrics asks for; unset, /metrics answers loopback clients only.
    metrics_token: SecretStr | None = Field(default=None, repr=False)
    # ----------------------------------------------------------------------------------
    # HTTP layer limits of `gatepass serve` (server/protocol.py), safe without a
    # proxy in front: the request line and headers of one request, in bytes; the
    # seconds a client has to send them, and that a request's body or its answer
    # may stall (no byte read or drained); open connections per process.
    max_header_bytes: PositiveInt = 32_768
    header_timeout: PositiveInt = 10
    max_connections: PositiveInt = 1000
    # --- PostgreSQL -------------------------------------------------------------------
    #: A node on PostgreSQL whose schema is behind migrates it at start (else it
    #: refuses to start, naming `gatepass db upgrade`); SQLite always migrates itself.
    db_auto_upgrade: bool = False
    # --- refresh-token reuse grace ------------------------------------------------------
    #: Seconds after a rotation during which a retry with the rotated token gets the
    #: same new refresh token (and a fresh access token) instead of killing the
    #: family, while that new token is unused; 0 = off: every reuse kills it.
    refresh_reuse_grace: int = Field(default=0, ge=0, le=MAX_REFRESH_REUSE_GRACE)
    # --- revocation feed for resource servers (GET /auth/revocations) -----------------
    #: Bearer token resource servers present to follow this server's revocations
    #: (docs/revocation-feed.md); unset, the feed is off and answers 404.
    revocation_feed_token: SecretStr | None = Field(default=None, repr=False)
    # --- accounts: mail, verification, reset, sign-up limits (docs/accounts.md) --------
    #: ``smtp://host:port``, ``smtp+starttls://user:pass@host:port`` or
    #: ``smtps://user:pass@host:port``; unset, mail is written to the data folder's
    #: outbox. Holds a password: kept out of repr.
    smtp_url: SecretStr | None = Field(default=None, repr=False)
    #: Sender address; default ``no-reply@`` + the public URL's host.
    mail_from: str | None = None
    #: A folder whose ``mail/*.txt`` / ``mail/*.html`` templates replace the bundled ones.
    mail_template_dir: Path | None = None
    #: Mails waiting to be sent per process; beyond it a new one is dropped (counted).
    mail_queue_limit: PositiveInt = 1000
    email_verification: Literal["none", "optional", "mandatory"] = "optional"
    email_verify_ttl: PositiveInt = 86_400
    password_reset_ttl: PositiveInt = 1800
    #: Registrations per client IP per hour, whatever their outcome.
    register_ip_limit: PositiveInt = 20
    #: Mail-triggering requests (resend, forgot, e-mail change) per client IP per 900 s.
    mail_ip_limit: PositiveInt = 20
    #: Mails per address per 900 s; beyond it a mail is silently not sent.
    mail_address_limit: PositiveInt = 3
    # --- second factors, passkeys, freshness (docs/factors.md) -------------------------
    #: Seconds a login pending its second factor (an ``mfa_token``) lives.
    mfa_token_ttl: PositiveInt = 300
    #: Seconds a sign-in counts as fresh for factor, passkey, e-mail and deletion changes.
    fresh_auth_max_age: PositiveInt = 300
    #: WebAuthn relying-party ID (a domain); default: the public URL's host, or
    #: ``localhost`` when that is a loopback address.
    webauthn_rp_id: str | None = None
    # ----------------------------------------------------------------------------------
    #: Where the embedded default keeps its state. Not an environment setting.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / DATA_DIR_NAME, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings passes every value explicitly; never read os.environ again.
        return (init_settings,)

    @field_validator("session_secrets", mode="before")
    @classmethod
    def _secrets(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, tuple):
            for secret in value:
                raw = secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)
                if len(raw) < MIN_SECRET_LENGTH:
                    raise ValueError(f"each secret needs at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, tuple):
            return tuple(normalise_origin(str(v)) for v in value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, tuple):
            return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else normalise_base_url(value)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if len(raw) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(f"needs at least {MIN_METRICS_TOKEN_LENGTH} characters")
        if not _B64TOKEN.fullmatch(raw):
            raise ValueError("may hold only letters, digits and -._~+/ (then = padding)")
        return value

    @field_validator("revocation_feed_token")
    @classmethod
    def _revocation_feed_token(cls, value: SecretStr | None) -> SecretStr | None:
        # It lets a caller follow which tokens and users were revoked: a generated
        # secret, not a word (`openssl rand -base64 32`).
        if value is None:
            return None
        raw = value.get_secret_value()
        if len(raw) < MIN_REVOCATION_FEED_TOKEN_LENGTH:
            raise ValueError(f"needs at least {MIN_REVOCATION_FEED_TOKEN_LENGTH} characters")
        if not _B64TOKEN.fullmatch(raw):
            raise ValueError("may hold only letters, digits and -._~+/ (then = padding)")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        # The message names neither the URL nor its password.
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError("must start with smtp://, smtp+starttls:// or smtps://")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("has a bad port") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be scheme://[user:password@]host[:port]")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _MAIL_FROM.fullmatch(value):
            raise ValueError("must be a plain address such as no-reply@example.com")
        return value

    @field_validator("webauthn_rp_id")
    @classmethod
    def _webauthn_rp_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().rstrip(".")
        if not _RP_ID.fullmatch(value):
            raise ValueError("must be a domain name such as example.com (not an IP address)")
        return value

    @property
    def effective_webauthn_rp_id(self) -> str:
        """The WebAuthn RP ID: the setting, else the public URL's host (``localhost``
        for a loopback address: WebAuthn refuses IP addresses)."""
        if self.webauthn_rp_id is not None:
            return self.webauthn_rp_id
        host = urlsplit(self.effective_public_url).hostname or "localhost"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host
        return "localhost"

    @property
    def effective_mail_from(self) -> str:
        """``GATEPASS_MAIL_FROM``, else ``no-reply@`` + the public URL's host."""
        if self.mail_from is not None:
            return self.mail_from
        host = urlsplit(self.effective_public_url).hostname or "localhost"
        return f"no-reply@{host}"

    @property
    def effective_issuer(self) -> str:
        """``iss`` of access tokens: the setting, else ``http://HOST:PORT``."""
        return self.issuer or f"http://{_url_host(self.host)}:{self.port}"

    @property
    def effective_public_url(self) -> str:
        """The server's base URL: ``GATEPASS_PUBLIC_URL``, else the issuer when it is an
        http(s) URL, else ``http://HOST:PORT``. Never derived from a request."""
        if self.public_url is not None:
            return self.public_url
        try:
            return normalise_base_url(self.effective_issuer)
        except ValueError:  # an issuer need not be a URL
            return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL; on the embedded default a SQLite file in :attr:`data_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'gatepass.db'}"

    @property
    def cookie_secure(self) -> bool:
        return not self.dev


_KNOWN = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if name != "data_dir"}


def load_settings(environ: Mapping[str, str] | None = None, /, **overrides: object) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``), plus explicit overrides.

    Raises :class:`ConfigError` naming the first bad variable; an unknown
    ``GATEPASS_*`` variable is an error too, since it is almost always a typo.
    """
    env = dict(os.environ if environ is None else environ)
    for key in sorted(env):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in _KNOWN:
            raise ConfigError(key.upper(), "unknown setting")
    values: dict[str, object] = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.upper().startswith(ENV_PREFIX)
    }
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}", message) from None

"""The ``GATEPASS`` dict of a Django project's settings, read once and checked.

Embedded mode (the default)::

    GATEPASS = {
        "MODE": "embedded",
        "SETTINGS": {                      # any GATEPASS_* setting (docs/configuration.md)
            "GATEPASS_PUBLIC_URL": "https://app.example.com",
            "GATEPASS_DATABASE_URL": "postgresql://...",
        },
        "DATA_DIR": BASE_DIR / ".gatepass",  # the embedded default's SQLite folder
        "READ_ENV": True,                  # GATEPASS_* of os.environ under SETTINGS
    }

``SETTINGS`` keys may be written ``GATEPASS_PUBLIC_URL``, ``PUBLIC_URL`` or
``public_url``: all name the same setting, which is validated exactly as
``gatepass serve`` validates it (one line naming it otherwise).

Resource-server mode (trust the tokens of a running ``gatepass serve``)::

    GATEPASS = {
        "MODE": "resource_server",
        "ISSUER": "https://auth.example.com",
        "AUDIENCE": "gatepass",
        "REVOCATION_FEED": {"TOKEN": "..."},   # optional; "URL" defaults to the issuer
    }

An unknown key is refused (it is almost always a typo), as is a bad value: Django
stops at start-up with :class:`~django.core.exceptions.ImproperlyConfigured`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from gatepass.config import DATA_DIR_NAME, ENV_PREFIX, Settings, load_settings
from gatepass.errors import ConfigError

Mode = Literal["embedded", "resource_server"]
SETTING_NAME = "GATEPASS"
#: Seconds between two prunes of expired sessions and families in embedded mode.
DEFAULT_PRUNE_INTERVAL = 300.0

_COMMON_KEYS = frozenset({"MODE"})
_EMBEDDED_KEYS = frozenset(
    {"SETTINGS", "DATA_DIR", "READ_ENV", "CLOCK", "HASHER", "PRUNE_INTERVAL"}
)
_RESOURCE_KEYS = frozenset({"ISSUER", "AUDIENCE", "REVOCATION_FEED", "VERIFIER", "OPTIONS"})
_FEED_KEYS = frozenset({"URL", "TOKEN"})


@dataclass(frozen=True, slots=True)
class EmbeddedOptions:
    """What embedded mode opens: validated gatepass settings, and for tests an
    injected clock and a factory of password hashers (called at each opening, so
    a forked worker never shares its parent's hashing threads)."""

    settings: Settings
    clock: Callable[[], float] | None = None
    hasher: Callable[[], Any] | None = None
    prune_interval: float | None = DEFAULT_PRUNE_INTERVAL


@dataclass(frozen=True, slots=True)
class ResourceServerOptions:
    """Whom resource-server mode trusts. ``verifier`` is a ready-made
    :class:`gatepass.verifier.Verifier` (then the other fields are unused)."""

    issuer: str | None
    audience: str = "gatepass"
    feed_url: str | None = None
    feed_token: str | None = field(default=None, repr=False)
    feed: bool = False
    verifier: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)


Options = EmbeddedOptions | ResourceServerOptions


def _fail(message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{SETTING_NAME}: {message}")


def _check_keys(where: str, given: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(str(key) for key in given if key not in allowed)
    if unknown:
        raise _fail(f"unknown key {unknown[0]!r} in {where}")


def _env_name(key: str) -> str:
    name = key.upper()
    return name if name.startswith(ENV_PREFIX) else f"{ENV_PREFIX}{name}"


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _embedded(config: Mapping[str, Any]) -> EmbeddedOptions:
    _check_keys(SETTING_NAME, config, _COMMON_KEYS | _EMBEDDED_KEYS)
    given = config.get("SETTINGS", {})
    if not isinstance(given, Mapping):
        raise _fail("SETTINGS must be a dict of GATEPASS_* settings")
    environ: dict[str, str] = {}
    if config.get("READ_ENV", True):
        environ.update({k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)})
    environ.update({_env_name(str(key)): _env_value(value) for key, value in given.items()})
    data_dir = Path(config.get("DATA_DIR") or Path.cwd() / DATA_DIR_NAME)
    try:
        settings = load_settings(environ, data_dir=data_dir)
    except ConfigError as exc:
        raise _fail(f"SETTINGS: {exc}") from None
    interval = config.get("PRUNE_INTERVAL", DEFAULT_PRUNE_INTERVAL)
    if interval is not None and (not isinstance(interval, int | float) or interval <= 0):
        raise _fail("PRUNE_INTERVAL must be a positive number of seconds or None")
    clock = config.get("CLOCK")
    if clock is not None and not callable(clock):
        raise _fail("CLOCK must be a callable returning seconds since the epoch")
    hasher = config.get("HASHER")
    if hasher is not None and not callable(hasher):
        raise _fail("HASHER must be a callable returning a PasswordHasher")
    return EmbeddedOptions(settings, clock, hasher, interval)


def _resource_server(config: Mapping[str, Any]) -> ResourceServerOptions:
    _check_keys(SETTING_NAME, config, _COMMON_KEYS | _RESOURCE_KEYS)
    verifier = config.get("VERIFIER")
    issuer = config.get("ISSUER")
    if verifier is None and (not isinstance(issuer, str) or not issuer.strip()):
        raise _fail("resource_server mode needs ISSUER (the auth server's URL) or VERIFIER")
    audience = config.get("AUDIENCE", "gatepass")
    if not isinstance(audience, str) or not audience:
        raise _fail("AUDIENCE must be a non-empty string")
    options = config.get("OPTIONS", {})
    if not isinstance(options, Mapping):
        raise _fail("OPTIONS must be a dict of Verifier keyword arguments")
    feed = config.get("REVOCATION_FEED")
    feed_url = feed_token = None
    if feed is not None:
        if not isinstance(feed, Mapping):
            raise _fail("REVOCATION_FEED must be a dict with URL and TOKEN")
        _check_keys("REVOCATION_FEED", feed, _FEED_KEYS)
        feed_url = feed.get("URL")
        feed_token = feed.get("TOKEN")
        if not isinstance(feed_token, str) or not feed_token:
            raise _fail(
                "REVOCATION_FEED needs TOKEN (GATEPASS_REVOCATION_FEED_TOKEN of the server)"
            )
        if feed_url is not None and not isinstance(feed_url, str):
            raise _fail("REVOCATION_FEED URL must be a string")
    return ResourceServerOptions(
        issuer=issuer,
        audience=audience,
        feed_url=feed_url,
        feed_token=feed_token,
        feed=feed is not None,
        verifier=verifier,
        options=dict(options),
    )


def read_options(config: object) -> Options:
    """Check the ``GATEPASS`` dict and turn it into options (no I/O happens here)."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise _fail("must be a dict")
    mode = config.get("MODE", "embedded")
    if mode == "embedded":
        return _embedded(config)
    if mode == "resource_server":
        return _resource_server(config)
    raise _fail("MODE must be 'embedded' or 'resource_server'")

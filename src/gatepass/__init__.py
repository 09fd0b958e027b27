"""gatepass: hybrid authentication for Python.

Server-side sessions for browsers and (with :mod:`gatepass.tokens`) signed
access tokens for APIs, behind one :class:`~gatepass.authenticator.Authenticator`.

The exceptions are imported here at once; the rest on first use (PEP 562), so
that ``import gatepass.verifier`` on a resource server loads none of the server's
stack (stores, argon2, settings, web frameworks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gatepass.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    CredentialsChanged,
    CSRFFailed,
    DuplicateRecord,
    EmailNotVerified,
    EmailTaken,
    FieldProblem,
    GatepassError,
    InvalidLink,
    InvalidRefreshToken,
    InvalidRequest,
    InvalidToken,
    KeysUnavailable,
    NotFound,
    Overloaded,
    PasswordPolicyError,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ReauthenticationRequired,
    RequestError,
    RevocationsStale,
    StoreError,
    StoreUnavailable,
    UnknownSigningKey,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from gatepass.accounts import Accounts
    from gatepass.authenticator import Authenticator, Identity
    from gatepass.config import Settings, load_settings
    from gatepass.core import Gatepass
    from gatepass.passwords import PasswordHasher
    from gatepass.sessions import SessionManager

#: Public names loaded on first use, and the module each comes from.
_LAZY = {
    "Accounts": "gatepass.accounts",
    "Authenticator": "gatepass.authenticator",
    "Identity": "gatepass.authenticator",
    "Settings": "gatepass.config",
    "load_settings": "gatepass.config",
    "Gatepass": "gatepass.core",
    "PasswordHasher": "gatepass.passwords",
    "SessionManager": "gatepass.sessions",
}

__version__ = "0.1.0"

__all__ = [
    "Accounts",
    "AuthenticationFailed",
    "Authenticator",
    "CSRFFailed",
    "ConfigError",
    "Conflict",
    "CredentialsChanged",
    "DuplicateRecord",
    "EmailNotVerified",
    "EmailTaken",
    "FieldProblem",
    "Gatepass",
    "GatepassError",
    "Identity",
    "InvalidLink",
    "InvalidRefreshToken",
    "InvalidRequest",
    "InvalidToken",
    "KeysUnavailable",
    "NotFound",
    "Overloaded",
    "PasswordHasher",
    "PasswordPolicyError",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ReauthenticationRequired",
    "RequestError",
    "RevocationsStale",
    "SessionManager",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "UnknownSigningKey",
    "UnsupportedMediaType",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gatepass' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

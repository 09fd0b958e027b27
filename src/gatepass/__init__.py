"""gatepass: hybrid authentication for Python.

Server-side sessions for browsers and (with :mod:`gatepass.tokens`) signed
access tokens for APIs, behind one :class:`~gatepass.authenticator.Authenticator`.
"""

from gatepass.accounts import Accounts
from gatepass.authenticator import Authenticator, Identity
from gatepass.config import Settings, load_settings
from gatepass.core import Gatepass
from gatepass.errors import (
    AuthenticationFailed,
    ConfigError,
    CSRFFailed,
    GatepassError,
    PasswordPolicyError,
    RateLimited,
    RequestError,
    StoreUnavailable,
)
from gatepass.passwords import PasswordHasher
from gatepass.sessions import SessionManager

__version__ = "0.1.0"

__all__ = [
    "Accounts",
    "AuthenticationFailed",
    "Authenticator",
    "CSRFFailed",
    "ConfigError",
    "Gatepass",
    "GatepassError",
    "Identity",
    "PasswordHasher",
    "PasswordPolicyError",
    "RateLimited",
    "RequestError",
    "SessionManager",
    "Settings",
    "StoreUnavailable",
    "__version__",
    "load_settings",
]

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
    Conflict,
    CredentialsChanged,
    CSRFFailed,
    DuplicateRecord,
    EmailTaken,
    FieldProblem,
    GatepassError,
    InvalidRefreshToken,
    InvalidRequest,
    InvalidToken,
    NotFound,
    Overloaded,
    PasswordPolicyError,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestError,
    StoreError,
    StoreUnavailable,
    UnsupportedMediaType,
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
    "Conflict",
    "CredentialsChanged",
    "DuplicateRecord",
    "EmailTaken",
    "FieldProblem",
    "Gatepass",
    "GatepassError",
    "Identity",
    "InvalidRefreshToken",
    "InvalidRequest",
    "InvalidToken",
    "NotFound",
    "Overloaded",
    "PasswordHasher",
    "PasswordPolicyError",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RequestError",
    "SessionManager",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedMediaType",
    "__version__",
    "load_settings",
]

"""Storage: protocols the core depends on, and their implementations."""

from gatepass.stores.base import (
    EmailTaken,
    SecretStore,
    SessionRecord,
    SessionStore,
    UserRecord,
    UserStore,
)

__all__ = [
    "EmailTaken",
    "SecretStore",
    "SessionRecord",
    "SessionStore",
    "UserRecord",
    "UserStore",
]

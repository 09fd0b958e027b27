"""Storage: the protocols the core depends on, their records, and implementations."""

from gatepass.stores.base import (
    BearerState,
    EmailTaken,
    FamilyRecord,
    MaintenanceStore,
    RevocationEvent,
    RotationOutcome,
    RotationStatus,
    SecretStore,
    SessionRecord,
    SessionStore,
    SigningKeyRecord,
    Store,
    TokenStore,
    UserRecord,
    UserStore,
)
from gatepass.stores.sql import SqlStore

__all__ = [
    "BearerState",
    "EmailTaken",
    "FamilyRecord",
    "MaintenanceStore",
    "RevocationEvent",
    "RotationOutcome",
    "RotationStatus",
    "SecretStore",
    "SessionRecord",
    "SessionStore",
    "SigningKeyRecord",
    "SqlStore",
    "Store",
    "TokenStore",
    "UserRecord",
    "UserStore",
]

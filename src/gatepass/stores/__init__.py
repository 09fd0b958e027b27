"""Storage: the protocols the core depends on, their records, and implementations.

:class:`SqlStore` loads on first use (PEP 562), so code that needs only the
records (``gatepass.stores.base``: the event bus's wire format, a resource
server's revocation feed) does not pull SQLAlchemy in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gatepass.stores.base import (
    BearerState,
    EmailTaken,
    Evicted,
    FamilyRecord,
    FamilyStore,
    KeyStore,
    MaintenanceStore,
    RevocationEvent,
    RevocationStore,
    RotationOutcome,
    RotationStatus,
    SecretStore,
    SessionLimit,
    SessionRecord,
    SessionStore,
    SigningKeyRecord,
    Store,
    TokenStore,
    UserRecord,
    UserStore,
)

if TYPE_CHECKING:
    from gatepass.stores.sql import SqlStore

__all__ = [
    "BearerState",
    "EmailTaken",
    "Evicted",
    "FamilyRecord",
    "FamilyStore",
    "KeyStore",
    "MaintenanceStore",
    "RevocationEvent",
    "RevocationStore",
    "RotationOutcome",
    "RotationStatus",
    "SecretStore",
    "SessionLimit",
    "SessionRecord",
    "SessionStore",
    "SigningKeyRecord",
    "SqlStore",
    "Store",
    "TokenStore",
    "UserRecord",
    "UserStore",
]


def __getattr__(name: str) -> Any:
    if name != "SqlStore":
        raise AttributeError(f"module 'gatepass.stores' has no attribute {name!r}")
    value = importlib.import_module("gatepass.stores.sql").SqlStore
    globals()[name] = value
    return value

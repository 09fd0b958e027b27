"""The one place a deployment's settings become its store.

The server, the CLI and embedders (through :meth:`gatepass.Gatepass.open`) all go
through :func:`store_from_settings`, so a new backend or option is wired once.
"""

from __future__ import annotations

from gatepass.config import Settings
from gatepass.stores.sql import SqlStore


def store_from_settings(settings: Settings) -> SqlStore:
    """The store ``GATEPASS_DATABASE_URL`` names (the embedded SQLite file by default).

    Not started: call ``start()`` before use (it migrates SQLite, and PostgreSQL
    with ``GATEPASS_DB_AUTO_UPGRADE``; else refuses a schema that is behind) and
    ``close()`` after.
    """
    return SqlStore(settings.effective_database_url, auto_upgrade=settings.db_auto_upgrade)

"""The one place a deployment's settings become its store.

The server, the CLI and embedders (through :meth:`gatepass.Gatepass.open`) all go
through these functions, so a new backend or option is wired once.
"""

from __future__ import annotations

import time

from gatepass.clock import Clock
from gatepass.config import Settings
from gatepass.stores.base import Store
from gatepass.stores.redis_connection import connect
from gatepass.stores.redis_sessions import RedisSessionStore
from gatepass.stores.split import SplitStore
from gatepass.stores.sql import SqlStore


def database_from_settings(settings: Settings) -> SqlStore:
    """The database ``GATEPASS_DATABASE_URL`` names (the embedded SQLite file by
    default): users, keys, families, revocations, secrets, and sessions when no
    Redis is configured.

    Not started: call ``start()`` before use (it migrates SQLite, and PostgreSQL
    with ``GATEPASS_DB_AUTO_UPGRADE``; else refuses a schema that is behind) and
    ``close()`` after.
    """
    return SqlStore(settings.effective_database_url, auto_upgrade=settings.db_auto_upgrade)


def store_from_settings(settings: Settings, *, clock: Clock = time.time) -> Store:
    """The deployment's store: the database alone, or with ``GATEPASS_REDIS_URL``
    the database and Redis together (:class:`SplitStore`: sessions in Redis)."""
    database = database_from_settings(settings)
    if not settings.redis_url:
        return database
    client = connect(settings.redis_url)
    sessions = RedisSessionStore(
        client,
        idle_timeout=settings.session_idle_timeout,
        absolute_timeout=settings.session_absolute_timeout,
    )
    return SplitStore(database, sessions, redis=client, clock=clock)

"""Schema migrations: an Alembic history shipped inside the package, run in-process.

One history serves SQLite and PostgreSQL (batch mode where SQLite cannot ALTER).
:func:`upgrade` runs on a connection whose transaction, and lock, the caller
holds (:meth:`gatepass.stores.sql.SqlStore.upgrade`), so a start-up migration is
all or nothing and two processes starting at once migrate one after the other.

* a database at :data:`HEAD` costs one query;
* an empty database gets the current schema from ``metadata.create_all`` and is
  stamped :data:`HEAD` (tests show this equals the migrated schema);
* a database made by gatepass before migrations existed (its tables, no
  ``alembic_version``) is stamped ``0001`` and upgraded from there.

Rows a migration could not change as it should are reported, never dropped:
a WARNING on the ``gatepass.migrations`` logger and a line in
:attr:`UpgradeResult.notices`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect

from gatepass.errors import StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

#: The newest revision; a test checks that it is the head of the shipped history.
HEAD = "0008"
BASELINE = "0001"
#: The tables ``metadata.create_all`` made before migrations existed (revision 0001).
BASELINE_TABLES = frozenset(
    {
        "gatepass_users",
        "gatepass_sessions",
        "gatepass_secrets",
        "gatepass_signing_keys",
        "gatepass_refresh_families",
        "gatepass_refresh_tokens",
        "gatepass_revocations",
    }
)
VERSION_TABLE = "alembic_version"
LOGGER = logging.getLogger("gatepass.migrations")
_NOTICES = "gatepass.notices"
_LOCATION = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    """What an upgrade did: the revision before (``None``: unversioned or empty),
    the revision after, and one line per row left as it was."""

    before: str | None
    after: str
    notices: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration of the shipped history, bound to ``connection``."""
    from alembic.config import Config

    config = Config()
    # Config values are %-interpolated: a "%" in the install path must be doubled.
    config.set_main_option("script_location", str(_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes[_NOTICES] = []
    return config


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or ``None`` when there is none."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def report_user(user_id: str, reason: str) -> None:
    """From inside a migration: a user's row was left as it was, and why.

    ``reason`` must not contain the row's data beyond ids (it reaches logs).
    """
    from alembic import context

    line = f"user {user_id}: {reason}"
    LOGGER.warning("migration left a row unchanged: %s", line)
    context.config.attributes.setdefault(_NOTICES, []).append(line)


def upgrade(connection: Connection) -> UpgradeResult:
    """Bring the schema on ``connection`` to :data:`HEAD`, inside the caller's transaction."""
    before = current_revision(connection)
    if before == HEAD:
        return UpgradeResult(before, HEAD)
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(connection)
    if before is None:
        tables = set(inspect(connection).get_table_names())
        if not tables & BASELINE_TABLES:
            return _create_fresh(connection)
        if missing := BASELINE_TABLES - tables:
            raise StoreUnavailable(
                "database has some gatepass tables but no schema version: "
                f"missing {', '.join(sorted(missing))}"
            )
        # Made by gatepass before migrations existed: that schema is revision 0001.
        command.stamp(config, BASELINE)
    try:
        command.upgrade(config, HEAD)
    except CommandError as exc:
        # Typically a revision this gatepass does not know: a newer one migrated it.
        raise StoreUnavailable(f"database schema cannot be upgraded: {exc}") from exc
    return UpgradeResult(before, HEAD, tuple(config.attributes[_NOTICES]))


def _create_fresh(connection: Connection) -> UpgradeResult:
    """An empty database: today's tables at once, stamped as fully migrated.

    Running the whole history costs far more at every start of a new database
    (tests start hundreds); tests show both paths give the same schema.
    """
    from alembic.runtime.migration import MigrationContext

    from gatepass.stores.sql import metadata

    metadata.create_all(connection)
    # Alembic's own description of its version table (the hook dialects override),
    # so the stamp is what ``alembic stamp`` would write.
    version = MigrationContext.configure(connection).impl.version_table_impl(
        version_table=VERSION_TABLE, version_table_schema=None, version_table_pk=True
    )
    version.create(connection)
    connection.execute(version.insert().values(version_num=HEAD))
    return UpgradeResult(None, HEAD)

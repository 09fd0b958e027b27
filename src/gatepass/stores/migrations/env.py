"""Alembic environment of gatepass: always run on a connection the caller holds.

:func:`gatepass.stores.migrations.upgrade` passes the connection (inside its own
transaction and lock) in ``config.attributes["connection"]``; there is no
``alembic.ini`` and no URL here.
"""

from __future__ import annotations

from alembic import context

from gatepass.stores.sql import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("gatepass migrations run on a given connection: use `gatepass db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode recreates the table where needed,
    # and on PostgreSQL the same migration emits plain ALTER statements.
    render_as_batch=True,
    compare_type=True,
    compare_server_default=True,
)
# The caller's transaction is already open: Alembic joins it and leaves the commit
# to the caller, so the schema change and the version stamp land together.
with context.begin_transaction():
    context.run_migrations()

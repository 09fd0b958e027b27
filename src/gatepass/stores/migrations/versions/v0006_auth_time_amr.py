"""Sessions and refresh families gain ``auth_time`` and ``amr``: when and how the
user last proved who they are (``gatepass.freshness``).

Rows from before this revision get ``auth_time`` 0 and an empty ``amr``: they
keep working, and count as not fresh until the user signs in again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("gatepass_sessions", "gatepass_refresh_families")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("auth_time", sa.Float(), nullable=False, server_default="0"))
            batch.add_column(sa.Column("amr", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("amr")
            batch.drop_column("auth_time")

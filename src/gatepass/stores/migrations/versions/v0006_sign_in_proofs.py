"""Sessions and refresh families gain ``auth_time`` and ``amr``: when and how the
user last proved who they are (``gatepass.freshness``); sign-ins waiting for their
second factor get a table.

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
PENDING = "gatepass_pending_sign_ins"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("auth_time", sa.Float(), nullable=False, server_default="0"))
            batch.add_column(sa.Column("amr", sa.String(128), nullable=False, server_default=""))
        # The empty default only fills the rows already there; new rows name their
        # methods (PostgreSQL would not report an empty default back anyway).
        with op.batch_alter_table(table) as batch:
            batch.alter_column("amr", server_default=None)
    op.create_table(
        PENDING,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("gatepass_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("client", sa.String(8), nullable=False),
        sa.Column("credential_version", sa.Integer(), nullable=False),
        sa.Column("auth_time", sa.Float(), nullable=False),
        sa.Column("amr", sa.String(128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_gatepass_pending_sign_ins_expires", PENDING, ["expires_at"])


def downgrade() -> None:
    op.drop_table(PENDING)
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("amr")
            batch.drop_column("auth_time")

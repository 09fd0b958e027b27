"""TOTP factors and recovery codes get tables of their own.

One TOTP row per user (its secret sealed by gatepass.mfa, whether it is active,
the last accepted time step); recovery codes as keyed hashes. Deleting the user
deletes both.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TOTP = "gatepass_totp"
RECOVERY_CODES = "gatepass_recovery_codes"


def upgrade() -> None:
    op.create_table(
        TOTP,
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("gatepass_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_step", sa.Integer()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        RECOVERY_CODES,
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("gatepass_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "code_hash", name="pk_gatepass_recovery_codes"),
    )


def downgrade() -> None:
    op.drop_table(RECOVERY_CODES)
    op.drop_table(TOTP)

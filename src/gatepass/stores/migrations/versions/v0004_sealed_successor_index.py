"""An index of the retired refresh tokens that still hold a sealed successor.

A rotation clears the seal its predecessor holds (so at most one seal per family
opens the live token, and only within the reuse grace), and pruning clears seals
older than the longest grace. Both find those rows through this partial index,
which holds at most one row per family.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

INDEX = "ix_gatepass_refresh_tokens_sealed"
WHERE = sa.text("sealed_successor IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        INDEX,
        "gatepass_refresh_tokens",
        ["replaced_by"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="gatepass_refresh_tokens")

"""Retired refresh tokens remember their successor: its hash, and (with a reuse
grace) the successor sealed under a key only the retired token opens.

``replaced_by`` is the SHA-256 of the token that replaced this one, so a retry
can be told from reuse in the rotation's own transaction. ``sealed_successor``
is written only while ``GATEPASS_REFRESH_REUSE_GRACE`` is on
(:mod:`gatepass.refresh`). Rows rotated before this revision have neither: a
retry with one of them counts as reuse, as it always did.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("gatepass_refresh_tokens") as batch:
        batch.add_column(sa.Column("replaced_by", sa.String(64)))
        batch.add_column(sa.Column("sealed_successor", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("gatepass_refresh_tokens") as batch:
        batch.drop_column("sealed_successor")
        batch.drop_column("replaced_by")

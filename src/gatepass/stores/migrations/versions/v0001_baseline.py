"""Baseline: the schema that ``metadata.create_all`` made before migrations existed.

A database made by that older code has these tables and no ``alembic_version``;
it is stamped with this revision and upgraded from here. Frozen: never edit.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "gatepass_revocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gatepass_revocations_created", "gatepass_revocations", ["created_at"])
    op.create_table(
        "gatepass_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "gatepass_signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("private_material", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("retired_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "gatepass_users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("tokens_valid_after", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "gatepass_refresh_families",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["user_id"], ["gatepass_users.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_gatepass_families_user", "gatepass_refresh_families", ["user_id"])
    op.create_table(
        "gatepass_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id_hash"),
        sa.UniqueConstraint("handle"),
        sa.ForeignKeyConstraint(["user_id"], ["gatepass_users.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_gatepass_sessions_user", "gatepass_sessions", ["user_id"])
    op.create_table(
        "gatepass_refresh_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.ForeignKeyConstraint(
            ["family_id"], ["gatepass_refresh_families.id"], ondelete="CASCADE"
        ),
    )
    op.create_index("ix_gatepass_refresh_tokens_family", "gatepass_refresh_tokens", ["family_id"])


def downgrade() -> None:
    for index, table in (
        ("ix_gatepass_refresh_tokens_family", "gatepass_refresh_tokens"),
        ("ix_gatepass_sessions_user", "gatepass_sessions"),
        ("ix_gatepass_families_user", "gatepass_refresh_families"),
        ("ix_gatepass_revocations_created", "gatepass_revocations"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "gatepass_refresh_tokens",
        "gatepass_sessions",
        "gatepass_refresh_families",
        "gatepass_users",
        "gatepass_signing_keys",
        "gatepass_secrets",
        "gatepass_revocations",
    ):
        op.drop_table(table)

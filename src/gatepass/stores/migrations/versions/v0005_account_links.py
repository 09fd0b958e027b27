"""Users gain ``email_verified``; one-time links (verification, reset, e-mail change)
get a table of their own.

A link is stored only as the SHA-256 of its token, with its purpose, the address
it is for and when it expires; deleting the user deletes its links.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

LINKS = "gatepass_account_links"


def upgrade() -> None:
    with op.batch_alter_table("gatepass_users") as batch:
        batch.add_column(
            sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        LINKS,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("gatepass_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_gatepass_account_links_user", LINKS, ["user_id", "purpose"])
    op.create_index("ix_gatepass_account_links_expires", LINKS, ["expires_at"])


def downgrade() -> None:
    op.drop_table(LINKS)
    with op.batch_alter_table("gatepass_users") as batch:
        batch.drop_column("email_verified")

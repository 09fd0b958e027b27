"""WebAuthn passkeys, each user's WebAuthn user handle, and the challenges issued.

A passkey keeps its credential ID (unique), COSE public key, signature counter,
transports, name and times; a challenge is stored only as its SHA-256, with its
ceremony, its user (if bound to one) and when it expires. Deleting a user
deletes its passkeys, handle and challenges.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

PASSKEYS = "gatepass_passkeys"
USERS = "gatepass_webauthn_users"
CHALLENGES = "gatepass_webauthn_challenges"


def _user_id(*, nullable: bool = False, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "user_id",
        sa.String(36),
        sa.ForeignKey("gatepass_users.id", ondelete="CASCADE"),
        nullable=nullable,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        PASSKEYS,
        sa.Column("id", sa.String(64), primary_key=True),
        _user_id(nullable=False),
        sa.Column("credential_id", sa.LargeBinary(1023), nullable=False, unique=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", sa.Text(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float()),
    )
    op.create_index("ix_gatepass_passkeys_user", PASSKEYS, ["user_id"])
    op.create_table(
        USERS,
        _user_id(primary_key=True),
        sa.Column("user_handle", sa.LargeBinary(64), nullable=False, unique=True),
    )
    op.create_table(
        CHALLENGES,
        sa.Column("challenge_hash", sa.String(64), primary_key=True),
        sa.Column("ceremony", sa.String(16), nullable=False),
        _user_id(nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_gatepass_webauthn_challenges_expires", CHALLENGES, ["expires_at"])


def downgrade() -> None:
    op.drop_table(CHALLENGES)
    op.drop_table(USERS)
    op.drop_table(PASSKEYS)

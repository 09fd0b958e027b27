"""Users gain ``credential_version``; every stored address moves to its normal form.

The normal form is that of :func:`gatepass.emails.normalise_email`. A row whose
normal form is already another user's address, or that is not valid under the
new rules, keeps its stored address and is reported (a warning on the
``gatepass.migrations`` logger and a line of ``gatepass db upgrade``): accounts
are never merged or deleted here. Such a user cannot sign in until an operator
resolves it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatepass.emails import normalise_email
from gatepass.stores.migrations import report_user

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_users = sa.table(
    "gatepass_users",
    sa.column("id", sa.String()),
    sa.column("email", sa.String()),
    sa.column("created_at", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("gatepass_users") as batch:
        batch.add_column(
            sa.Column("credential_version", sa.Integer(), nullable=False, server_default="0")
        )
    _rekey_emails(op.get_bind())


def _rekey_emails(conn: sa.Connection) -> None:
    # Oldest first, so which of two colliding rows moves does not depend on chance.
    rows = conn.execute(
        sa.select(_users.c.id, _users.c.email).order_by(_users.c.created_at, _users.c.id)
    ).all()
    holder = {row.email: row.id for row in rows}
    for row in rows:
        try:
            normal = normalise_email(row.email)
        except ValueError as exc:
            report_user(row.id, f"kept its stored address: not valid under the new rules ({exc})")
            continue
        if normal == row.email:
            continue
        other = holder.get(normal)
        if other is not None:
            report_user(
                row.id,
                f"kept its stored address: its normal form is the address of user {other}",
            )
            continue
        conn.execute(sa.update(_users).where(_users.c.id == row.id).values(email=normal))
        del holder[row.email]
        holder[normal] = row.id


def downgrade() -> None:
    # Addresses stay in their normal form: the spelling each user once typed is
    # not kept anywhere to go back to.
    with op.batch_alter_table("gatepass_users") as batch:
        batch.drop_column("credential_version")

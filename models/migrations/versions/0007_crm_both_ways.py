"""the CRM both ways: account owners, deals, and what a push sent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:40:00.000000

`account.owner_*` hold the owner `abm crm pull` read from the CRM. `crmpush` also keeps the
ICP reasons summary and committee coverage last pushed, and the CRM's id of the account's
record (later pushes address it without a search). `crmdeal` keeps every deal or
opportunity as last pulled, once per account of ours it belongs to, with the stage the
mapping table gives it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_name", TEXT(length=300), nullable=True))
        batch_op.add_column(sa.Column("owner_email", TEXT(length=320), nullable=True))
        batch_op.add_column(sa.Column("owner_crm", TEXT(length=20), nullable=True))
        batch_op.add_column(sa.Column("owner_active", sa.Boolean(), nullable=True))

    with op.batch_alter_table("crmpush", schema=None) as batch_op:
        batch_op.add_column(sa.Column("icp_summary", TEXT(length=500), nullable=True))
        batch_op.add_column(sa.Column("coverage", TEXT(length=300), nullable=True))
        batch_op.add_column(sa.Column("gaps", TEXT(length=300), nullable=True))
        batch_op.add_column(sa.Column("crm_id", TEXT(length=80), nullable=True))

    op.create_table(
        "crmdeal",
        sa.Column("crm", TEXT(length=20), nullable=False),
        sa.Column("crm_id", TEXT(length=80), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", TEXT(length=300), nullable=True),
        sa.Column("crm_stage", TEXT(length=120), nullable=False),
        sa.Column("pipeline", TEXT(length=120), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=True),
        sa.Column("won", sa.Boolean(), nullable=True),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("maps_to", TEXT(length=20), nullable=True),
        sa.Column("modified_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("pulled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("crm", "crm_id", "account_id"),
    )
    with op.batch_alter_table("crmdeal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crmdeal_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("crmdeal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crmdeal_account_id"))
    op.drop_table("crmdeal")
    with op.batch_alter_table("crmpush", schema=None) as batch_op:
        for column in ("crm_id", "gaps", "coverage", "icp_summary"):
            batch_op.drop_column(column)
    with op.batch_alter_table("account", schema=None) as batch_op:
        for column in ("owner_active", "owner_crm", "owner_email", "owner_name"):
            batch_op.drop_column(column)

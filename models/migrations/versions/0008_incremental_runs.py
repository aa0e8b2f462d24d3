"""incremental runs: what a run last planned, when a title was classified

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00.000000

`campaign.planned_through` is the time up to which a completed run planned every change it
could see, and `campaign.plan_fingerprint` the campaign file and rules it planned with, so
`advance-sequences` asks one query which campaigns have anything due or new. A contact's
`classified_at` says its title was classified at or after its last change. The indexes make
"what changed since" (account and contact `updated_at`) and "whose wait for the next step
ended since" (delivery by campaign, step and sent time) seeks, not scans.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT = sqlmodel.sql.sqltypes.AutoString
TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("planned_through", TIME(), nullable=True))
        batch_op.add_column(sa.Column("plan_fingerprint", TEXT(length=64), nullable=True))
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("classified_at", TIME(), nullable=True))
        batch_op.create_index("ix_contact_updated_at", ["updated_at"], unique=False)
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index("ix_account_updated_at", ["updated_at"], unique=False)
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_campaign_step_sent", ["campaign_id", "step", "sent_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_campaign_step_sent")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index("ix_account_updated_at")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_updated_at")
        batch_op.drop_column("classified_at")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("plan_fingerprint")
        batch_op.drop_column("planned_through")

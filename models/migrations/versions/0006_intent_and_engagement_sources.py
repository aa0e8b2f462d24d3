"""intent signals: the engagement score by source, and an index of intent events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:30:00.000000

`account.engagement_sources` keeps the engagement score split by source (email, LinkedIn,
web, intent) as the rollup works it out; accounts rolled up before this revision get theirs
at their next rollup (the nightly `rescore-accounts`). The partial index holds intent events
only (`abm import intent`), for the audience filter that asks which accounts surged lately.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("engagement_sources", sa.JSON(), nullable=True))

    with op.batch_alter_table("engagementevent", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_intent_account_time",
            ["account_id", "occurred_at"],
            unique=False,
            sqlite_where=sa.text("type = 'intent'"),
            postgresql_where=sa.text("type = 'intent'"),
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("engagementevent", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_event_intent_account_time",
            sqlite_where=sa.text("type = 'intent'"),
            postgresql_where=sa.text("type = 'intent'"),
        )

    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("engagement_sources")

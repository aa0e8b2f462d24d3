"""console indexes: an account's reachable contacts by role, a campaign's funnel

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-11 10:00:00.000000

The console's accounts page filters 30,000 accounts by committee coverage ("every required
role has an active contact", "no active approver") with one EXISTS per role and account.
`ix_contact_account_status_role` answers each from the index alone, without reading the
contact rows: on SQLite the "every role covered" filter went from about 120 to 65 ms.
`ix_delivery_campaign_funnel` counts a campaign's ledger by state, step and variant, and the
accounts it reached, from the index alone: at 100,000 rows on SQLite the campaign page's
counts went from about 190 to 45 ms. `ix_event_message_type` finds the responses to a
message (opens, clicks, replies) by its id: the funnel's join of the ledger to the events
read every event for each message sent (the demo's campaign page: 450 ms for 1,869 messages
and 2,923 events; 2.5 ms with it).
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_account_status_role", ["account_id", "status", "role"], unique=False
        )
    with op.batch_alter_table("engagementevent", schema=None) as batch_op:
        batch_op.create_index("ix_event_message_type", ["message_id", "type"], unique=False)
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_campaign_funnel",
            ["campaign_id", "state", "step", "variant", "channel", "account_id"],
            unique=False,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_campaign_funnel")
    with op.batch_alter_table("engagementevent", schema=None) as batch_op:
        batch_op.drop_index("ix_event_message_type")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_account_status_role")

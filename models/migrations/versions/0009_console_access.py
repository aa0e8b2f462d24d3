"""console access: sessions, sign-in failures, the audit log

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 22:40:00.000000

`console_session` holds a signed-in console browser by the SHA-256 of its session id (the
cookie holds the id, so the table alone signs nobody in); `console_login_failure` the failed
sign-ins the rate limit counts (by name and by address, in a time window: indexed for both);
`audit_log` every operator action, from the console or the command line.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT = sqlmodel.sql.sqltypes.AutoString
TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "console_session",
        sa.Column("id_hash", TEXT(length=64), nullable=False),
        sa.Column("user_name", TEXT(length=128), nullable=False),
        sa.Column("credential", TEXT(length=64), nullable=False, server_default=""),
        sa.Column("created_at", TIME(), nullable=False),
        sa.Column("last_seen_at", TIME(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index("ix_console_session_user_name", "console_session", ["user_name"])
    op.create_table(
        "console_login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TIME(), nullable=False),
        sa.Column("name", TEXT(length=128), nullable=False),
        sa.Column("address", TEXT(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_console_login_failure_at", "console_login_failure", ["at"])
    op.create_index("ix_console_login_failure_name_at", "console_login_failure", ["name", "at"])
    op.create_index(
        "ix_console_login_failure_address_at", "console_login_failure", ["address", "at"]
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TIME(), nullable=False),
        sa.Column("actor", TEXT(length=128), nullable=False),
        sa.Column("role", TEXT(length=20), nullable=True),
        sa.Column("action", TEXT(length=80), nullable=False),
        sa.Column("target", TEXT(length=300), nullable=False),
        sa.Column("detail", TEXT(length=2000), nullable=True),
        sa.Column("via", TEXT(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_console_login_failure_address_at", table_name="console_login_failure")
    op.drop_index("ix_console_login_failure_name_at", table_name="console_login_failure")
    op.drop_index("ix_console_login_failure_at", table_name="console_login_failure")
    op.drop_table("console_login_failure")
    op.drop_index("ix_console_session_user_name", table_name="console_session")
    op.drop_table("console_session")

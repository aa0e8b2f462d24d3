"""The tables. Times are aware UTC; SQLModel stores them alike on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, as aware UTC (what every timestamp column holds)."""
    return datetime.now(UTC)


class Account(SQLModel, table=True):
    """An organisation, identified by its normalised web domain."""

    id: int | None = Field(default=None, primary_key=True)
    domain: str = Field(max_length=253, unique=True, index=True)
    name: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=120)
    employees: int | None = None
    annual_revenue: float | None = None
    country: str | None = Field(default=None, max_length=80)
    technologies: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tier_override: int | None = None
    icp_score: int | None = None
    icp_reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tier: int | None = Field(default=None, index=True)
    stage: str = Field(default="target", max_length=20, index=True)
    engagement_score: float = 0.0
    # the engagement score by source (email, linkedin, web, intent, other), the breadth
    # bonus and when the rollup worked them out (stages/engagement/sources.py)
    engagement_sources: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    scored_at: datetime | None = None
    # the account's owner as the CRM has it (`abm crm pull`), and which CRM said so
    owner_name: str | None = Field(default=None, max_length=300)
    owner_email: str | None = Field(default=None, max_length=320)
    owner_crm: str | None = Field(default=None, max_length=20)
    # False: the owner has left (archived, inactive): still shown, never sent as
    owner_active: bool | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Contact(SQLModel, table=True):
    """A person at an account, identified by normalised email."""

    __table_args__ = (
        # "has this account an active contact in this role?" from the index alone: the
        # console's committee coverage filter asks it per account and role (0010)
        Index("ix_contact_account_status_role", "account_id", "status", "role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=300)
    linkedin_url: str | None = Field(default=None, max_length=500)
    country: str | None = Field(default=None, max_length=80)
    timezone: str | None = Field(default=None, max_length=64)
    consent: str | None = Field(default=None, max_length=30)
    seniority: str | None = Field(default=None, max_length=30)
    function: str | None = Field(default=None, max_length=30)
    role: str | None = Field(default=None, max_length=30)
    status: str = Field(default="active", max_length=20, index=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # the title was classified at or after this contact's last change (None: never since)
    classified_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Campaign(SQLModel, table=True):
    """A campaign file as last run: its key is the file's `key` (or its stem)."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=120, unique=True, index=True)
    name: str = Field(max_length=300)
    source_path: str | None = Field(default=None, max_length=1000)
    status: str = Field(default="active", max_length=20)
    status_reason: str | None = Field(
        default=None, max_length=1000, description="why it was paused, in plain words"
    )
    # a completed run planned every change it could see up to this time, with this campaign
    # file and these rules: what `advance-sequences` compares to skip a campaign
    planned_through: datetime | None = None
    plan_fingerprint: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Delivery(SQLModel, table=True):
    """The ledger: one row per campaign x step x contact. Flows ask it who to send to."""

    __table_args__ = (
        UniqueConstraint(
            "campaign_id", "step", "contact_id", name="uq_delivery_campaign_step_contact"
        ),
        Index("ix_delivery_campaign_state_due", "campaign_id", "state", "due_at"),
        # whose wait for the next step ended since a time: a seek, not a scan of the ledger
        Index("ix_delivery_campaign_step_sent", "campaign_id", "step", "sent_at"),
        # a campaign's funnel (rows by state, step, variant) and the accounts it reached,
        # counted from the index alone: the console's campaign page reads it on every view
        Index(
            "ix_delivery_campaign_funnel",
            "campaign_id",
            "state",
            "step",
            "variant",
            "channel",
            "account_id",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    step: str = Field(max_length=80)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    channel: str = Field(default="email", max_length=30)
    variant: str | None = Field(default=None, max_length=40)
    state: str = Field(default="planned", max_length=20)
    due_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=40)
    message_id: str | None = Field(default=None, max_length=255, unique=True)
    provider_id: str | None = Field(default=None, max_length=255)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    skip_reason: str | None = Field(default=None, max_length=80)
    sent_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class EngagementEvent(SQLModel, table=True):
    """Something a person (or, for ad analytics, an account) did; stored once per provider id."""

    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id", name="uq_event_provider_event_id"),
        Index("ix_event_account_time", "account_id", "occurred_at"),
        # intent signals alone (a sliver of the events), for the audience and stage filters
        # that ask "who surged lately": queries name the type as a literal to use it
        Index(
            "ix_event_intent_account_time",
            "account_id",
            "occurred_at",
            sqlite_where=text("type = 'intent'"),
            postgresql_where=text("type = 'intent'"),
        ),
        # the responses to our messages (opens, clicks, replies by message id): the report's
        # and the campaign page's funnel join the ledger to events on it
        Index("ix_event_message_type", "message_id", "type"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=40)
    provider_event_id: str = Field(max_length=255)
    type: str = Field(max_length=30)
    channel: str = Field(max_length=30)
    occurred_at: datetime
    account_id: int | None = Field(default=None, foreign_key="account.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    message_id: str | None = Field(default=None, max_length=255)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class StageChange(SQLModel, table=True):
    """Every move of an account along the journey, with the rule that moved it."""

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    from_stage: str | None = Field(default=None, max_length=20)
    to_stage: str = Field(max_length=20)
    reason: str = Field(max_length=500)
    source: str = Field(
        default="engagement",
        max_length=20,
        sa_column_kwargs={"server_default": "engagement"},
    )
    changed_at: datetime = Field(default_factory=utcnow)


class Suppression(SQLModel, table=True):
    """An email or whole domain never to contact, on one channel or all."""

    __table_args__ = (
        UniqueConstraint("kind", "value", "channel", name="uq_suppression_kind_value_channel"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=10)
    value: str = Field(max_length=320, index=True)
    channel: str = Field(default="all", max_length=20)
    reason: str | None = Field(default=None, max_length=200)
    source: str = Field(default="import", max_length=40)
    created_at: datetime = Field(default_factory=utcnow)


class LiftedSuppression(SQLModel, table=True):
    """A suppression a person lifted: the original row as it was, and who lifted it, when
    and why, so that contacting someone again can always be accounted for."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=10)
    value: str = Field(max_length=320, index=True)
    channel: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=200)
    source: str = Field(max_length=40)
    created_at: datetime
    lifted_by: str = Field(max_length=200)
    lift_reason: str = Field(max_length=1000)
    person_asked: bool = False
    contacts_reactivated: int = 0
    lifted_at: datetime = Field(default_factory=utcnow)


class SyncCursor(SQLModel, table=True):
    """How far an incremental sync has read, per source, so a re-run never double counts."""

    source: str = Field(primary_key=True, max_length=80)
    cursor: str = Field(max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


class AccountRelease(SQLModel, table=True):
    """A person lifted a campaign's reply-pause for one account at this time; replies after
    it pause the account again."""

    __table_args__ = (UniqueConstraint("campaign_id", "account_id", name="uq_release"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    account_id: int = Field(foreign_key="account.id")
    released_at: datetime = Field(default_factory=utcnow)


class CrmPush(SQLModel, table=True):
    """What was last pushed to a CRM for an account, so a push sends only what changed
    since (from any path) and an account whose push failed is tried again next time."""

    crm: str = Field(primary_key=True, max_length=20)
    account_id: int = Field(primary_key=True, foreign_key="account.id")
    tier: int | None = None
    icp_score: int | None = None
    engagement_score: float | None = None
    stage: str | None = Field(default=None, max_length=20)
    icp_summary: str | None = Field(default=None, max_length=500)
    coverage: str | None = Field(default=None, max_length=300)
    gaps: str | None = Field(default=None, max_length=300)
    # the CRM's id of the account's record, learned from a push or a pull: later pushes
    # address it directly (no search)
    crm_id: str | None = Field(default=None, max_length=80)
    pushed_at: datetime = Field(default_factory=utcnow)


class CrmDeal(SQLModel, table=True):
    """A deal (opportunity) as the CRM last reported it, so an account's stage can be worked
    out from all its deals when one of them changes."""

    crm: str = Field(primary_key=True, max_length=20)
    crm_id: str = Field(primary_key=True, max_length=80)
    # one row per account the deal belongs to: a deal of two of our accounts counts for both
    account_id: int = Field(primary_key=True, foreign_key="account.id", index=True)
    name: str | None = Field(default=None, max_length=300)
    crm_stage: str = Field(max_length=120)
    pipeline: str | None = Field(default=None, max_length=120)
    closed: bool | None = None
    won: bool | None = None
    amount: float | None = None
    # our stage the mapping table gives the CRM's stage (None: the table maps it to nothing)
    maps_to: str | None = Field(default=None, max_length=20)
    modified_at: datetime
    pulled_at: datetime = Field(default_factory=utcnow)


class ConsoleSession(SQLModel, table=True):
    """A signed-in console browser. Keyed by the SHA-256 of the session id, so a read of this
    table (a backup, a leaked dump) hands nobody a usable cookie. The role is not kept: it is
    read from the users file on every request."""

    __tablename__ = "console_session"

    id_hash: str = Field(primary_key=True, max_length=64)
    user_name: str = Field(max_length=128, index=True)
    # a fingerprint of the password hash the session was opened with: a new password (or a
    # user removed and added again) ends every session opened with the old one
    credential: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)


class ConsoleLoginFailure(SQLModel, table=True):
    """A failed console sign-in (never the password tried): the rate limit counts these, so
    it holds across server processes and restarts."""

    __tablename__ = "console_login_failure"
    __table_args__ = (
        Index("ix_console_login_failure_name_at", "name", "at"),
        Index("ix_console_login_failure_address_at", "address", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    name: str = Field(max_length=128)
    address: str = Field(max_length=64)


class AuditLog(SQLModel, table=True):
    """An operator action (pause, resume, suppression change, ...): who, with which role,
    when, on what, through the console or the command line. Rows are only ever added."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)
    role: str | None = Field(default=None, max_length=20)
    action: str = Field(max_length=80)
    target: str = Field(max_length=300)
    detail: str | None = Field(default=None, max_length=2000)
    via: str = Field(default="console", max_length=20)

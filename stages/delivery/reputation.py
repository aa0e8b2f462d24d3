"""The reputation circuit breaker: a campaign whose recent emails draw spam complaints or
hard bounces past a threshold pauses itself, with the figures in the reason, before its next
chunk sends. Mailbox providers judge the sending domain by these rates (Gmail and Yahoo: keep
spam complaints under 0.3 %; Amazon SES reviews an account from 5 % hard bounces), so sending
on through a bad list or a bad message burns the sender's reputation for every campaign.

Resuming is a person's decision (`abm campaign resume`). A trip is remembered (in
`sync_cursor`, as the time it tripped), and afterwards only emails sent since then, and the
complaints and bounces about them, count: the events that paused it never pause it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from core.settings import Settings
from models.db import chunked, session_scope
from models.store import dialect_insert
from models.tables import Campaign, Delivery, EngagementEvent, SyncCursor, utcnow

COMPLAINT = "spam_report"
BOUNCE = "bounce"  # stored only for hard bounces: a block or a temporary failure is not one
TRIP_PREFIX = "reputation-trip:"


@dataclass(frozen=True)
class Reputation:
    """A campaign's last `sent` emails and how many of their people complained or bounced."""

    sent: int
    bounces: int
    complaints: int


@dataclass(frozen=True)
class Thresholds:
    """Pause at these shares (percent) over the last `window` emails, once at least
    `min_sent` were sent (so that one complaint among a few dozen does not pause a
    campaign: at the default 500, a single one is 0.2 %)."""

    complaint_percent: float
    bounce_percent: float
    window: int
    min_sent: int


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        complaint_percent=settings.pause_complaint_percent,
        bounce_percent=settings.pause_bounce_percent,
        window=settings.reputation_window,
        min_sent=settings.reputation_min_sent,
    )


def breach(reputation: Reputation, limits: Thresholds) -> str | None:
    """Why the campaign must pause, in plain words with the figures, or None."""
    if reputation.sent < limits.min_sent:
        return None
    checks = (
        (reputation.complaints, limits.complaint_percent, "spam complaint", "the list and content"),
        (
            reputation.bounces,
            limits.bounce_percent,
            "hard bounce",
            "the list (old or bought addresses bounce)",
        ),
    )
    for count, limit, what, check in checks:
        share = 100 * count / reputation.sent
        if count and share >= limit:
            plural = "s" if count != 1 else ""
            return (
                f"paused: {count:,} {what}{plural} in the last {reputation.sent:,} emails "
                f"({share:.1f} %), at or above {limit:g} %; check {check}, "
                "then `abm campaign resume`"
            )
    return None


def recent_reputation(
    engine: Engine, campaign_id: int, window: int, since: datetime | None
) -> Reputation:
    """The campaign's last `window` emails sent after `since`, and the distinct people
    among them whose complaint or hard bounce about this campaign arrived after `since`."""
    recent = (
        select(Delivery.contact_id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.state == "sent",
            Delivery.channel == "email",
        )
        # a sent row's due_at is when its outcome was recorded: the ledger's index orders it
        .order_by(Delivery.due_at.desc())
        .limit(window)
    )
    if since is not None:
        recent = recent.where(Delivery.sent_at > since)
    found: set[tuple[str, int]] = set()
    with engine.connect() as connection:
        people = list(connection.execute(recent).scalars())
        for batch in chunked(sorted(set(people)), 2000):
            events = select(EngagementEvent.type, EngagementEvent.contact_id).where(
                EngagementEvent.contact_id.in_(batch),
                EngagementEvent.campaign_id == campaign_id,
                EngagementEvent.type.in_((COMPLAINT, BOUNCE)),
            )
            if since is not None:
                events = events.where(EngagementEvent.occurred_at > since)
            found.update(connection.execute(events).tuples())
    kinds = [kind for kind, _ in found]
    return Reputation(
        sent=len(people), bounces=kinds.count(BOUNCE), complaints=kinds.count(COMPLAINT)
    )


def pause_if_unhealthy(engine: Engine, settings: Settings, campaign_id: int) -> str | None:
    """Checked before every chunk and run sends: pause the campaign when its recent rates
    pass the thresholds. Returns the reason when this call paused it."""
    limits = thresholds(settings)
    since = last_trip(engine, campaign_id)
    reason = breach(recent_reputation(engine, campaign_id, limits.window, since), limits)
    if reason is None or not _trip(engine, campaign_id, reason):
        return None
    return reason


def last_trip(engine: Engine, campaign_id: int) -> datetime | None:
    """When the breaker last paused this campaign, if ever."""
    with engine.connect() as connection:
        found = connection.execute(
            select(SyncCursor.cursor).where(SyncCursor.source == f"{TRIP_PREFIX}{campaign_id}")
        ).scalar()
    return datetime.fromisoformat(found) if found else None


def _trip(engine: Engine, campaign_id: int, reason: str) -> bool:
    """Pause with the reason and remember when, in one transaction; False when the campaign
    was already paused (by a person, or by another chunk a moment ago), whose reason stays."""
    now = utcnow()
    with session_scope(engine) as session:
        paused = session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status != "paused")
            .values(status="paused", status_reason=reason[:1000], updated_at=now)
        ).rowcount
        if not paused:
            return False
        statement = dialect_insert(engine, SyncCursor.__table__).values(
            source=f"{TRIP_PREFIX}{campaign_id}", cursor=now.isoformat(), updated_at=now
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["source"], set_={"cursor": now.isoformat(), "updated_at": now}
            )
        )
    return True

"""An account's story in time order, for `abm accounts show`: what we sent its people
(emails, LinkedIn rep tasks, matched-audience adds), what they did (engagement events, by
source) and how its journey stage moved (with source and reason). Each is kept in its own
table; an operator asking "what happened with Acme?" needs them side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, case, select

from models.tables import Campaign, Contact, Delivery, EngagementEvent
from stages.engagement.journey import stage_history

# At the same instant: what we did, then what they did, then what it changed.
KIND_ORDER = {"email": 0, "linkedin_task": 0, "linkedin_audience": 0, "event": 1, "stage": 2}


def sent_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row we sent, as a timeline entry named after its channel."""
    step = f"{row['campaign']} / {row['step']}"
    if row["variant"]:
        step += f" (variant {row['variant']})"
    channel = row["channel"]
    if channel == "linkedin_task":
        what = f"LinkedIn task for a rep: {step}"
    elif channel == "linkedin_audience":
        what = f"added to a LinkedIn matched audience: {step}"
    else:
        what = f"email sent: {step}"
    return {
        "at": row["sent_at"],
        "kind": channel,
        "what": what,
        "campaign": row["campaign"],
        "step": row["step"],
        "variant": row["variant"],
        "contact": row["email"],
        "message_id": row["message_id"],
    }


def event_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """An engagement event, with the source it came from (an intent signal with its topic
    and score)."""
    what = f"{row['type'].replace('_', ' ')} ({row['channel']})"
    data = row.get("data") or {}
    if row["type"] == "intent" and data:
        what = f"intent signal: {data.get('topic', '?')}, score {float(data.get('score') or 0):g}"
    return {
        "at": row["occurred_at"],
        "kind": "event",
        "what": what,
        "source": row["provider"],
        "contact": row["email"],
        "campaign": row["campaign"],
    }


def stage_entry(change: Mapping[str, Any]) -> dict[str, Any]:
    """A move along the journey, with who or what moved it and why."""
    return {
        "at": change["changed_at"],
        "kind": "stage",
        "what": f"{change['from_stage']} -> {change['to_stage']}",
        "source": change["source"],
        "reason": change["reason"],
    }


def timeline(
    sent: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    changes: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Every entry, oldest first."""
    entries = [
        *(sent_entry(row) for row in sent),
        *(event_entry(row) for row in events),
        *(stage_entry(change) for change in changes),
    ]
    return sorted(entries, key=lambda entry: (entry["at"], KIND_ORDER.get(entry["kind"], 0)))


def account_timeline(engine: Engine, account_id: int) -> list[dict[str, Any]]:
    """An account's timeline, oldest first: three indexed reads by account."""
    sent = (
        select(
            Delivery.sent_at,
            Delivery.channel,
            Delivery.step,
            Delivery.variant,
            Delivery.message_id,
            Campaign.key.label("campaign"),
            Contact.email,
        )
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(
            Delivery.account_id == account_id,
            Delivery.state == "sent",
            Delivery.sent_at.is_not(None),
        )
    )
    events = (
        select(
            EngagementEvent.occurred_at,
            EngagementEvent.type,
            EngagementEvent.channel,
            EngagementEvent.provider,
            Contact.email,
            Campaign.key.label("campaign"),
            # only an intent signal's data (its topic and score) is shown
            case((EngagementEvent.type == "intent", EngagementEvent.data)).label("data"),
        )
        .outerjoin(Contact, Contact.id == EngagementEvent.contact_id)
        .outerjoin(Campaign, Campaign.id == EngagementEvent.campaign_id)
        .where(EngagementEvent.account_id == account_id)
    )
    with engine.connect() as connection:
        sent_rows = list(connection.execute(sent).mappings())
        event_rows = list(connection.execute(events).mappings())
    return timeline(sent_rows, event_rows, stage_history(engine, account_id))

"""Provider events in: one code path for the signed webhook, `abm engagement ingest` and the
one-click unsubscribe endpoint. Events are matched to the ledger by our Message-ID (carried
in SendGrid's `custom_args`), falling back to the recipient's email; stored once per provider
event id; unsubscribes, hard bounces and spam reports suppress the person at once, and the
touched accounts' engagement scores and stages are rolled up, in the same transaction as the
event."""

from __future__ import annotations

import email
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from connectors.email.sendgrid_events import DATA_FIELD_SET, DATA_FIELDS, SENDGRID_TYPES
from models.db import chunked
from models.store import contacts_by_email
from models.tables import Account, Contact, Delivery, utcnow
from stages.delivery.uncertain import mark_sent_by_message_id
from stages.engagement.rollup import EngagementRules, rollup_accounts, store_events


@dataclass
class IngestReport:
    received: int = 0
    stored: int = 0
    ignored: int = 0
    unmatched: int = 0
    reconciled: int = 0

    def add(self, other: IngestReport) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


# Any of these from the provider proves it accepted the message.
ACCEPTANCE_EVENTS = {"processed", "delivered", "deferred", "bounce", "dropped", "open", "click"}


def reconcile_uncertain(engine: Engine, message_ids: set[str]) -> int:
    """Messages a crash left uncertain whose Message-ID the provider reports having: `sent`."""
    return mark_sent_by_message_id(engine, message_ids, "reconciled from provider events")


def _ledger_matches(engine: Engine, message_ids: set[str]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    if not message_ids:
        return found
    with engine.connect() as connection:
        for batch in chunked(sorted(message_ids), 2000):
            rows = connection.execute(
                select(
                    Delivery.message_id,
                    Delivery.contact_id,
                    Delivery.account_id,
                    Delivery.campaign_id,
                    Delivery.channel,
                ).where(Delivery.message_id.in_(batch))
            )
            found.update({row[0]: tuple(row[1:]) for row in rows})
    return found


def _people(engine: Engine, addresses: set[str]) -> dict[str, tuple[int, int]]:
    """`contacts_by_email`; on SQLite as driver-level queries, since building and binding
    thousands of IN parameters through SQLAlchemy took twice as long as the look-up."""
    if engine.dialect.name != "sqlite":
        return contacts_by_email(engine, addresses)
    quote = engine.dialect.identifier_preparer.quote
    select_sql = (
        f"SELECT {quote('email')}, {quote('id')}, {quote('account_id')} "
        f"FROM {quote(Contact.__table__.name)} WHERE {quote('email')} IN "
    )
    found: dict[str, tuple[int, int]] = {}
    with engine.connect() as connection:
        for batch in chunked(list(addresses), 2000):
            placeholders = f"({', '.join('?' * len(batch))})"
            rows = connection.exec_driver_sql(select_sql + placeholders, tuple(batch)).all()
            found.update({email: (person, account) for email, person, account in rows})
    return found


def ingest_sendgrid(
    engine: Engine, events: list[dict[str, Any]], rules: EngagementRules | None = None
) -> IngestReport:
    """Store SendGrid events once each, matched to our people and messages; given `rules`,
    the accounts they touch are rolled up in the same transaction (see `store_events`)."""
    report, rows = _sendgrid_rows(engine, events)
    report.stored = store_events(engine, rows, rules)
    return report


def ingest_sendgrid_export(
    engine: Engine, batches: Iterable[list[dict[str, Any]]], rules: EngagementRules
) -> IngestReport:
    """`ingest_sendgrid` for a bulk load (an export): each batch is stored in its own
    transaction, and the accounts touched are rolled up once at the end, since rolling them
    up after every batch would read their events again for each batch."""
    total, touched = IngestReport(), set()
    for events in batches:
        report, rows = _sendgrid_rows(engine, events)
        report.stored = store_events(engine, rows)
        total.add(report)
        touched.update(row["account_id"] for row in rows)
    rollup_accounts(engine, sorted(touched), rules)
    return total


def _sendgrid_rows(
    engine: Engine, events: list[dict[str, Any]]
) -> tuple[IngestReport, list[dict[str, Any]]]:
    """The event rows to store, matched to our people and messages, with a report of the
    rest; provider events about messages a crash left `uncertain` reconcile them."""
    report = IngestReport(received=len(events))
    report.reconciled = reconcile_uncertain(
        engine,
        {
            str(e["abm_message_id"])
            for e in events
            if e.get("abm_message_id") and str(e["event"]) in ACCEPTANCE_EVENTS
        },
    )
    # The Message-IDs in one query; then, in one more, the recipients of the events that
    # carry none the ledger knows, each address normalised once.
    ledger = _ledger_matches(
        engine, {str(e["abm_message_id"]) for e in events if e.get("abm_message_id")}
    )
    emails = {
        address: address.strip().lower()
        for address in {
            str(e["email"])
            for e in events
            if not (e.get("abm_message_id") and str(e["abm_message_id"]) in ledger)
        }
    }
    people = _people(engine, set(emails.values()))
    rows: list[dict[str, Any]] = []
    for event in events:
        kind = SENDGRID_TYPES.get(str(event["event"]))
        if kind is None or (kind == "bounce" and event.get("type") == "blocked"):
            # not engagement; a block is the receiving server's temporary refusal, not a
            # hard bounce
            report.ignored += 1
            continue
        message_id = event.get("abm_message_id")
        match = ledger.get(str(message_id)) if message_id else None
        if match:
            contact_id, account_id, campaign_id, _ = match
        elif (person := people.get(emails[str(event["email"])])) is not None:
            contact_id, account_id, campaign_id = person[0], person[1], None
        else:
            report.unmatched += 1
            continue
        row = {
            "provider": "sendgrid",
            "provider_event_id": str(event["sg_event_id"])[:255],
            "type": kind,
            "channel": "email",
            "occurred_at": datetime.fromtimestamp(float(event["timestamp"]), UTC),
            "account_id": account_id,
            "contact_id": contact_id,
            "campaign_id": campaign_id,
            "message_id": str(message_id)[:255] if message_id else None,
        }
        # No `data` key for no provider data (stored as {}): a dict of plain values is not
        # tracked by the garbage collector, whose full passes otherwise grow with each batch.
        if not DATA_FIELD_SET.isdisjoint(event):
            row["data"] = {field: event[field] for field in DATA_FIELDS if field in event}
        rows.append(row)
    return report, rows


def unsubscribe(
    engine: Engine, contact_id: int, campaign_id: int, rules: EngagementRules | None = None
) -> bool:
    """Honour a one-click unsubscribe now; True when it was new. Idempotent. Given `rules`,
    the person's account is rolled up in the same transaction."""
    with engine.connect() as connection:
        account_id = connection.execute(
            select(Contact.account_id).where(Contact.id == contact_id)
        ).scalar()
        known_campaign = connection.execute(
            select(Delivery.campaign_id).where(Delivery.campaign_id == campaign_id).limit(1)
        ).scalar()
    if account_id is None:
        return False
    event = {
        "provider": "abm",
        "provider_event_id": f"unsubscribe:{contact_id}",
        "type": "unsubscribe",
        "channel": "email",
        "occurred_at": utcnow(),
        "account_id": account_id,
        "contact_id": contact_id,
        "campaign_id": known_campaign,
        "data": {"via": "one-click"},
    }
    return store_events(engine, [event], rules) == 1


def contact_display(engine: Engine, contact_id: int) -> str | None:
    """`a***@acme.example` for the confirmation page: enough to recognise, not to harvest."""
    with engine.connect() as connection:
        row = connection.execute(
            select(Contact.email, Account.domain)
            .join(Account, Account.id == Contact.account_id)
            .where(Contact.id == contact_id)
        ).first()
    if row is None:
        return None
    local, _, domain = row[0].partition("@")
    return f"{local[:1]}***@{domain}"


def contact_unsubscribed(engine: Engine, contact_id: int) -> bool:
    """True when this person has unsubscribed (and nobody lifted it at their request): the
    unsubscribe page then says so instead of asking again."""
    with engine.connect() as connection:
        status = connection.execute(select(Contact.status).where(Contact.id == contact_id)).scalar()
    return status == "unsubscribed"


_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


def reply_event(engine: Engine, headers: str, sender: str) -> dict[str, Any] | None:
    """A `reply` event for an inbound email (SendGrid Inbound Parse): matched to the message
    it answers through In-Reply-To / References, else to the sender's email."""
    parsed = email.message_from_string(headers + "\n\n")
    referenced = _MESSAGE_ID.findall(
        " ".join(str(parsed.get(name) or "") for name in ("In-Reply-To", "References"))
    )
    ledger = _ledger_matches(engine, set(referenced)) if referenced else {}
    own_id = str(parsed.get("Message-ID") or "").strip()
    when = utcnow()
    for message_id in reversed(referenced):
        if message_id in ledger:
            contact_id, account_id, campaign_id, _ = ledger[message_id]
            return _reply(
                own_id or message_id, when, contact_id, account_id, campaign_id, message_id
            )
    address = email.utils.parseaddr(sender)[1].strip().lower()
    person = contacts_by_email(engine, {address}).get(address)
    if person is None:
        return None
    return _reply(own_id or f"{address}:{when.isoformat()}", when, person[0], person[1], None, None)


def _reply(
    event_id: str,
    when: datetime,
    contact_id: int,
    account_id: int,
    campaign_id: int | None,
    message_id: str | None,
) -> dict[str, Any]:
    return {
        "provider": "sendgrid-inbound",
        "provider_event_id": event_id[:255],
        "type": "reply",
        "channel": "email",
        "occurred_at": when,
        "account_id": account_id,
        "contact_id": contact_id,
        "campaign_id": campaign_id,
        "message_id": message_id,
        "data": {},
    }

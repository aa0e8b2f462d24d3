"""Provider events in: one code path for the signed webhook, `abm engagement ingest` and the
one-click unsubscribe endpoint. Events are matched to the ledger by our Message-ID (carried
in SendGrid's `custom_args`), falling back to the recipient's email; stored once per provider
event id; unsubscribes, hard bounces and spam reports suppress the person at once (in the
same transaction as the event)."""

from __future__ import annotations

import base64
import binascii
import email
import email.utils
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import Engine, select, update

from flows.engagement import store_events
from models.db import chunked, session_scope
from models.store import contacts_by_email
from models.tables import Account, Contact, Delivery, utcnow

# SendGrid event -> our event type; None: recorded by the provider, not engagement.
SENDGRID_TYPES: dict[str, str | None] = {
    "delivered": "delivered",
    "open": "open",
    "click": "click",
    "bounce": "bounce",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "processed": None,
    "deferred": None,
    "dropped": None,
    "group_resubscribe": None,
}
MAX_CLOCK_SKEW_SECONDS = 300
REQUIRED_ORDER = ("event", "sg_event_id", "timestamp", "email")
REQUIRED_FIELDS = frozenset(REQUIRED_ORDER)


class BadEvents(ValueError):
    """The body is not a list of provider events; the message says why (HTTP 400)."""


class BadSignature(ValueError):
    """The request was not signed by the provider (HTTP 403), or too long ago (HTTP 401)."""


def verify_sendgrid_signature(
    public_key_b64: str, signature_b64: str, timestamp: str, body: bytes, now: float
) -> None:
    """ECDSA P-256 / SHA-256 over timestamp + raw body, as SendGrid signs event webhooks."""
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64)
    except (ValueError, binascii.Error):
        raise BadSignature("malformed key or signature") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadSignature("the configured key is not an elliptic-curve public key")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise BadSignature("malformed timestamp") from None
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("stale timestamp: replayed or delayed by more than 5 minutes")
    try:
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadSignature("signature does not match") from None


def parse_sendgrid(body: bytes) -> list[dict[str, Any]]:
    """SendGrid's JSON array of events, checked for the fields we rely on."""
    try:
        events = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEvents(f"not JSON: {exc}") from None
    if not isinstance(events, list):
        raise BadEvents("expected a JSON array of events")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadEvents(f"event {index} is not an object")
        if not event.keys() >= REQUIRED_FIELDS:
            field = next(field for field in REQUIRED_ORDER if field not in event)
            raise BadEvents(f"event {index} has no {field!r}")
        if not isinstance(event["timestamp"], int | float):
            raise BadEvents(f"event {index}: timestamp must be a number")
    return events


@dataclass
class IngestReport:
    received: int = 0
    stored: int = 0
    ignored: int = 0
    unmatched: int = 0
    reconciled: int = 0


# Provider fields kept in the event's `data`.
DATA_FIELDS = ("url", "reason", "type", "status")
DATA_FIELD_SET = frozenset(DATA_FIELDS)
# Any of these from the provider proves it accepted the message.
ACCEPTANCE_EVENTS = {"processed", "delivered", "deferred", "bounce", "dropped", "open", "click"}


def reconcile_uncertain(engine: Engine, message_ids: set[str]) -> int:
    """Rows a crash left `uncertain` whose message the provider reports having: `sent`."""
    if not message_ids:
        return 0
    reconciled = 0
    with session_scope(engine) as session:
        for batch in chunked(sorted(message_ids), 2000):
            result = session.execute(
                update(Delivery)
                .where(Delivery.message_id.in_(batch), Delivery.state == "uncertain")
                .values(
                    state="sent",
                    sent_at=utcnow(),
                    updated_at=utcnow(),
                    last_error="reconciled from provider events",
                )
            )
            reconciled += result.rowcount or 0
    return reconciled


def _ledger_matches(engine: Engine, message_ids: set[str]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
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


def ingest_sendgrid(engine: Engine, events: list[dict[str, Any]]) -> IngestReport:
    """Store SendGrid events once each, matched to our people and messages."""
    report = IngestReport(received=len(events))
    report.reconciled = reconcile_uncertain(
        engine,
        {
            str(e["abm_message_id"])
            for e in events
            if e.get("abm_message_id") and str(e["event"]) in ACCEPTANCE_EVENTS
        },
    )
    # Every recipient normalised once, looked up in one query (with the Message-IDs).
    emails = {address: address.strip().lower() for address in {str(e["email"]) for e in events}}
    people = contacts_by_email(engine, set(emails.values()))
    ledger = _ledger_matches(
        engine, {str(e["abm_message_id"]) for e in events if e.get("abm_message_id")}
    )
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
        rows.append(
            {
                "provider": "sendgrid",
                "provider_event_id": str(event["sg_event_id"])[:255],
                "type": kind,
                "channel": "email",
                "occurred_at": datetime.fromtimestamp(float(event["timestamp"]), UTC),
                "account_id": account_id,
                "contact_id": contact_id,
                "campaign_id": campaign_id,
                "message_id": str(message_id)[:255] if message_id else None,
                "data": {}
                if DATA_FIELD_SET.isdisjoint(event)
                else {field: event[field] for field in DATA_FIELDS if field in event},
            }
        )
    report.stored = store_events(engine, rows)
    return report


def unsubscribe(engine: Engine, contact_id: int, campaign_id: int) -> bool:
    """Honour a one-click unsubscribe now; True when it was new. Idempotent."""
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
    return store_events(engine, [event]) == 1


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


# Mailgun event -> our event type (failed is a hard bounce only when `severity` is permanent).
MAILGUN_TYPES: dict[str, str | None] = {
    "delivered": "delivered",
    "opened": "open",
    "clicked": "click",
    "failed": "bounce",
    "unsubscribed": "unsubscribe",
    "complained": "spam_report",
    "accepted": None,
}


def verify_mailgun_signature(signing_key: str, signature: dict[str, Any], now: float) -> None:
    """HMAC-SHA256 of timestamp + token with the webhook signing key, as Mailgun signs."""
    try:
        timestamp, token, given = (
            str(signature["timestamp"]),
            str(signature["token"]),
            str(signature["signature"]),
        )
        sent_at = int(timestamp)
    except (KeyError, TypeError, ValueError):
        raise BadSignature("malformed signature block") from None
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("stale timestamp: replayed or delayed by more than 5 minutes")
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), given):
        raise BadSignature("signature does not match")


def mailgun_as_sendgrid(event: dict[str, Any]) -> dict[str, Any]:
    """A Mailgun `event-data` in the shape `ingest_sendgrid` stores (one matching path)."""
    try:
        kind = MAILGUN_TYPES.get(str(event["event"]))
        headers = (event.get("message") or {}).get("headers") or {}
        variables = event.get("user-variables") or {}
        shaped = {
            "event": {
                "open": "open",
                "click": "click",
                "delivered": "delivered",
                "bounce": "bounce",
                "unsubscribe": "unsubscribe",
                "spam_report": "spamreport",
            }.get(kind or "", "processed"),
            "sg_event_id": f"mailgun:{event['id']}",
            "timestamp": float(event["timestamp"]),
            "email": str(event["recipient"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BadEvents(f"mailgun event without {exc}") from None
    if kind == "bounce" and event.get("severity") != "permanent":
        shaped["event"] = "deferred"
    message_id = variables.get("abm_message_id") or headers.get("message-id")
    if message_id:
        shaped["abm_message_id"] = str(
            message_id if str(message_id).startswith("<") else f"<{message_id}>"
        )
    if event.get("url"):
        shaped["url"] = event["url"]
    return shaped


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

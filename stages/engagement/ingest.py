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
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import Engine, select, update

from models.db import chunked, session_scope
from models.store import contacts_by_email
from models.tables import Account, Contact, Delivery, utcnow
from stages.engagement.rollup import store_events

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


# The latest time a datetime can hold; events claiming to be later (or before 1970, or not a
# number at all) are refused before they reach the database.
LAST_TIMESTAMP = 253_402_300_799
# The fields that end up in text columns or in database queries.
TEXT_FIELDS = ("sg_event_id", "email", "abm_message_id")
# The fields ingest turns into text (str() of a deeply nested value raises RecursionError).
_STR_FIELDS = ("event", *TEXT_FIELDS)
# Provider fields kept in the event's `data`.
DATA_FIELDS = ("url", "reason", "type", "status")
DATA_FIELD_SET = frozenset(DATA_FIELDS)
# `data` is stored as JSON: a value nested deeper is refused here, before it can fail to
# serialise (RecursionError) deeper in the stack, halfway through storing.
MAX_DATA_DEPTH = 32


def storable(text: str) -> bool:
    """False for text no database column can hold: NUL (PostgreSQL refuses it in text) or a
    lone surrogate from a JSON escape such as \\ud800 (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(index: int, field: str, value: Any) -> None:
    try:
        text = str(value)
    except RecursionError:
        raise BadEvents(f"event {index}: {field} is nested too deeply") from None
    if field in TEXT_FIELDS and not storable(text):
        raise BadEvents(f"event {index}: {field} holds a NUL or invalid character")


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True when lists and objects nest more than `limit` levels (walked without recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            if isinstance(container, list | dict)
            for item in (container.values() if isinstance(container, dict) else container)
        ]
        if not level:
            return False
    return any(isinstance(item, list | dict) for item in level)


def _check_data(index: int, event: dict[str, Any]) -> None:
    for field in DATA_FIELDS:
        value = event.get(field)
        if isinstance(value, list | dict) and _nested_deeper_than(value, MAX_DATA_DEPTH):
            raise BadEvents(f"event {index}: {field} is nested too deeply")


def _check_timestamp(index: int, stamp: Any) -> None:
    try:
        stamp = float(stamp)
    except (OverflowError, TypeError, ValueError):
        raise BadEvents(f"event {index}: timestamp is not a usable number") from None
    if not (math.isfinite(stamp) and 0 <= stamp <= LAST_TIMESTAMP):
        raise BadEvents(f"event {index}: timestamp is out of range")


def check_events(events: list[dict[str, Any]]) -> None:
    """Refuse (BadEvents) events the database could not store: a timestamp out of range,
    text with NUL or lone surrogates. For events built in code (Mailgun's, reshaped);
    `parse_sendgrid` makes the same checks on what it parses."""
    for index, event in enumerate(events):
        _check_timestamp(index, event["timestamp"])
        for field in _STR_FIELDS:
            value = event.get(field)
            if value is not None:
                _check_text(index, field, value)
        _check_data(index, event)


def parse_sendgrid(body: bytes) -> list[dict[str, Any]]:
    """SendGrid's JSON array of events, refused (BadEvents, naming the event and the field)
    unless every event has the fields we rely on and can be stored: a timestamp a datetime
    can hold, text without NUL or lone surrogates. Checked before anything is stored, so a
    bad batch is a 400 with the reason, never a half-stored 500."""
    try:
        events = json.loads(body)
    except RecursionError:
        raise BadEvents("not JSON we accept: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEvents(f"not JSON: {exc}") from None
    if not isinstance(events, list):
        raise BadEvents("expected a JSON array of events")
    # Parsed text can hold a NUL or a lone surrogate only from a \\u escape or from UTF-8
    # surrogate bytes (ED A0-BF .., which json decodes with surrogatepass); a UTF-16 or
    # UTF-32 body has zero bytes. A body with none of these needs no per-field text check.
    plain = isinstance(body, bytes) and not (b"\\u" in body or b"\xed" in body or b"\0" in body)
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadEvents(f"event {index} is not an object")
        if not event.keys() >= REQUIRED_FIELDS:
            field = next(field for field in REQUIRED_ORDER if field not in event)
            raise BadEvents(f"event {index} has no {field!r}")
        stamp = event["timestamp"]
        if not isinstance(stamp, int | float):
            raise BadEvents(f"event {index}: timestamp must be a number")
        if not 0 <= stamp <= LAST_TIMESTAMP:  # also false for NaN
            _check_timestamp(index, stamp)
        for field in _STR_FIELDS:
            value = event.get(field)
            if value is not None and not (plain and value.__class__ is str):
                _check_text(index, field, value)
        if not DATA_FIELD_SET.isdisjoint(event):
            _check_data(index, event)
    return events


@dataclass
class IngestReport:
    received: int = 0
    stored: int = 0
    ignored: int = 0
    unmatched: int = 0
    reconciled: int = 0


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
    people = _people(engine, set(emails.values()))
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
    """HMAC-SHA256 of timestamp + token with the webhook signing key, as Mailgun signs.

    Compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError), and
    a forged block may hold any text, lone surrogates included (kept by surrogatepass)."""
    try:
        timestamp, token, given = (
            str(signature["timestamp"]),
            str(signature["token"]),
            str(signature["signature"]),
        )
        sent_at = int(timestamp)
    except (KeyError, TypeError, ValueError, RecursionError):
        raise BadSignature("malformed signature block") from None
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("stale timestamp: replayed or delayed by more than 5 minutes")
    signed = (timestamp + token).encode("utf-8", "surrogatepass")
    expected = hmac.new(signing_key.encode(), signed, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, given.encode("utf-8", "surrogatepass")):
        raise BadSignature("signature does not match")


def _mailgun_object(value: Any, name: str) -> dict[str, Any]:
    """`value` when it is an object (or absent: {}); BadEvents naming the field otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvents(f"mailgun event: {name} must be an object")
    return value


def mailgun_as_sendgrid(event: dict[str, Any]) -> dict[str, Any]:
    """A Mailgun `event-data` in the shape `ingest_sendgrid` stores (one matching path).
    Malformed input raises BadEvents naming the field (HTTP 400), never another error."""
    if not isinstance(event, dict):
        raise BadEvents("mailgun event: event-data must be an object")
    message = _mailgun_object(event.get("message"), "message")
    headers = _mailgun_object(message.get("headers"), "message.headers")
    variables = _mailgun_object(event.get("user-variables"), "user-variables")
    missing = next((f for f in ("event", "id", "timestamp", "recipient") if f not in event), None)
    if missing:
        raise BadEvents(f"mailgun event without {missing!r}")
    try:
        kind = MAILGUN_TYPES.get(str(event["event"]))
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
            "email": str(event["recipient"]),
        }
        message_id = variables.get("abm_message_id") or headers.get("message-id")
        if message_id:
            shaped["abm_message_id"] = str(
                message_id if str(message_id).startswith("<") else f"<{message_id}>"
            )
    except RecursionError:
        raise BadEvents("mailgun event: nested too deeply") from None
    try:
        shaped["timestamp"] = float(event["timestamp"])
    except (OverflowError, TypeError, ValueError):
        raise BadEvents("mailgun event: timestamp is not a usable number") from None
    if kind == "bounce" and event.get("severity") != "permanent":
        shaped["event"] = "deferred"
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

"""SendGrid's Event Webhook: the signature check (ECDSA over timestamp + body) and the
parsing of its JSON body into checked events, before anything is matched or stored."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from connectors.email.webhook_events import (
    MAX_CLOCK_SKEW_SECONDS,
    BadEvents,
    BadSignature,
    split_keys,
)

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
REQUIRED_ORDER = ("event", "sg_event_id", "timestamp", "email")
_PEM_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.DOTALL)
REQUIRED_FIELDS = frozenset(REQUIRED_ORDER)


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """One key as SendGrid shows it (base64 of the DER public key); ValueError saying what
    is wrong with it otherwise."""
    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError("not base64 of a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key")
    return key


def load_public_keys(value: str | None) -> tuple[list[ec.EllipticCurvePublicKey], list[str]]:
    """The usable keys of ABM_SENDGRID_WEBHOOK_PUBLIC_KEY (several while a key is rotated;
    each as SendGrid shows it, or wrapped in PEM lines) and, for each one that is not,
    `key N of M: why`."""
    text = value or ""
    texts = ["".join(body.split()) for body in _PEM_KEY.findall(text)]
    texts += split_keys(_PEM_KEY.sub(" ", text))
    keys, problems = [], []
    for number, text in enumerate(texts, start=1):
        try:
            keys.append(load_public_key(text))
        except ValueError as exc:
            problems.append(f"key {number} of {len(texts)}: {exc}")
    return keys, problems


@lru_cache(maxsize=8)
def _loaded_keys(value: str) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """The setting's usable keys, parsed once per value: loading a key costs about as much
    as checking a signature with it."""
    return tuple(load_public_keys(value)[0])


def verify_sendgrid_signature(
    public_keys: str | Sequence[ec.EllipticCurvePublicKey],
    signature_b64: str,
    timestamp: str,
    body: bytes,
    now: float,
) -> None:
    """ECDSA P-256 / SHA-256 over timestamp + raw body, as SendGrid signs event webhooks;
    any one of the keys (the setting's text, or keys already loaded) may have signed."""
    keys = _loaded_keys(public_keys) if isinstance(public_keys, str) else public_keys
    if not keys:
        raise BadSignature("no usable public key is configured")
    try:
        signature = base64.b64decode(signature_b64)
    except (ValueError, binascii.Error):
        raise BadSignature("malformed signature") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise BadSignature("malformed timestamp") from None
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("stale timestamp: replayed or delayed by more than 5 minutes")
    signed = timestamp.encode() + body
    for key in keys:
        try:
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
            return
        except InvalidSignature:
            continue
    raise BadSignature("signature does not match")


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

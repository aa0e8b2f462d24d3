"""Mailgun's webhooks: the HMAC signature check and each `event-data` reshaped into the
SendGrid event form, so one matching path serves both providers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from connectors.email.webhook_events import (
    MAX_CLOCK_SKEW_SECONDS,
    BadEvents,
    BadSignature,
    split_keys,
)

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


def verify_mailgun_signature(
    signing_keys: str | Sequence[str], signature: dict[str, Any], now: float
) -> None:
    """HMAC-SHA256 of timestamp + token, as Mailgun signs, with any of the signing keys (the
    setting's text, or keys already split). An event on a subaccount's domain also carries
    `parent-signature`, the same HMAC with the primary account's key, so the parent's key
    alone accepts every subaccount's events.

    Compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError), and
    a forged block may hold any text, lone surrogates included (kept by surrogatepass)."""
    keys = split_keys(signing_keys) if isinstance(signing_keys, str) else list(signing_keys)
    if not keys:
        raise BadSignature("no signing key is configured")
    try:
        timestamp, token = str(signature["timestamp"]), str(signature["token"])
        fields = ["signature", *(["parent-signature"] if "parent-signature" in signature else [])]
        given = [str(signature[field]).encode("utf-8", "surrogatepass") for field in fields]
        sent_at = int(timestamp)
    except (KeyError, TypeError, ValueError, RecursionError):
        raise BadSignature("malformed signature block") from None
    if abs(now - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("stale timestamp: replayed or delayed by more than 5 minutes")
    signed = (timestamp + token).encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:
        expected = hmac.new(key.encode(), signed, hashlib.sha256).hexdigest().encode()
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    if not matched:
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

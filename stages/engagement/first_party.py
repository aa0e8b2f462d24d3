"""Engagement we observe ourselves: clicks through our own redirect, opens of our pixel, and
page views on the user's own site after a click (abm/tracking.py receives them).

Each becomes an event row matched to its ledger row (message, campaign, step, variant,
person, account), stored once, and counted in the account's engagement score:

- `click`: once per message and link (the link is the URL the token holds);
- `click_scanner`: a click a mail security scanner made, stored once per message and link
  apart from the person's own, and never counted (its weight must be 0, stop rules do not
  read it). The rule, in this order: a HEAD request; no user agent, or one that names a
  scanner, a bot or an HTTP library (`SCANNER_AGENTS`); or a click sooner than
  ABM_CLICK_SCANNER_SECONDS (60) after the message was sent, since gateways follow every
  link within seconds of delivery and people rarely do;
- `open`: once per message;
- `web_visit`: once per person, page and half hour (`VISIT_WINDOW`), with the path only.

Nothing about the request is stored: no IP address, no user agent (only, for a scanner,
which rule said so)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, select

from models.db import chunked
from models.tables import Delivery
from stages.delivery.uncertain import mark_sent_by_message_id
from stages.engagement.rollup import EngagementRules, store_events

PROVIDER = "abm"  # provider of first-party events; `simulated` for the demo's
VISIT_WINDOW = 1800  # seconds: the same page viewed again within it is one visit
MAX_URL = 2000  # characters of a clicked URL kept with the event
# Mail security gateways, link scanners and previewers, bots, and HTTP libraries (a person
# clicks in a browser or a mail app). Matched anywhere in the User-Agent, case-insensitive.
SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|ppops|messagelabs|symantec|trend ?micro|"
    r"forcepoint|fortinet|fortiguard|sophos|ironport|cisco|zscaler|check ?point|avanan|"
    r"abnormal ?security|safelinks|safe ?links|microsoft office existence|ms-office|"
    r"scanner|crawler|spider|(?<![a-z])bot\b|bot/|slackbot|twitterbot|linkedinbot|"
    r"headlesschrome|phantomjs|python|curl/|wget/|"
    r"go-http-client|java/|okhttp|libwww|httpclient|http_request|axios|node-fetch|"
    r"preview|facebookexternalhit|slurp|googleimageproxy|yahoomailproxy",
    re.IGNORECASE,
)


def scanner_agent(user_agent: str) -> str | None:
    """Why a click with this User-Agent is a scanner's, or None for a person's browser."""
    if not user_agent.strip():
        return "no user agent"
    found = SCANNER_AGENTS.search(user_agent)
    return f"user agent names {found.group(0).lower()!r}" if found else None


@dataclass(frozen=True, slots=True)
class Hit:
    """One request to record: a click (`url`), an open, or a page view (`path`). `scanner`
    is what the request itself gave away (a HEAD request, a scanner's user agent)."""

    kind: Literal["click", "open", "visit"]
    delivery_id: int
    at: datetime
    url: str | None = None
    path: str | None = None
    scanner: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of a hit: the event type it was stored as (None: no such message), why
    it was a scanner's, and the account it is about (to roll up)."""

    type: str | None
    scanner: str | None = None
    account_id: int | None = None


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _event(
    hit: Hit, row: Any, scanner_seconds: int, simulated: bool
) -> tuple[dict[str, Any], Recorded]:
    data: dict[str, Any] = {"step": row.step, "variant": row.variant}
    if hit.kind == "click":
        assert hit.url is not None
        scanner = hit.scanner
        sent_at = _aware(row.sent_at)
        if scanner is None and sent_at is not None:
            elapsed = (hit.at - sent_at).total_seconds()
            if elapsed < scanner_seconds:
                scanner = (
                    f"clicked {max(0.0, elapsed):.0f} s after sending, sooner than "
                    f"ABM_CLICK_SCANNER_SECONDS ({scanner_seconds} s)"
                )
        kind = "click_scanner" if scanner else "click"
        link = _key(hit.url)
        key = f"{kind}:{hit.delivery_id}:{link}"
        data.update(url=hit.url[:MAX_URL], link=link)
        if scanner:
            data["scanner"] = scanner
    elif hit.kind == "open":
        kind, scanner, key = "open", None, f"open:{hit.delivery_id}"
    else:
        assert hit.path is not None
        kind, scanner = "web_visit", None
        window = int(hit.at.timestamp()) // VISIT_WINDOW
        key = f"visit:{hit.delivery_id}:{_key(hit.path)}:{window}"
        data["path"] = hit.path
    if simulated:
        data["simulated"] = True
    event = {
        "provider": "simulated" if simulated else PROVIDER,
        "provider_event_id": key,
        "type": kind,
        "channel": "email" if hit.kind != "visit" else "web",
        "occurred_at": hit.at,
        "account_id": row.account_id,
        "contact_id": row.contact_id,
        "campaign_id": row.campaign_id,
        "message_id": row.message_id,
        "data": data,
    }
    return event, Recorded(kind, scanner, row.account_id)


def record_hits(
    engine: Engine,
    hits: Sequence[Hit],
    rules: EngagementRules | None = None,
    *,
    scanner_seconds: int = 60,
    simulated: bool = False,
) -> list[Recorded]:
    """Store the hits as events, once each, in one transaction; one Recorded per hit, in
    order. Given `rules`, the accounts they touch are rolled up in that transaction too
    (the web server rolls up apart, in batches: `abm.tracking.HitWriter`). A hit on a
    message the ledger does not have (a preview's, or a row since deleted) is not stored.
    A hit also proves its message left: one a crash had left `uncertain` becomes `sent`."""
    rows = {}
    with engine.connect() as connection:
        for batch in chunked(sorted({hit.delivery_id for hit in hits if hit.delivery_id}), 2000):
            found = connection.execute(
                select(
                    Delivery.id,
                    Delivery.campaign_id,
                    Delivery.step,
                    Delivery.variant,
                    Delivery.contact_id,
                    Delivery.account_id,
                    Delivery.sent_at,
                    Delivery.message_id,
                    Delivery.state,
                ).where(Delivery.id.in_(batch))
            )
            rows.update({row.id: row for row in found})
    events, outcomes = [], []
    for hit in hits:
        row = rows.get(hit.delivery_id)
        if row is None:
            outcomes.append(Recorded(None))
            continue
        event, outcome = _event(hit, row, scanner_seconds, simulated)
        events.append(event)
        outcomes.append(outcome)
    if events:
        store_events(engine, events, rules)
    in_doubt = {row.message_id for row in rows.values() if row.state in ("uncertain", "sending")}
    if in_doubt and not simulated:
        mark_sent_by_message_id(engine, in_doubt, "reconciled: a tracked link or pixel was hit")
    return outcomes

"""Why an account's engagement score is what it is, for `abm accounts show`: the score by
source (email, LinkedIn, web, intent) and the breadth bonus, as the last rollup kept them
with the account, with the events and topics that contributed most to each source, and
the account's intent topics with their scores and dates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from core.intent import SURGE_SCORE
from models.tables import Campaign, Contact, EngagementEvent, utcnow
from stages.engagement.rollup import EngagementRules, account_engagement, counted_types
from stages.engagement.sources import SOURCES, source_totals

TOP_EVENTS = 5  # contributions listed per source
INTENT_TOPICS = 50  # intent signals listed, newest first


def _what(event: Mapping[str, Any]) -> str:
    """An event in a few words: what, and by whom or on what."""
    kind, data = event["type"], event.get("data") or {}
    if kind == "intent":
        return f"intent: {data.get('topic', '?')}, score {float(data.get('score') or 0):g}"
    if kind == "web_visit":
        return f"page view {data.get('path', '?')}"
    words = kind.replace("_", " ")
    if data.get("count", 1) != 1:
        words += f" x{data['count']}"
    if event.get("email"):
        words += f" by {event['email']}"
    if event.get("campaign"):
        words += f" ({event['campaign']})"
    return words


def _events(engine: Engine, account_id: int, rules: EngagementRules) -> list[dict[str, Any]]:
    """The account's events that can count under `rules`, with what describes them."""
    query = (
        select(
            EngagementEvent.type,
            EngagementEvent.channel,
            EngagementEvent.provider,
            EngagementEvent.occurred_at,
            EngagementEvent.contact_id,
            EngagementEvent.data,
            Contact.role,
            Contact.email,
            Campaign.key.label("campaign"),
        )
        .outerjoin(Contact, Contact.id == EngagementEvent.contact_id)
        .outerjoin(Campaign, Campaign.id == EngagementEvent.campaign_id)
        .where(
            EngagementEvent.account_id == account_id,
            EngagementEvent.type.in_(sorted(counted_types(rules) | {"intent"})),
        )
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def engagement_by_source(
    engine: Engine,
    account: Mapping[str, Any],
    rules: EngagementRules,
    now: datetime | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the score by source, the intent topics) of one account row (`models.queries`).

    The numbers are those the last rollup kept with the account (`engagement_sources`):
    they add up, with the breadth bonus, to its `engagement_score` (when its events weigh
    more than nothing; else the score is 0). The contributions are worked out again from
    the events at the same moment (`as_of`), so each source's top events are parts of its
    number. An account not rolled up since per-source scores were kept is worked out now."""
    stored = account.get("engagement_sources") or {}
    as_of = _moment(stored.get("as_of")) or now or utcnow()
    events = _events(engine, account["id"], rules)
    contributions: list[tuple[dict[str, Any], str, float]] = []
    live = account_engagement(events, rules, as_of, contributions)
    sources = source_totals(stored) or dict(live.sources)
    top: dict[str, list[dict[str, Any]]] = {source: [] for source in SOURCES}
    ranked = sorted(contributions, key=lambda c: (-abs(c[2]), c[0]["occurred_at"]))
    for event, source, weight in ranked:
        if round(weight, 2) == 0 or len(top[source]) >= TOP_EVENTS:
            continue
        item = {
            "at": event["occurred_at"],
            "type": event["type"],
            "what": _what(event),
            "weight": round(weight, 2),
            "from": event["provider"],
            "contact": event.get("email"),
        }
        if event["type"] == "intent":
            item["topic"] = (event.get("data") or {}).get("topic")
        top[source].append(item)
    breakdown = {
        "score": account.get("engagement_score", live.score) if stored else live.score,
        "as_of": as_of,
        "sources": sources,
        "breadth": float(stored["breadth"]) if stored else live.breadth,
        "people": live.people,
        "roles": live.roles,
        "top": top,
        "kept": bool(stored),
    }
    return breakdown, _intent_topics(events, contributions)


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None


def _intent_topics(
    events: list[dict[str, Any]], contributions: list[tuple[dict[str, Any], str, float]]
) -> list[dict[str, Any]]:
    """The account's intent signals, newest first (then the highest score): topic, score,
    whether it is a surge, day, source and what it weighs in the score."""
    weights = {id(event): weight for event, _, weight in contributions}
    signals = [event for event in events if event["type"] == "intent"]
    signals.sort(key=lambda e: (e["occurred_at"], float((e["data"] or {}).get("score") or 0)))
    topics = []
    for event in reversed(signals[-INTENT_TOPICS:]):
        data = event["data"] or {}
        score = float(data.get("score") or 0)
        topic = {
            "topic": data.get("topic"),
            "score": score,
            "surging": bool(data.get("surge")) if "surge" in data else score >= SURGE_SCORE,
            "date": event["occurred_at"].date().isoformat(),
            "source": event["provider"],
            "weight": round(weights.get(id(event), 0.0), 2),
        }
        for name in ("level", "buying_stage"):
            if data.get(name):
                topic[name] = data[name]
        topics.append(topic)
    return topics

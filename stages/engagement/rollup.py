"""Step 5 of the pipeline, write back: engagement events become an account engagement score
and a journey stage. Scoring and stage rules are pure functions over plain rows."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from sqlalchemy import Engine, case, func, select, update

from core.errors import ConfigError
from core.intent import IntentFilter, IntentSignal, TopicRules, matching_signal
from core.settings import DEFAULTS_DIR, Settings
from core.vocabulary import ENGAGED, STAGES
from core.yamlfile import load_model
from models.db import chunked, session_scope
from models.store import insert_new_events, insert_new_rows, update_rows_by_id
from models.tables import (
    Account,
    Contact,
    Delivery,
    EngagementEvent,
    StageChange,
    Suppression,
    utcnow,
)
from stages.engagement.sources import SOURCES, source_of, split_exactly, stored_sources


class StageRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_score: float = 0
    min_people: int = 0
    min_roles: int = 0
    or_events: list[str] = []
    or_intent: IntentFilter | None = Field(
        None, description="intent data that moves the account here too (see core/intent.py)"
    )


class Breadth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_extra_person: float = 4
    max_people_bonus: float = 20
    per_role: float = 5
    max_role_bonus: float = 25


class PageWeight(BaseModel):
    """The weight of a page view on the user's own site (`web_visit`) whose path matches
    `path`: a glob over the path alone (`*` matches anything, `/` included; no `*` means that
    exact path), such as `/pricing*`."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=500)
    weight: float = Field(allow_inf_nan=False)

    @field_validator("path")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.startswith("/") or not value.isascii() or "?" in value.replace("*", ""):
            raise ValueError(
                f"{value!r}: a page pattern must start with / and hold a path only, "
                "ASCII (as browsers send it, %-encoded), like /pricing*"
            )
        return value


# Scanner clicks are machines (mail security gateways following every link), never people.
UNWEIGHTED = ("click_scanner",)


class EngagementRules(BaseModel):
    """The engagement YAML: weights, decay, breadth bonus, page weights and stage rules."""

    model_config = ConfigDict(extra="forbid")
    half_life_days: float = Field(30, gt=0)
    weights: dict[str, float]
    breadth: Breadth = Breadth()
    pages: list[PageWeight] = Field(
        [], description="web_visit weights by page, first match wins; else weights.web_visit"
    )
    stages: dict[str, StageRule]
    topics: TopicRules = Field(
        TopicRules(), description="intent weights by topic; unlisted topics: default_weight"
    )
    _page_weights: dict[str, float] = PrivateAttr(default_factory=dict)

    def topic_weight(self, topic: str) -> float:
        """The weight of an intent signal on `topic` at score 100 (`topics` in the rules)."""
        return self.topics.weight_of(topic)

    @field_validator("weights")
    @classmethod
    def _scanners_never_count(cls, weights: dict[str, float]) -> dict[str, float]:
        for kind in UNWEIGHTED:
            if weights.get(kind):
                raise ValueError(
                    f"{kind} must weigh 0: a mail scanner following links is not engagement"
                )
        return weights

    def page_weight(self, path: str) -> float:
        """The weight of a page view of `path`: the first `pages` pattern that matches, else
        `weights.web_visit`. Worked out once per path."""
        weight = self._page_weights.get(path)
        if weight is None:
            weight = next(
                (page.weight for page in self.pages if fnmatchcase(path, page.path)),
                self.weights.get("web_visit", 0),
            )
            if len(self._page_weights) < 10_000:
                self._page_weights[path] = weight
        return weight


def load_engagement_rules(path: Path | None = None) -> EngagementRules:
    return load_model(path or DEFAULTS_DIR / "engagement.yaml", EngagementRules)


def engagement_rules_from(settings: Settings) -> EngagementRules:
    """The rules ABM_ENGAGEMENT_RULES points at, else the documented default: every caller
    reads them here, so the setting means the same for the webhook, the CLI and the flows.
    A file that cannot be used is a ConfigError naming the setting as well as the file."""
    try:
        return load_engagement_rules(settings.engagement_rules)
    except ConfigError as exc:
        if settings.engagement_rules is None:
            raise
        raise ConfigError(f"ABM_ENGAGEMENT_RULES: {exc}") from None


def counted_types(rules: EngagementRules) -> frozenset[str]:
    """The event types that can change a score or a stage under these rules; the rollup reads
    only these (deliveries, with weight 0, are most of the events and change nothing)."""
    triggers = {kind for rule in rules.stages.values() for kind in rule.or_events}
    visits = {"web_visit"} if any(page.weight for page in rules.pages) else set()
    intent = rules.topics.counts or any(rule.or_intent for rule in rules.stages.values())
    visits |= {"intent"} if intent else set()
    return frozenset(
        {kind for kind, weight in rules.weights.items() if weight} | ENGAGED | triggers | visits
    )


@dataclass(frozen=True)
class AccountEngagement:
    score: float
    people: int
    roles: int
    event_types: frozenset[str]
    # the score split by source (email, linkedin, web, intent, other) and the breadth bonus,
    # each to one decimal: they add up to `score` (unless the events weigh less than 0)
    sources: dict[str, float] = field(default_factory=dict)
    breadth: float = 0.0
    intent: tuple[IntentSignal, ...] = ()
    as_of: datetime | None = None


def account_engagement(
    events: Iterable[dict[str, Any]],
    rules: EngagementRules,
    now: datetime,
    contributions: list[tuple[dict[str, Any], str, float]] | None = None,
) -> AccountEngagement:
    """Decayed, weighted sum of one account's events plus a bonus for breadth, split by
    source (`source_of`). Given a list, `contributions` gets (event, source, weight now) for
    every event."""
    total = 0.0
    people: set[int] = set()
    roles: set[str] = set()
    types: set[str] = set()
    by_source = dict.fromkeys(SOURCES, 0.0)
    intent: list[IntentSignal] = []
    for event in events:
        age_days = max(0.0, (now - event["occurred_at"]).total_seconds() / 86400)
        # aggregated events (ad analytics) count with diminishing returns: 1 -> 1, 100 -> 6.7
        data = event.get("data") or {}
        count = data.get("count", 1)
        if event["type"] == "web_visit":  # weighed by the page (`pages` in the rules)
            weight = rules.page_weight(str(data.get("path", "")))
        elif event["type"] == "intent":  # weighed by topic and score (`topics` in the rules)
            topic, score = str(data.get("topic", "")), float(data.get("score") or 0)
            weight = rules.topic_weight(topic) * score / 100
            intent.append(IntentSignal(topic, score, event["occurred_at"]))
        else:
            weight = rules.weights.get(event["type"], 0) * math.log2(1 + count)
        weight *= 0.5 ** (age_days / rules.half_life_days)
        total += weight
        source = source_of(event["type"], event.get("channel"))
        by_source[source] += weight
        if contributions is not None:
            contributions.append((event, source, weight))
        types.add(event["type"])
        if event["type"] in ENGAGED and event.get("contact_id") is not None:
            people.add(event["contact_id"])
            if event.get("role"):
                roles.add(event["role"])
    breadth = rules.breadth
    bonus = min(breadth.max_people_bonus, breadth.per_extra_person * max(0, len(people) - 1))
    bonus += min(breadth.max_role_bonus, breadth.per_role * len(roles))
    score = round(max(0.0, total + bonus) if total > 0 else max(0.0, total), 1)
    if total > 0:  # the parts add up to the score; else it is 0 and there is no bonus
        parts = split_exactly({**by_source, "": bonus}, score)
        bonus = parts.pop("")
    else:
        parts, bonus = {name: round(value, 1) for name, value in by_source.items()}, 0.0
    return AccountEngagement(
        score, len(people), len(roles), frozenset(types), parts, bonus, tuple(intent), now
    )


def next_stage(
    current: str, engagement: AccountEngagement, rules: EngagementRules
) -> tuple[str, str] | None:
    """The furthest stage the rules allow beyond `current`, with the reason; None if none.

    A stage's `or_events` or `or_intent` reach it even past stages whose conditions the
    account does not meet (a surge on a topic you sell is no score); the score, people
    and roles conditions only climb from stage to stage."""
    best = None
    climbing = True
    for stage in STAGES[STAGES.index(current) + 1 :]:
        rule = rules.stages.get(stage)
        if rule is None:
            break
        hits = sorted(engagement.event_types & set(rule.or_events))
        if hits:
            best = (stage, f"{', '.join(hits)} received")
            continue
        surge = _intent_reason(rule.or_intent, engagement)
        if surge:
            best = (stage, surge)
            continue
        if not climbing:
            continue
        if (
            engagement.score >= rule.min_score
            and engagement.people >= rule.min_people
            and engagement.roles >= rule.min_roles
        ):
            best = (
                stage,
                f"score {engagement.score:g} >= {rule.min_score:g}, "
                f"{engagement.people} people, {engagement.roles} roles engaged",
            )
            continue
        climbing = False
    return best


def _intent_reason(condition: IntentFilter | None, engagement: AccountEngagement) -> str | None:
    """Why `condition` (a stage's `or_intent`) holds for this account, or None."""
    if condition is None or not engagement.intent:
        return None
    now = engagement.as_of or utcnow()
    signal = matching_signal(condition, engagement.intent, now)
    if signal is None:
        return None
    return (
        f"intent: {signal.topic} scored {signal.score:g} on {signal.occurred_at:%Y-%m-%d} "
        f"(>= {condition.min_score:g} within {condition.window.days} days)"
    )


def evidence_for_stage(
    events: list[dict[str, Any]],
    engagement: AccountEngagement,
    rules: EngagementRules,
    now: datetime,
    set_at: datetime | None,
) -> AccountEngagement:
    """What may move an account's stage: all its engagement, or, once a person or an import
    set the stage at `set_at`, only the events after that, so that engagement they had
    already weighed cannot undo their choice."""
    if set_at is None:
        return engagement
    return account_engagement([e for e in events if e["occurred_at"] > set_at], rules, now)


ROLLUP_SOURCE = "engagement"
# The event types whose score reads their data: aggregated ad analytics (`count`) and page
# views (`path`, for the page weight). A roll-up reads no other event's data.
READS_DATA = ("ad_impression", "ad_click", "web_visit", "intent")


def rollup_accounts(engine: Engine, account_ids: list[int], rules: EngagementRules) -> int:
    """Recompute engagement score and stage of these accounts; returns stage changes."""
    with session_scope(engine) as session:
        return rollup_in(session, account_ids, rules, utcnow())


def rollup_in(
    session: Any, account_ids: Iterable[int], rules: EngagementRules, now: datetime
) -> int:
    """`rollup_accounts` inside the caller's transaction, so that events and the scores and
    stages they change commit together. The accounts' rows are locked first, in id order
    (PostgreSQL; SQLite writes one at a time anyway): two webhooks touching one account roll
    it up one after the other, the second seeing the first one's events."""
    changes = 0
    types = sorted(counted_types(rules))
    for batch in chunked(sorted(set(account_ids)), 2000):
        stages = dict(
            session.execute(
                select(Account.id, Account.stage)
                .where(Account.id.in_(batch))
                .order_by(Account.id)
                .with_for_update(key_share=True)
            ).all()
        )
        set_by_hand = dict(
            session.execute(
                select(StageChange.account_id, func.max(StageChange.changed_at))
                .where(StageChange.account_id.in_(batch), StageChange.source != ROLLUP_SOURCE)
                .group_by(StageChange.account_id)
            ).all()
        )
        events: dict[int, list[dict[str, Any]]] = {account_id: [] for account_id in stages}
        query = (
            select(
                EngagementEvent.account_id,
                EngagementEvent.contact_id,
                EngagementEvent.type,
                EngagementEvent.channel,
                EngagementEvent.occurred_at,
                # only the events whose score reads their data: decoding every click's
                # data (its URL...) was most of a roll-up's time
                case((EngagementEvent.type.in_(READS_DATA), EngagementEvent.data)),
                Contact.role,
            )
            .outerjoin(Contact, Contact.id == EngagementEvent.contact_id)
            .where(EngagementEvent.account_id.in_(batch), EngagementEvent.type.in_(types))
        )
        # through the session's connection: plain rows, without the ORM's loading machinery
        rows = session.connection().execute(query).tuples()
        for account_id, contact_id, kind, channel, occurred_at, data, role in rows:
            events[account_id].append(
                {
                    "contact_id": contact_id,
                    "type": kind,
                    "channel": channel,
                    "occurred_at": occurred_at,
                    "data": data,
                    "role": role,
                }
            )
        updates, history = [], []
        for account_id, account_events in events.items():
            engagement = account_engagement(account_events, rules, now)
            stage = stages[account_id]
            set_at = set_by_hand.get(account_id)
            evidence = evidence_for_stage(account_events, engagement, rules, now, set_at)
            moved = next_stage(stage, evidence, rules)
            if moved:
                reason = moved[1]
                if set_at is not None:
                    reason += f", counting events since the stage was set on {set_at:%Y-%m-%d}"
                history.append(
                    {
                        "account_id": account_id,
                        "from_stage": stage,
                        "to_stage": moved[0],
                        "reason": reason,
                        "source": ROLLUP_SOURCE,
                        "changed_at": now,
                    }
                )
                stage = moved[0]
            updates.append(
                {
                    "_id": account_id,
                    "engagement_score": engagement.score,
                    "stage": stage,
                    "engagement_sources": stored_sources(engagement),
                }
            )
        # `updated_at` says the account changed as imports, audiences and incremental
        # scoring see it: a new stage does (audiences filter on it), a score that decayed
        # does not, or every rollup would make every engaged account look edited
        moved = {row["account_id"] for row in history}
        update_rows_by_id(
            session, Account, [u for u in updates if u["_id"] in moved], updated_at=now
        )
        update_rows_by_id(session, Account, [u for u in updates if u["_id"] not in moved])
        if history:
            session.execute(StageChange.__table__.insert(), history)
        changes += len(history)
    return changes


EVENT_BATCH = 10_000


def store_events(
    engine: Engine, events: list[dict[str, Any]], rules: EngagementRules | None = None
) -> int:
    """Insert events once per (provider, provider_event_id); returns how many were new.

    Unsubscribes, hard bounces and spam reports become suppressions in the same transaction,
    so no later send can slip through. Given `rules`, the accounts of these events are rolled
    up in it too (only those), so that once the events are stored the accounts' scores and
    stages already count them."""
    with session_scope(engine) as session:
        return store_events_in(session, engine, events, rules, utcnow())


def store_events_in(
    session: Any,
    engine: Engine,
    events: list[dict[str, Any]],
    rules: EngagementRules | None,
    now: datetime,
) -> int:
    """`store_events` inside the caller's transaction (a CRM pull stores a page of
    meetings with its cursor)."""
    inserted = 0
    for batch in chunked(events, EVENT_BATCH):
        inserted += insert_new_events(session, engine, batch, now)
        _suppress_from_events(session, engine, batch, now)
    if rules is not None and inserted:
        touched = {e["account_id"] for e in events if e.get("account_id") is not None}
        rollup_in(session, touched, rules, now)
    return inserted


STATUS_FOR_EVENT = {"unsubscribe": "unsubscribed", "bounce": "bounced", "spam_report": "suppressed"}


def _suppress_from_events(session: Any, engine: Engine, events: list[dict], now: Any) -> None:
    by_status: dict[str, set[int]] = {}
    for event in events:
        status = STATUS_FOR_EVENT.get(event["type"])
        if status and event.get("contact_id") is not None:
            by_status.setdefault(status, set()).add(event["contact_id"])
    for status, contact_ids in by_status.items():
        ids = sorted(contact_ids)
        session.execute(
            update(Contact)
            .where(Contact.id.in_(ids), Contact.status != "unsubscribed")
            .values(status=status, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        emails = session.execute(select(Contact.email).where(Contact.id.in_(ids))).scalars()
        rows = [
            {
                "kind": "email",
                "value": email,
                "channel": "email",
                "reason": status,
                "source": "engagement",
                "created_at": now,
            }
            for email in emails
        ]
        insert_new_rows(session, engine, Suppression.__table__, rows, ["kind", "value", "channel"])


def _chance(message_id: str, event: str) -> float:
    """A deterministic number in [0, 1) per message and event type."""
    digest = hashlib.sha256(f"{message_id}:{event}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


OPEN_RATE = {
    "c_level": 0.30,
    "vp": 0.38,
    "director": 0.45,
    "manager": 0.50,
    "individual_contributor": 0.42,
}


def simulated_events(sent: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plausible engagement for sent messages, the same every run (for the demo); each
    event says `{"simulated": true}` in its data, so it is never taken for a real one."""
    events = []
    for row in sent:
        mid, at = row["message_id"], row["sent_at"]

        def add(kind: str, hours: float, row: dict = row, mid: str = mid, at: Any = at) -> None:
            events.append(
                {
                    "provider": "simulated",
                    "provider_event_id": f"{mid}:{kind}",
                    "type": kind,
                    "channel": "email",
                    "occurred_at": at + timedelta(hours=hours),
                    "account_id": row["account_id"],
                    "contact_id": row["contact_id"],
                    "campaign_id": row["campaign_id"],
                    "message_id": mid,
                    "data": {"simulated": True},
                }
            )

        if _chance(mid, "bounce") < 0.02:
            add("bounce", 0.01)
            continue
        add("delivered", 0.01)
        tier_boost = {1: 1.5, 2: 1.2}.get(row.get("tier"), 1.0)
        if _chance(mid, "open") < OPEN_RATE.get(row.get("seniority") or "", 0.4) * tier_boost:
            add("open", 2 + 30 * _chance(mid, "open-at"))
            if _chance(mid, "click") < 0.15 * tier_boost:
                add("click", 3 + 30 * _chance(mid, "click-at"))
            if _chance(mid, "reply") < 0.05 * tier_boost:
                add("reply", 6 + 48 * _chance(mid, "reply-at"))
                if _chance(mid, "meeting") < 0.3:
                    add("meeting", 72 + 96 * _chance(mid, "meeting-at"))
            elif _chance(mid, "unsubscribe") < 0.02:
                add("unsubscribe", 4)
    return events


# The demo's companies all live under the reserved `.example` top-level domain (RFC 2606).
DEMO_DOMAIN_SUFFIX = ".example"


def refuse_simulation_on_real_data(engine: Engine) -> None:
    """Invented engagement would move real accounts along their journey and stop their real
    follow-ups, so it is only ever made in a database of demo accounts."""
    with engine.connect() as connection:
        real = connection.execute(
            select(Account.domain)
            .where(Account.domain.not_like(f"%{DEMO_DOMAIN_SUFFIX}"))
            .order_by(Account.domain)
            .limit(1)
        ).scalar()
    if real is not None:
        raise ConfigError(
            f"simulated engagement is for the demo's own database only, and this one holds "
            f"real accounts (e.g. {real}): nothing was simulated or sent. Run campaigns "
            "without simulate; `abm demo` needs an empty or demo database (ABM_DATABASE_URL)"
        )


def simulate_campaign_engagement(engine: Engine, campaign_id: int) -> int:
    """Demo only: invent engagement for the messages a campaign sent; idempotent."""
    refuse_simulation_on_real_data(engine)
    with engine.connect() as connection:
        sent = connection.execute(
            select(
                Delivery.message_id,
                Delivery.sent_at,
                Delivery.account_id,
                Delivery.contact_id,
                Delivery.campaign_id,
                Contact.seniority,
                Account.tier,
            )
            .join(Contact, Contact.id == Delivery.contact_id)
            .join(Account, Account.id == Delivery.account_id)
            .where(Delivery.campaign_id == campaign_id, Delivery.state == "sent")
        ).mappings()
        events = simulated_events(dict(row) for row in sent)
    return store_events(engine, events)

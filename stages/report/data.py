"""The report's numbers, read once from the accounts, the delivery ledger and the engagement
events, so that the HTML page, the Prefect artifact and `abm report --json` agree.

`report_data` only reads, and what it returns holds no personal data (account domains and
names, never a person's email or name)."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, literal_column, select

from core.intent import SURGE_SCORE, topic_key
from core.vocabulary import ENGAGEMENT_SOURCES, EVENT_TYPES, STAGES
from models.tables import (
    Account,
    Campaign,
    Delivery,
    EngagementEvent,
    StageChange,
    utcnow,
)
from stages.committee.coverage import committee_coverage

TIER_LABELS: dict[int | None, str] = {
    1: "Tier 1 · one-to-one",
    2: "Tier 2 · one-to-few",
    3: "Tier 3 · one-to-many",
    None: "Not targeted",
}
# Responses to a message, counted once per message (two clicks by one person are one click).
RESPONSES = {"open": "opens", "click": "clicks", "reply": "replies"}
# What became of a step's ledger rows; they add up to `planned`, except `pending`, which
# is `deferred` + `waiting` (rows not yet sent, the same sum as `campaign status`).
STEP_COUNTS = (
    "planned",
    "sent",
    "skipped",
    "deferred",
    "waiting",
    "failed",
    "uncertain",
    "pending",
)
# What a sent ledger row is, by its step's channel: an email, a note or message handed to a
# rep (LinkedIn's API cannot message people), or a person added to a matched audience. They
# are counted apart: only emails are "sent" to the person, and only they have response rates.
SENT_BY_CHANNEL = {
    "email": "emails_sent",
    "linkedin_task": "linkedin_tasks",
    "linkedin_audience": "audience_adds",
}
# LinkedIn analytics arrive as one row per account and day carrying a count.
COUNTED_EVENTS = ("ad_impression", "ad_click")
# Volumes that would flatten the weekly chart (opens also mislead: privacy proxies open
# mail); the weekly table still lists them.
VOLUME_EVENTS = ("sent", "delivered", "open", "ad_impression")
# The A/B test's normal approximation needs this much data before it says anything.
MIN_SENT_PER_VARIANT = 30
MIN_EXPECTED = 5
SIGNIFICANCE = 0.05
ACCOUNT_ROWS_SHOWN = 100
# Intent topics the report lists: those with signals in the last INTENT_DAYS, most accounts
# surging first.
INTENT_DAYS = 30
INTENT_TOPICS_SHOWN = 20


def report_data(
    engine: Engine, required_roles: Sequence[str] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Every number the report shows, as JSON-ready values, read once so that every output
    agrees. `required_roles` defaults to the ICP file's committee roles."""
    if required_roles is None:
        from core.settings import get_settings
        from stages.targeting.scoring import load_icp_rules

        required_roles = load_icp_rules(get_settings().icp_rules).committee.required_roles
    with engine.connect() as connection:
        funnel = _funnel(connection)
        engagement = _weekly_engagement(connection)
        campaigns = _campaigns(connection)
        velocity = _stage_velocity(connection)
        sources = _engagement_sources(connection, now or utcnow())
    committee = _committee(engine, list(required_roles))
    return {
        "generated_at": (now or utcnow()).astimezone(UTC).isoformat(timespec="seconds"),
        "headline": _headline(funnel, campaigns, committee),
        "funnel": funnel,
        "engagement": engagement,
        "committee": committee,
        "campaigns": campaigns,
        "stage_velocity": velocity,
        "engagement_sources": sources,
    }


def two_proportion_p_value(
    successes_a: int, sent_a: int, successes_b: int, sent_b: int
) -> float | None:
    """Two-sided p-value that two rates (say, click rates of variants A and B) differ.

    The pooled two-proportion z-test: p = (x_a + x_b) / (n_a + n_b),
    z = (x_b / n_b - x_a / n_a) / sqrt(p (1 - p) (1 / n_a + 1 / n_b)), p-value = erfc(|z| / √2).
    It leans on a normal approximation that only holds with enough data, so it answers None
    ("not enough data") below MIN_SENT_PER_VARIANT sends per variant or when either group
    expects fewer than MIN_EXPECTED successes or failures at the pooled rate."""
    if min(sent_a, sent_b) < MIN_SENT_PER_VARIANT:
        return None
    pooled = (successes_a + successes_b) / (sent_a + sent_b)
    expected = [n * rate for n in (sent_a, sent_b) for rate in (pooled, 1 - pooled)]
    if min(expected) < MIN_EXPECTED:
        return None
    error = math.sqrt(pooled * (1 - pooled) * (1 / sent_a + 1 / sent_b))
    z = (successes_b / sent_b - successes_a / sent_a) / error
    return math.erfc(abs(z) / math.sqrt(2))


def _rank(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else -1


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _funnel_row(
    tier: int | None, label: str, by_stage: dict[str, int], reached: int
) -> dict[str, Any]:
    return {
        "tier": tier,
        "label": label,
        "accounts": sum(by_stage.values()),
        "reached": reached,
        "by_stage": by_stage,
        "at_least": {
            stage: sum(n for s, n in by_stage.items() if _rank(s) >= _rank(stage))
            for stage in STAGES
        },
    }


def _funnel(connection: Connection) -> dict[str, Any]:
    """Accounts per tier and stage; `at_least` counts those at a stage or beyond it, and
    `reached` those with at least one message sent."""
    counts = connection.execute(
        select(Account.tier, Account.stage, func.count()).group_by(Account.tier, Account.stage)
    ).all()
    reached = dict(
        connection.execute(
            select(Account.tier, func.count(func.distinct(Delivery.account_id)))
            .join(Account, Account.id == Delivery.account_id)
            .where(Delivery.state == "sent")
            .group_by(Account.tier)
        ).all()
    )
    rows = []
    for tier in sorted({t for t, _, _ in counts}, key=lambda t: (t is None, t or 0)):
        by_stage = dict.fromkeys(STAGES, 0)
        for t, stage, n in counts:
            if t == tier:
                by_stage[stage] = by_stage.get(stage, 0) + n
        label = TIER_LABELS.get(tier, f"Tier {tier}")
        rows.append(_funnel_row(tier, label, by_stage, reached.get(tier, 0)))
    targeted = [row for row in rows if row["tier"] is not None]
    stages = list(dict.fromkeys(s for row in rows for s in row["by_stage"])) or list(STAGES)
    total = _funnel_row(
        None,
        "All target accounts",
        {stage: sum(row["by_stage"].get(stage, 0) for row in targeted) for stage in stages},
        sum(row["reached"] for row in targeted),
    )
    return {"stages": list(STAGES), "tiers": rows, "targeted": total}


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _ordered_types(present: set[str]) -> list[str]:
    return [t for t in EVENT_TYPES if t in present] + sorted(present - set(EVENT_TYPES))


def _weekly_engagement(connection: Connection) -> dict[str, Any]:
    """Events per ISO week (Monday to Sunday, UTC) and type, every week in the range listed."""
    occurred = EngagementEvent.occurred_at
    if connection.dialect.name == "postgresql":
        day = func.date(func.timezone("UTC", occurred))
    else:
        day = func.date(occurred)
    day = day.label("day")
    per_day: Counter[tuple[str, date]] = Counter()
    for kind, on, n in connection.execute(
        select(EngagementEvent.type, day, func.count())
        .where(EngagementEvent.type.not_in(COUNTED_EVENTS))
        .group_by(EngagementEvent.type, day)
    ):
        per_day[(kind, _as_date(on))] += n
    for kind, at, data in connection.execute(
        select(EngagementEvent.type, occurred, EngagementEvent.data).where(
            EngagementEvent.type.in_(COUNTED_EVENTS)
        )
    ):
        per_day[(kind, at.astimezone(UTC).date())] += int((data or {}).get("count", 1))
    if not per_day:
        return {"types": [], "weeks": [], "totals": {}}
    weekly: dict[date, Counter[str]] = defaultdict(Counter)
    for (kind, on), n in per_day.items():
        weekly[on - timedelta(days=on.weekday())][kind] += n
    types = _ordered_types({kind for kind, _ in per_day})
    weeks = []
    start, last = min(weekly), max(weekly)
    while start <= last:
        year, week, _ = start.isocalendar()
        counts = weekly.get(start, Counter())
        weeks.append(
            {
                "week": f"{year}-W{week:02d}",
                "starts": start.isoformat(),
                "counts": {kind: counts.get(kind, 0) for kind in types},
            }
        )
        start += timedelta(days=7)
    totals = {kind: sum(week["counts"][kind] for week in weeks) for kind in types}
    return {"types": types, "weeks": weeks, "totals": totals}


def _responses(row: dict[str, Any], channel: str) -> dict[str, Any]:
    """Rates over sent messages; only email has opens, clicks and replies to count."""
    for kind in RESPONSES.values():
        row.setdefault(kind, 0)
    email = channel == "email"
    row["open_rate"] = rate(row["opens"], row["sent"]) if email else None
    row["click_rate"] = rate(row["clicks"], row["sent"]) if email else None
    row["reply_rate"] = rate(row["replies"], row["sent"]) if email else None
    return row


def _step_counts(states: Counter[str], deferred: int) -> dict[str, int]:
    """The ledger's states in the words of `campaign status` (see `ledger_summary`)."""
    pending = sum(states.get(s, 0) for s in ("planned", "rendered", "sending"))
    return {
        "planned": sum(states.values()),
        "sent": states.get("sent", 0),
        "skipped": states.get("skipped", 0),
        "deferred": deferred,
        "waiting": pending - deferred,
        "failed": states.get("failed", 0) + states.get("dead", 0),
        "uncertain": states.get("uncertain", 0),
        "pending": pending,
    }


def _ab_test(channel: str, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each variant against the first one (the control) on click rate. With three or more
    variants each comparison is read on its own: no correction for multiple tests."""
    rows = [_responses({"variant": name, **variants[name]}, channel) for name in sorted(variants)]
    control = rows[0]
    comparisons = []
    for other in rows[1:]:
        p_value = two_proportion_p_value(
            control["clicks"], control["sent"], other["clicks"], other["sent"]
        )
        rate_a = control["clicks"] / control["sent"] if control["sent"] else 0.0
        rate_b = other["clicks"] / other["sent"] if other["sent"] else 0.0
        if p_value is None:
            result = "not_enough_data"
        else:
            result = "significant" if p_value < SIGNIFICANCE else "not_significant"
        higher = None if rate_a == rate_b else (other if rate_b > rate_a else control)
        comparisons.append(
            {
                "metric": "click_rate",
                "control": control["variant"],
                "variant": other["variant"],
                "control_rate": control["click_rate"],
                "variant_rate": other["click_rate"],
                "p_value": None if p_value is None else round(p_value, 4),
                "result": result,
                "higher": None if higher is None else higher["variant"],
            }
        )
    return {"variants": rows, "comparisons": comparisons}


def campaign_results(engine: Engine, campaign_id: int) -> dict[str, Any] | None:
    """One campaign as the report counts it (the funnel per step, the A/B tests), read
    with the ledger's campaign index alone; None when there is no such campaign."""
    with engine.connect() as connection:
        found = _campaigns(connection, campaign_id)
    return found[0] if found else None


def _campaigns(connection: Connection, campaign_id: int | None = None) -> list[dict[str, Any]]:
    """Per campaign and step: the ledger's outcome, responses and, where a step has A/B
    variants, their comparison. Responses join events to deliveries by message id.
    With `campaign_id`, that campaign only."""
    only = [] if campaign_id is None else [Delivery.campaign_id == campaign_id]
    chosen = [] if campaign_id is None else [Campaign.id == campaign_id]
    # The ledger's states by step and variant from the funnel index alone (the campaign page
    # reads this for 100,000 rows on every view); then the skipped rows by reason and the
    # deferred planned ones, each a seek on (campaign, state).
    steps: dict[tuple[int, str], dict[str, Any]] = {}
    for ledger_campaign, step, channel, variant, state, n, first in connection.execute(
        select(
            Delivery.campaign_id,
            Delivery.step,
            Delivery.channel,
            Delivery.variant,
            Delivery.state,
            func.count(),
            func.min(Delivery.id),
        )
        .where(*only)
        .group_by(
            Delivery.campaign_id, Delivery.step, Delivery.channel, Delivery.variant, Delivery.state
        )
    ):
        key = (ledger_campaign, step)
        entry = steps.setdefault(
            key, {"channel": channel, "first": first, "states": Counter(), "variants": {}}
        )
        entry["first"] = min(entry["first"], first)
        entry["states"][state] += n
        if variant is not None:
            entry["variants"].setdefault(variant, {"sent": 0})
            if state == "sent":
                entry["variants"][variant]["sent"] += n
    reasons: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for ledger_campaign, step, why, n in connection.execute(
        select(Delivery.campaign_id, Delivery.step, Delivery.skip_reason, func.count())
        .where(*only, Delivery.state == "skipped")
        .group_by(Delivery.campaign_id, Delivery.step, Delivery.skip_reason)
    ):
        reasons[(ledger_campaign, step)][str(why)] = n
    deferred: Counter[tuple[int, str]] = Counter(
        {
            (ledger_campaign, step): n
            for ledger_campaign, step, n in connection.execute(
                select(Delivery.campaign_id, Delivery.step, func.count())
                .where(*only, Delivery.state == "planned", Delivery.last_error.like("deferred:%"))
                .group_by(Delivery.campaign_id, Delivery.step)
            )
        }
    )
    responses: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for ledger_campaign, step, variant, kind, n in connection.execute(
        select(
            Delivery.campaign_id,
            Delivery.step,
            Delivery.variant,
            EngagementEvent.type,
            func.count(func.distinct(Delivery.id)),
        )
        .join(EngagementEvent, EngagementEvent.message_id == Delivery.message_id)
        .where(*only, Delivery.state == "sent", EngagementEvent.type.in_(list(RESPONSES)))
        .group_by(Delivery.campaign_id, Delivery.step, Delivery.variant, EngagementEvent.type)
    ):
        responses[(ledger_campaign, step)][RESPONSES[kind]] += n
        if variant is not None:
            entry = steps[(ledger_campaign, step)]["variants"].setdefault(variant, {"sent": 0})
            entry[RESPONSES[kind]] = entry.get(RESPONSES[kind], 0) + n
    reached = dict(
        connection.execute(
            select(Delivery.campaign_id, func.count(func.distinct(Delivery.account_id)))
            .where(*only, Delivery.state == "sent")
            .group_by(Delivery.campaign_id)
        ).all()
    )
    campaigns = []
    for found_id, key, name, status in connection.execute(
        select(Campaign.id, Campaign.key, Campaign.name, Campaign.status)
        .where(*chosen)
        .order_by(Campaign.id)
    ):
        keys = sorted((k for k in steps if k[0] == found_id), key=lambda k: steps[k]["first"])
        rows, tests = [], []
        for k in keys:
            entry = steps[k]
            row = {
                "step": k[1],
                "channel": entry["channel"],
                **_step_counts(entry["states"], deferred.get(k, 0)),
                "skipped_by_reason": dict(sorted(reasons.get(k, {}).items())),
                **responses.get(k, {}),
            }
            rows.append(_responses(row, entry["channel"]))
            if len(entry["variants"]) >= 2:
                tests.append({"step": k[1], **_ab_test(entry["channel"], entry["variants"])})
        totals: dict[str, Any] = {
            name: sum(row[name] for row in rows) for name in (*STEP_COUNTS, *RESPONSES.values())
        }
        all_reasons: Counter[str] = Counter()
        for row in rows:
            all_reasons.update(row["skipped_by_reason"])
        totals["skipped_by_reason"] = dict(sorted(all_reasons.items()))
        for channel, figure in SENT_BY_CHANNEL.items():
            totals[figure] = sum(row["sent"] for row in rows if row["channel"] == channel)
        email = [row for row in rows if row["channel"] == "email"]
        emails_sent = totals["emails_sent"]
        totals["click_rate"] = rate(sum(row["clicks"] for row in email), emails_sent)
        totals["reply_rate"] = rate(sum(row["replies"] for row in email), emails_sent)
        campaigns.append(
            {
                "key": key,
                "name": name,
                "status": status,
                "accounts_reached": reached.get(found_id, 0),
                "totals": totals,
                "steps": rows,
                "ab_tests": tests,
            }
        )
    return campaigns


def _committee(engine: Engine, required: list[str]) -> dict[str, Any]:
    """Per target account (tiers 1-3), which required roles have a reachable contact."""
    with engine.connect() as connection:
        accounts = connection.execute(
            select(
                Account.id,
                Account.domain,
                Account.name,
                Account.tier,
                Account.stage,
                Account.icp_score,
            )
            .where(Account.tier.is_not(None))
            .order_by(Account.tier, Account.icp_score.desc().nulls_last(), Account.domain)
        ).all()
    cover = committee_coverage(engine, [a.id for a in accounts], required) if accounts else {}
    rows = [
        {
            "domain": a.domain,
            "name": a.name,
            "tier": a.tier,
            "stage": a.stage,
            "icp_score": a.icp_score,
            "covered": list(cover[a.id].covered),
            "gaps": list(cover[a.id].gaps),
        }
        for a in accounts
    ]
    by_tier = []
    for tier in sorted({a.tier for a in accounts}):
        ids = [a.id for a in accounts if a.tier == tier]
        by_tier.append(
            {
                "tier": tier,
                "label": TIER_LABELS.get(tier, f"Tier {tier}"),
                "accounts": len(ids),
                "fully_covered": sum(1 for i in ids if not cover[i].gaps),
                "average_coverage": round(statistics.fmean(cover[i].ratio for i in ids), 4),
            }
        )
    return {
        "required_roles": required,
        "accounts_count": len(rows),
        "fully_covered": sum(1 for row in rows if not row["gaps"]),
        "by_tier": by_tier,
        "gaps_by_role": {role: sum(1 for row in rows if role in row["gaps"]) for role in required},
        "accounts": rows,
    }


def _stage_velocity(connection: Connection) -> list[dict[str, Any]]:
    """Median days an account spent in a stage before each move: from the previous move, or
    from when the account was first imported for its first move."""
    changes = connection.execute(
        select(
            StageChange.account_id,
            StageChange.from_stage,
            StageChange.to_stage,
            StageChange.changed_at,
        ).order_by(StageChange.account_id, StageChange.changed_at, StageChange.id)
    ).all()
    created = dict(
        connection.execute(
            select(Account.id, Account.created_at).where(
                Account.id.in_(select(StageChange.account_id).distinct())
            )
        ).all()
    )
    days: dict[tuple[str, str], list[float]] = defaultdict(list)
    entered: dict[int, datetime] = {}
    for account_id, before, after, at in changes:
        start = entered.get(account_id) or created.get(account_id) or at
        days[(before or "target", after)].append(max(0.0, (at - start).total_seconds() / 86400))
        entered[account_id] = at
    return [
        {
            "from_stage": before,
            "to_stage": after,
            "moves": len(values),
            "median_days": round(statistics.median(values), 1),
        }
        for (before, after), values in sorted(
            days.items(), key=lambda item: (_rank(item[0][1]), _rank(item[0][0]))
        )
    ]


def _engagement_sources(connection: Connection, now: datetime) -> dict[str, Any]:
    """Target accounts' engagement by source (email, LinkedIn, web, intent) and breadth, as
    the last rollup kept it with each account (`Account.engagement_sources`: the parts add
    up to the account's score), most engaged first; and the intent topics of the last
    INTENT_DAYS days across all accounts."""
    totals = dict.fromkeys(ENGAGEMENT_SOURCES, 0.0)
    engaged = dict.fromkeys(ENGAGEMENT_SOURCES, 0)
    breadth = 0.0
    accounts = []
    not_split = 0
    for domain, name, tier, stage, score, parts in connection.execute(
        select(
            Account.domain,
            Account.name,
            Account.tier,
            Account.stage,
            Account.engagement_score,
            Account.engagement_sources,
        ).where(Account.tier.is_not(None))
    ):
        if not parts:
            not_split += 1 if score else 0
            continue
        sources = {source: float(parts.get(source) or 0.0) for source in ENGAGEMENT_SOURCES}
        bonus = float(parts.get("breadth") or 0.0)
        if not any(sources.values()) and not bonus:
            continue
        for source, value in sources.items():
            totals[source] += value
            engaged[source] += value > 0
        breadth += bonus
        accounts.append(
            {
                "domain": domain,
                "name": name,
                "tier": tier,
                "stage": stage,
                "engagement_score": score,
                "sources": sources,
                "breadth": bonus,
            }
        )
    accounts.sort(key=lambda a: (-a["engagement_score"], a["domain"]))
    return {
        "sources": list(ENGAGEMENT_SOURCES),
        "totals": {source: round(value, 1) for source, value in totals.items()},
        "breadth": round(breadth, 1),
        "accounts_with": engaged,
        "accounts": accounts,
        "not_split": not_split,
        "intent_days": INTENT_DAYS,
        "intent_topics": _intent_topics(connection, now),
    }


def _intent_topics(connection: Connection, now: datetime) -> list[dict[str, Any]]:
    """Per topic (any case) of the intent signals of the last INTENT_DAYS days: accounts
    surging (a score of SURGE_SCORE or more), accounts with a signal, the highest score and
    the latest day. Topics are no personal data."""
    topics: dict[str, dict[str, Any]] = {}
    for account_id, at, data in connection.execute(
        select(EngagementEvent.account_id, EngagementEvent.occurred_at, EngagementEvent.data)
        # a literal, so that the index of intent events serves
        .where(EngagementEvent.type == literal_column("'intent'"))
        .where(EngagementEvent.occurred_at >= now - timedelta(days=INTENT_DAYS))
    ):
        data = data or {}
        name = str(data.get("topic") or "")
        score = float(data.get("score") or 0)
        entry = topics.setdefault(
            topic_key(name),
            {"topic": name, "accounts": set(), "surging": set(), "top_score": 0.0, "latest": at},
        )
        entry["accounts"].add(account_id)
        if score >= SURGE_SCORE:
            entry["surging"].add(account_id)
        entry["top_score"] = max(entry["top_score"], score)
        if at >= entry["latest"]:
            entry["latest"], entry["topic"] = at, name
    rows = [
        {
            "topic": entry["topic"],
            "accounts_surging": len(entry["surging"]),
            "accounts": len(entry["accounts"]),
            "top_score": entry["top_score"],
            "latest": _as_date(entry["latest"]).isoformat(),
        }
        for entry in topics.values()
    ]
    rows.sort(key=lambda r: (-r["accounts_surging"], -r["accounts"], r["topic"].casefold()))
    return rows[:INTENT_TOPICS_SHOWN]


def _headline(
    funnel: dict[str, Any], campaigns: list[dict[str, Any]], committee: dict[str, Any]
) -> dict[str, Any]:
    targeted = funnel["targeted"]
    steps = [s for c in campaigns for s in c["steps"] if s["channel"] == "email"]
    sent = sum(s["sent"] for s in steps)
    responses = {kind: sum(s[kind] for s in steps) for kind in RESPONSES.values()}
    return {
        "accounts": sum(row["accounts"] for row in funnel["tiers"]),
        "targeted": targeted["accounts"],
        "reached": targeted["reached"],
        "engaged": targeted["at_least"]["engaged"],
        "mqa": targeted["at_least"]["mqa"],
        "opportunity": targeted["at_least"]["opportunity"],
        "emails_sent": sent,
        "linkedin_tasks": sum(c["totals"]["linkedin_tasks"] for c in campaigns),
        "audience_adds": sum(c["totals"]["audience_adds"] for c in campaigns),
        **responses,
        "open_rate": rate(responses["opens"], sent),
        "click_rate": rate(responses["clicks"], sent),
        "reply_rate": rate(responses["replies"], sent),
        "fully_covered": committee["fully_covered"],
        "full_coverage_rate": rate(committee["fully_covered"], committee["accounts_count"]),
    }

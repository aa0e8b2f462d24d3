"""The report: where the target accounts stand and what the campaigns did, read from the
accounts, the delivery ledger and the engagement events.

`report_data` only reads, and what it returns holds no personal data (account domains and
names, never a person's email or name). `render_html`, `report_markdown` and the CLI only
format that dict, so a browser, a Prefect artifact and `abm report --json` show the same
numbers."""

from __future__ import annotations

import html
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select

from core.vocabulary import EVENT_TYPES, STAGES
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

STAGE_COLORS = {
    "target": "#cbd5e1",
    "aware": "#93c5fd",
    "engaged": "#3b82f6",
    "mqa": "#1d4ed8",
    "opportunity": "#1e3a8a",
    "customer": "#15803d",
}
OUTCOME_COLORS = {
    "sent": "#2563eb",
    "skipped": "#f59e0b",
    "deferred": "#a78bfa",
    "waiting": "#cbd5e1",
    "failed": "#dc2626",
    "uncertain": "#6b7280",
}
EVENT_COLORS = {
    "sent": "#94a3b8",
    "delivered": "#cbd5e1",
    "open": "#60a5fa",
    "click": "#1d4ed8",
    "reply": "#15803d",
    "bounce": "#dc2626",
    "unsubscribe": "#6b7280",
    "spam_report": "#7f1d1d",
    "ad_impression": "#fcd34d",
    "ad_click": "#f59e0b",
    "lead_form": "#db2777",
    "meeting": "#7c3aed",
}
LIGHT_COLORS = {"#cbd5e1", "#f59e0b", "#a78bfa", "#93c5fd", "#fcd34d", "#60a5fa"}
VARIANT_COLORS = ("#2563eb", "#f59e0b", "#15803d", "#7c3aed", "#db2777", "#0891b2")
SKIP_REASONS = {
    "unsubscribed": "the person unsubscribed earlier",
    "bounced": "the address bounced before",
    "suppressed": "on the do-not-contact list",
    "no_consent": "no recorded consent, and the campaign requires it",
}


# --------------------------------------------------------------------------- the numbers


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
    committee = _committee(engine, list(required_roles))
    return {
        "generated_at": (now or utcnow()).astimezone(UTC).isoformat(timespec="seconds"),
        "headline": _headline(funnel, campaigns, committee),
        "funnel": funnel,
        "engagement": engagement,
        "committee": committee,
        "campaigns": campaigns,
        "stage_velocity": velocity,
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


def verdict_text(comparison: dict[str, Any]) -> str:
    """One sentence a marketer can act on for one A/B comparison of click rates."""
    a, b = comparison["control"], comparison["variant"]
    rate_a, rate_b = _pct(comparison["control_rate"]), _pct(comparison["variant_rate"])
    if comparison["result"] == "not_enough_data":
        so_far = (
            f" (click rate so far {rate_a} for {a}, {rate_b} for {b})"
            if comparison["control_rate"] is not None and comparison["variant_rate"] is not None
            else ""
        )
        return (
            f"Not enough data yet to compare {a} and {b}{so_far}: each variant needs at least "
            f"{MIN_SENT_PER_VARIANT} sends and about {MIN_EXPECTED} clicks."
        )
    p = _p_value(comparison["p_value"])
    if comparison["result"] == "significant":
        winner, loser = (b, a) if comparison["higher"] == b else (a, b)
        rates = {a: rate_a, b: rate_b}
        return (
            f"Variant {winner} gets more clicks ({rates[winner]} against {rates[loser]} for "
            f"{loser}); {p}, so the difference is unlikely to be chance."
        )
    return (
        f"No clear winner: click rate {rate_a} for {a}, {rate_b} for {b}; {p}, "
        "a gap this size could easily be chance. Keep testing or pick either."
    )


def _rank(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else -1


def _rate(part: int, whole: int) -> float | None:
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
    row["open_rate"] = _rate(row["opens"], row["sent"]) if email else None
    row["click_rate"] = _rate(row["clicks"], row["sent"]) if email else None
    row["reply_rate"] = _rate(row["replies"], row["sent"]) if email else None
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


def _campaigns(connection: Connection) -> list[dict[str, Any]]:
    """Per campaign and step: the ledger's outcome, responses and, where a step has A/B
    variants, their comparison. Responses join events to deliveries by message id."""
    steps: dict[tuple[int, str], dict[str, Any]] = {}
    for campaign_id, step, channel, variant, state, n, first in connection.execute(
        select(
            Delivery.campaign_id,
            Delivery.step,
            Delivery.channel,
            Delivery.variant,
            Delivery.state,
            func.count(),
            func.min(Delivery.id),
        ).group_by(
            Delivery.campaign_id, Delivery.step, Delivery.channel, Delivery.variant, Delivery.state
        )
    ):
        entry = steps.setdefault(
            (campaign_id, step),
            {"channel": channel, "first": first, "states": Counter(), "variants": {}},
        )
        entry["first"] = min(entry["first"], first)
        entry["states"][state] += n
        if variant is not None:
            entry["variants"].setdefault(variant, {"sent": 0})
            if state == "sent":
                entry["variants"][variant]["sent"] += n
    deferred = {
        (campaign_id, step): n
        for campaign_id, step, n in connection.execute(
            select(Delivery.campaign_id, Delivery.step, func.count())
            .where(Delivery.state == "planned", Delivery.last_error.like("deferred:%"))
            .group_by(Delivery.campaign_id, Delivery.step)
        )
    }
    reasons: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for campaign_id, step, reason, n in connection.execute(
        select(Delivery.campaign_id, Delivery.step, Delivery.skip_reason, func.count())
        .where(Delivery.state == "skipped")
        .group_by(Delivery.campaign_id, Delivery.step, Delivery.skip_reason)
    ):
        reasons[(campaign_id, step)][str(reason)] = n
    responses: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for campaign_id, step, variant, kind, n in connection.execute(
        select(
            Delivery.campaign_id,
            Delivery.step,
            Delivery.variant,
            EngagementEvent.type,
            func.count(func.distinct(Delivery.id)),
        )
        .join(EngagementEvent, EngagementEvent.message_id == Delivery.message_id)
        .where(Delivery.state == "sent", EngagementEvent.type.in_(list(RESPONSES)))
        .group_by(Delivery.campaign_id, Delivery.step, Delivery.variant, EngagementEvent.type)
    ):
        responses[(campaign_id, step)][RESPONSES[kind]] += n
        if variant is not None:
            entry = steps[(campaign_id, step)]["variants"].setdefault(variant, {"sent": 0})
            entry[RESPONSES[kind]] = entry.get(RESPONSES[kind], 0) + n
    reached = dict(
        connection.execute(
            select(Delivery.campaign_id, func.count(func.distinct(Delivery.account_id)))
            .where(Delivery.state == "sent")
            .group_by(Delivery.campaign_id)
        ).all()
    )
    campaigns = []
    for campaign_id, key, name, status in connection.execute(
        select(Campaign.id, Campaign.key, Campaign.name, Campaign.status).order_by(Campaign.id)
    ):
        keys = sorted((k for k in steps if k[0] == campaign_id), key=lambda k: steps[k]["first"])
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
        email = [row for row in rows if row["channel"] == "email"]
        emails_sent = sum(row["sent"] for row in email)
        totals["emails_sent"] = emails_sent
        totals["click_rate"] = _rate(sum(row["clicks"] for row in email), emails_sent)
        totals["reply_rate"] = _rate(sum(row["replies"] for row in email), emails_sent)
        campaigns.append(
            {
                "key": key,
                "name": name,
                "status": status,
                "accounts_reached": reached.get(campaign_id, 0),
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
        **responses,
        "open_rate": _rate(responses["opens"], sent),
        "click_rate": _rate(responses["clicks"], sent),
        "reply_rate": _rate(responses["replies"], sent),
        "fully_covered": committee["fully_covered"],
        "full_coverage_rate": _rate(committee["fully_covered"], committee["accounts_count"]),
    }


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: int | float) -> str:
    return f"{value:,}"


def _pct(rate: float | None, digits: int = 1) -> str:
    return "–" if rate is None else f"{rate * 100:.{digits}f}%"


def _p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _label(name: str) -> str:
    """`decision_maker` -> `decision maker`, `mqa` -> `MQA`: names as words."""
    return "MQA" if name == "mqa" else name.replace("_", " ")


def _reason(reason: str) -> str:
    if reason in SKIP_REASONS:
        return SKIP_REASONS[reason]
    if reason.startswith("stopped_stage_"):
        return f"sequence stopped: the account reached {_label(reason[14:])}"
    if reason.startswith("stopped_"):
        return f"sequence stopped: the person already {_label(reason[8:])}"
    return _label(reason)


def _when(iso: str) -> str:
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _day(iso: str) -> str:
    day = date.fromisoformat(iso)
    return f"{day.day} {day:%b %Y}"


def _days(days: float) -> str:
    return "under a day" if days < 1 else f"{days:g}"


def _nice_step(maximum: float, ticks: int = 4) -> float:
    """A round gridline step (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` lines."""
    raw = max(maximum, 1) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if raw <= m * power)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
    )


def _hbar_chart(
    rows: list[tuple[str, float, str, str]], title: str, maximum: float | None = None
) -> str:
    """Horizontal bars: (label, value, colour, value as text) each, on one common scale."""
    width, label_w, text_w, bar_h, gap = 760, 190, 150, 22, 8
    plot = width - label_w - text_w
    height = gap + len(rows) * (bar_h + gap)
    top = max([maximum or 0, *(value for _, value, _, _ in rows)]) or 1
    parts = [_svg_open(width, height, title)]
    for i, (label, value, color, text) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        bar = plot * max(value, 0) / top
        bar = max(bar, 2) if value > 0 else 0
        middle = y + bar_h / 2
        parts += [
            f'<text x="{label_w - 10}" y="{middle}" text-anchor="end" '
            f'dominant-baseline="central">{_e(label)}</text>',
            f'<rect x="{label_w}" y="{y}" width="{plot}" height="{bar_h}" rx="3" fill="#f1f5f9"/>',
            f'<rect x="{label_w}" y="{y}" width="{bar:.1f}" height="{bar_h}" rx="3" '
            f'fill="{_e(color)}"><title>{_e(label)}: {_e(text)}</title></rect>',
            f'<text x="{label_w + plot + 8}" y="{middle}" dominant-baseline="central" '
            f'class="value">{_e(text)}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _stacked_chart(rows: list[tuple[str, list[tuple[str, int, str]]]], title: str) -> str:
    """One bar per row, split into (name, count, colour) segments, on one common scale."""
    width, label_w, text_w, bar_h, gap = 760, 190, 110, 26, 10
    plot = width - label_w - text_w
    height = gap + len(rows) * (bar_h + gap)
    top = max((sum(n for _, n, _ in segments) for _, segments in rows), default=0) or 1
    parts = [_svg_open(width, height, title)]
    for i, (label, segments) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        middle = y + bar_h / 2
        parts.append(
            f'<text x="{label_w - 10}" y="{middle}" text-anchor="end" '
            f'dominant-baseline="central">{_e(label)}</text>'
        )
        x = float(label_w)
        for name, count, color in segments:
            if count <= 0:
                continue
            w = plot * count / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_e(color)}">'
                f"<title>{_e(label)}, {_e(name)}: {_n(count)}</title></rect>"
            )
            if w >= 8 * len(_n(count)) + 8:
                ink = "dark" if color in LIGHT_COLORS else "light"
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{middle}" text-anchor="middle" '
                    f'dominant-baseline="central" class="inbar {ink}">{_n(count)}</text>'
                )
            x += w
        total = sum(n for _, n, _ in segments)
        parts.append(
            f'<text x="{x + 8:.1f}" y="{middle}" dominant-baseline="central" '
            f'class="value">{_n(total)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _line_chart(labels: list[str], series: list[tuple[str, list[int], str]], title: str) -> str:
    """Lines over weeks with round gridlines; every point carries its value as a tooltip."""
    width, height = 760, 300
    left, right, top, bottom = 56, 24, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max((v for _, values, _ in series for v in values), default=0)
    step = max(1, round(_nice_step(highest)))
    y_max = step * max(1, math.ceil(highest / step))
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else i * plot_w / (n - 1))

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    parts = [_svg_open(width, height, title)]
    for tick in range(0, y_max + 1, step):
        parts += [
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="{"#9ca3af" if tick == 0 else "#e5e7eb"}"/>',
            f'<text x="{left - 8}" y="{y(tick):.1f}" text-anchor="end" '
            f'dominant-baseline="central" class="axis">{_n(tick)}</text>',
        ]
    every = max(1, math.ceil(n / 10))
    for i, label in enumerate(labels):
        if i % every == 0 or i == n - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - bottom + 20}" text-anchor="middle" '
                f'class="axis">{_e(label)}</text>'
            )
    for name, values, color in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{_e(color)}" stroke-width="2.5" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
        if n <= 60:
            parts += [
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{_e(color)}">'
                f"<title>{_e(_label(name))}, week of {_e(labels[i])}: {_n(v)}</title></circle>"
                for i, v in enumerate(values)
            ]
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: list[tuple[str, str]]) -> str:
    entries = "".join(
        f'<li><span class="swatch" style="background:{_e(color)}"></span>{_e(name)}</li>'
        for name, color in items
    )
    return f'<ul class="legend">{entries}</ul>'


class _Markup(str):
    """HTML built from escaped parts: `_table` puts it in a cell as it is."""


def _with_rate(count: int, rate: float | None) -> _Markup:
    """A count with its rate underneath, or a dash where no rate applies."""
    if rate is None:
        return _Markup("–")
    return _Markup(f'{_n(count)}<br><span class="rate">{_e(_pct(rate))}</span>')


def _table(
    headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None, css: str = ""
) -> str:
    """A table that scrolls sideways on a narrow screen; columns in `numeric` align right.
    Every cell is escaped except `_Markup`."""
    numeric = numeric or set()

    def cell(tag: str, i: int, value: Any) -> str:
        align = ' class="num"' if i in numeric else ""
        return f"<{tag}{align}>{value if isinstance(value, _Markup) else _e(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="table {_e(css)}">{table}</div>'


def _chips(roles: list[str], kind: str) -> _Markup:
    chips = "".join(f'<span class="chip {kind}">{_e(_label(role))}</span>' for role in roles)
    return _Markup(chips or '<span class="note">none</span>')


def _kpi(label: str, value: str, note: str) -> str:
    return (
        f'<div class="kpi"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="note">{_e(note)}</div></div>'
    )


CSS = """
:root { --ink: #1f2937; --muted: #5b6472; --line: #e5e7eb; --soft: #f8fafc; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #f3f4f6; color: var(--ink);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 48px; }
header h1 { font-size: 2rem; line-height: 1.2; margin: 0 0 6px; }
header p { margin: 0; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 22px 26px; margin: 22px 0; }
h2 { font-size: 1.35rem; margin: 0 0 6px; }
h3 { font-size: 1.05rem; margin: 22px 0 6px; }
h3 .key { color: var(--muted); font-weight: 400; font-size: .9rem; }
p { margin: 6px 0 10px; max-width: 78ch; }
.lead { color: var(--muted); }
.kpis { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 12px;
  margin: 22px 0; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.kpi .label { font-weight: 600; font-size: .92rem; }
.kpi .value { font-size: 1.9rem; font-weight: 700; line-height: 1.15; margin: 4px 0;
  font-variant-numeric: tabular-nums; }
.kpi .note { color: var(--muted); font-size: .84rem; }
table { border-collapse: collapse; width: 100%; font-size: .87rem; margin: 10px 0 6px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; border-bottom-color: #d1d5db; }
.table { overflow-x: auto; }
.labels td:first-child { white-space: nowrap; }
.rate { color: var(--muted); font-size: .88em; }
.num { text-align: right; }
td.num { white-space: nowrap; }
code { white-space: nowrap; font-size: .9em; }
.chart { display: block; width: 100%; max-width: 760px; height: auto; margin: 10px 0 4px; }
.chart text { font-family: inherit; font-size: 13px; fill: #374151; }
.chart text.axis { font-size: 12px; fill: #6b7280; }
.chart text.value { font-weight: 600; }
.chart text.inbar { font-size: 12px; font-weight: 600; }
.chart text.inbar.light { fill: #ffffff; }
.chart text.inbar.dark { fill: #111827; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; list-style: none; padding: 0;
  margin: 4px 0 10px; font-size: .88rem; color: var(--muted); }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px;
  margin-right: 6px; vertical-align: -1px; }
.verdict { border-left: 4px solid #9ca3af; background: var(--soft); padding: 8px 14px;
  border-radius: 4px; margin: 10px 0; }
.verdict.significant { border-left-color: #15803d; }
.verdict.not_enough_data { border-left-color: #f59e0b; }
.chip { display: inline-block; border-radius: 999px; padding: 0 8px; margin: 1px 2px 1px 0;
  font-size: .8rem; white-space: nowrap; }
.chip.ok { background: #dcfce7; color: #14532d; }
.chip.gap { background: #fee2e2; color: #7f1d1d; }
.note { color: var(--muted); font-size: .88rem; }
.empty { color: var(--muted); font-style: italic; }
dl { margin: 8px 0; }
dt { font-weight: 600; margin-top: 8px; }
dd { margin: 0 0 0 0; color: var(--ink); }
footer { color: var(--muted); font-size: .85rem; margin-top: 26px; }
@media (max-width: 760px) { .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
@media print {
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  @page { margin: 14mm; }
  body { background: #fff; font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  section { border: 0; border-top: 1px solid #d1d5db; border-radius: 0; padding: 12px 0;
    margin: 14px 0; }
  .kpis { grid-template-columns: repeat(4, minmax(0, 1fr)); }
  .table { overflow: visible; }
  table { font-size: 8pt; }
  th, td { padding: 3px 4px; }
  .chip { font-size: 7.5pt; padding: 0 5px; }
  .chart, .kpi, .verdict, tr, .legend { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
}
"""


def render_html(data: dict[str, Any]) -> str:
    """One self-contained page (inline CSS and SVG, no scripts, fonts or links to fetch)
    that opens anywhere, mails as an attachment and prints."""
    sections = [
        _html_headline(data["headline"]),
        _html_funnel(data["funnel"]),
        _html_campaigns(data["campaigns"]),
        _html_engagement(data["engagement"]),
        _html_committee(data["committee"]),
        _html_velocity(data["stage_velocity"]),
        _html_glossary(),
    ]
    generated = _when(data["generated_at"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ABM report · {_e(generated)}</title><style>{CSS}</style></head><body><main>"
        "<header><h1>Account-based marketing report</h1>"
        f"<p>Generated {_e(generated)} from the accounts, the delivery ledger and the "
        "engagement events. No personal data: accounts appear by company, people only as "
        "counts.</p></header>"
        + "".join(sections)
        + "<footer>Made by <code>abm report --html</code>. Numbers count messages, not "
        "people: a person who clicked twice counts as one click on that message.</footer>"
        "</main></body></html>\n"
    )


def _html_headline(h: dict[str, Any]) -> str:
    targeted = h["targeted"]

    def share(n: int) -> str:
        return f"{_pct(_rate(n, targeted), 0)} of target accounts" if targeted else "no targets"

    return (
        '<div class="kpis">'
        + "".join(
            [
                _kpi(
                    "Target accounts", _n(targeted), f"of {_n(h['accounts'])} accounts (tiers 1–3)"
                ),
                _kpi("Reached", _n(h["reached"]), share(h["reached"]) + ", at least one message"),
                _kpi("Engaged or further", _n(h["engaged"]), share(h["engaged"])),
                _kpi("MQA or further", _n(h["mqa"]), share(h["mqa"])),
                _kpi("Emails sent", _n(h["emails_sent"]), "across all campaigns"),
                _kpi("Click rate", _pct(h["click_rate"]), f"{_n(h['clicks'])} emails clicked"),
                _kpi("Reply rate", _pct(h["reply_rate"]), f"{_n(h['replies'])} emails answered"),
                _kpi(
                    "Full buying committee",
                    _pct(h["full_coverage_rate"], 0),
                    f"{_n(h['fully_covered'])} target accounts with every required role",
                ),
            ]
        )
        + "</div>"
    )


def _html_funnel(funnel: dict[str, Any]) -> str:
    total = funnel["targeted"]
    stages = funnel["stages"]
    bars = []
    for stage in stages:
        n = total["at_least"][stage]
        share = _pct(_rate(n, total["accounts"]), 0)
        bars.append(
            (
                f"{_label(stage)} or further",
                n,
                STAGE_COLORS.get(stage, "#64748b"),
                f"{_n(n)} ({share})",
            )
        )
    headers = ["", *(_label(s) for s in stages), "total", "reached", "engaged+", "MQA+"]
    rows = [
        [
            row["label"],
            *(_n(row["by_stage"].get(s, 0)) for s in stages),
            _n(row["accounts"]),
            _n(row["reached"]),
            _n(row["at_least"]["engaged"]),
            _n(row["at_least"]["mqa"]),
        ]
        for row in [*funnel["tiers"], total]
    ]
    numeric = set(range(1, len(headers)))
    chart = (
        _hbar_chart(bars, "Target accounts at each journey stage or further")
        if total["accounts"]
        else '<p class="empty">No target accounts yet: import accounts, then run '
        "<code>abm score</code>.</p>"
    )
    return (
        "<section><h2>Where the target accounts are</h2>"
        '<p class="lead">Every account moves along the journey target → aware → engaged → '
        "MQA (marketing-qualified) → opportunity → customer as its people respond. Each bar "
        "counts the target accounts that have reached that stage or gone past it.</p>"
        + chart
        + "<h3>By tier</h3>"
        + _table(headers, rows, numeric, "labels")
        + '<p class="note">Reached: at least one message sent to someone there. Engaged+ and '
        "MQA+: at that stage or further.</p></section>"
    )


def _html_campaigns(campaigns: list[dict[str, Any]]) -> str:
    parts = [
        "<section><h2>Campaigns</h2>"
        '<p class="lead">What each campaign step did with the people it planned to reach, '
        "straight from the delivery ledger, and how many of the sent emails were opened, "
        "clicked and answered.</p>"
    ]
    if not campaigns:
        parts.append('<p class="empty">No campaign has run yet.</p></section>')
        return "".join(parts)
    outcomes = ("sent", "skipped", "deferred", "waiting", "failed", "uncertain")
    for campaign in campaigns:
        t = campaign["totals"]
        parts.append(
            f'<h3>{_e(campaign["name"])} <span class="key">{_e(campaign["key"])}'
            f"{' · paused' if campaign['status'] == 'paused' else ''}</span></h3>"
        )
        if not campaign["steps"]:
            parts.append('<p class="empty">Nothing planned yet.</p>')
            continue
        parts.append(f"<p>{_e(_campaign_sentence(campaign))}</p>")
        bars = [
            (
                f"{step['step']} ({_label(step['channel'])})",
                [(name, step[name], OUTCOME_COLORS[name]) for name in outcomes],
            )
            for step in campaign["steps"]
        ]
        parts.append(_stacked_chart(bars, f"Outcome of each step of {campaign['name']}"))
        parts.append(_legend([(name, OUTCOME_COLORS[name]) for name in outcomes]))
        headers = [
            "step",
            "channel",
            "planned",
            "sent",
            "skipped",
            "deferred",
            "waiting",
            "failed",
            "uncertain",
            "opened",
            "clicked",
            "replied",
        ]
        rows = [
            [
                step["step"],
                _label(step["channel"]),
                *(_n(step[k]) for k in ("planned", *outcomes)),
                _with_rate(step["opens"], step["open_rate"]),
                _with_rate(step["clicks"], step["click_rate"]),
                _with_rate(step["replies"], step["reply_rate"]),
            ]
            for step in campaign["steps"]
        ]
        parts.append(_table(headers, rows, set(range(2, len(headers))), "labels"))
        if t["skipped_by_reason"]:
            items = "".join(
                f"<li><strong>{_n(n)}</strong> {_e(_reason(reason))} "
                f'<span class="note">({_e(reason)})</span></li>'
                for reason, n in t["skipped_by_reason"].items()
            )
            parts.append(f"<p>Why people were skipped:</p><ul>{items}</ul>")
        for test in campaign["ab_tests"]:
            parts.append(_html_ab_test(campaign, test))
    parts.append(
        '<p class="note">Deferred: held back by a frequency cap or the sending window, sent '
        "on a later run. Waiting: due but not sent yet. Uncertain: a crash left unknown "
        "whether it went out; it is never re-sent blindly.</p></section>"
    )
    return "".join(parts)


def _campaign_sentence(campaign: dict[str, Any]) -> str:
    t = campaign["totals"]
    if not t["sent"]:
        held = (
            f" {_n(t['deferred'])} messages are held back by frequency caps or the sending "
            "window until a slot opens."
            if t["deferred"]
            else ""
        )
        return f"Nothing sent yet.{held}"
    rates = (
        f"; click rate {_pct(t['click_rate'])}, reply rate {_pct(t['reply_rate'])}"
        if t["emails_sent"]
        else ""
    )
    return (
        f"{_n(t['sent'])} messages sent to people at {_n(campaign['accounts_reached'])} "
        f"accounts{rates}."
    )


def _html_ab_test(campaign: dict[str, Any], test: dict[str, Any]) -> str:
    variants = test["variants"]
    heading = (
        f'<h3>A/B test: step {_e(test["step"])} <span class="key">{_e(campaign["key"])}</span></h3>'
    )
    if not any(v["sent"] for v in variants):
        names = ", ".join(v["variant"] for v in variants)
        return heading + f'<p class="empty">Variants {_e(names)}: nothing sent yet.</p>'
    colors = {v["variant"]: VARIANT_COLORS[i % len(VARIANT_COLORS)] for i, v in enumerate(variants)}
    bars: list[tuple[str, float, str, str]] = []
    for metric, label in (("click_rate", "Click"), ("reply_rate", "Reply")):
        bars += [
            (
                f"{label} rate · {v['variant']}",
                v[metric] or 0,
                colors[v["variant"]],
                _pct(v[metric]),
            )
            for v in variants
        ]
    rows = [
        [
            v["variant"],
            _n(v["sent"]),
            _with_rate(v["opens"], v["open_rate"]),
            _with_rate(v["clicks"], v["click_rate"]),
            _with_rate(v["replies"], v["reply_rate"]),
        ]
        for v in variants
    ]
    verdicts = "".join(
        f'<p class="verdict {_e(c["result"])}">{_e(verdict_text(c))}</p>'
        for c in test["comparisons"]
    )
    return (
        heading
        + verdicts
        + _hbar_chart(bars, f"Click and reply rates by variant of step {test['step']}")
        + _legend([(f"variant {name}", color) for name, color in colors.items()])
        + _table(["variant", "sent", "opened", "clicked", "replied"], rows, {1, 2, 3, 4})
    )


def _html_engagement(engagement: dict[str, Any]) -> str:
    head = (
        "<section><h2>Engagement over time</h2>"
        '<p class="lead">Responses per week (Monday to Sunday, UTC). Clicks, replies and '
        "meetings are the signals that matter. Opens are only in the table: privacy proxies "
        "open many emails automatically, so they say little.</p>"
    )
    weeks = engagement["weeks"]
    if not weeks:
        return head + '<p class="empty">No engagement recorded yet.</p></section>'
    shown = weeks[-26:]
    labels = [_day(w["starts"])[:-5] for w in shown]
    charted = [t for t in engagement["types"] if t not in VOLUME_EVENTS]
    series = [
        (kind, [w["counts"][kind] for w in shown], EVENT_COLORS.get(kind, "#64748b"))
        for kind in charted
    ]
    chart = (
        _line_chart(labels, series, "Responses per week by type")
        + _legend([(_label(kind), color) for kind, _, color in series])
        if series
        else ""
    )
    note = (
        f'<p class="note">The chart and table show the last 26 of {len(weeks)} weeks.</p>'
        if len(weeks) > len(shown)
        else ""
    )
    types = engagement["types"]
    rows = [
        [f"{w['week']} (from {_day(w['starts'])})", *(_n(w["counts"][t]) for t in types)]
        for w in reversed(shown)
    ]
    table = _table(
        ["week", *(_label(t) for t in types)], rows, set(range(1, len(types) + 1)), "labels"
    )
    return head + chart + note + table + "</section>"


def _html_committee(committee: dict[str, Any]) -> str:
    required = committee["required_roles"]
    head = (
        "<section><h2>Buying-committee coverage</h2>"
        '<p class="lead">Deals are decided by a committee, not one person. For each target '
        "account: which of the required roles ("
        + _e(", ".join(_label(r) for r in required) or "none configured")
        + ") have at least one person we may still contact. A gap is a role to find people "
        "for (import or research contacts).</p>"
    )
    if not committee["accounts"]:
        return head + '<p class="empty">No target accounts yet.</p></section>'
    count = committee["accounts_count"]
    bars = [
        (_label(role), n, "#dc2626" if n else "#15803d", f"{_n(n)} of {_n(count)} accounts")
        for role, n in committee["gaps_by_role"].items()
    ]
    tiers = _table(
        ["tier", "accounts", "every role covered", "average coverage"],
        [
            [
                t["label"],
                _n(t["accounts"]),
                f"{_n(t['fully_covered'])} ({_pct(_rate(t['fully_covered'], t['accounts']), 0)})",
                _pct(t["average_coverage"], 0),
            ]
            for t in committee["by_tier"]
        ],
        {1, 2, 3},
        "labels",
    )
    with_gaps = sorted(
        (a for a in committee["accounts"] if a["gaps"]),
        key=lambda a: (a["tier"], -len(a["gaps"]), -(a["icp_score"] or 0), a["domain"]),
    )
    shown = with_gaps[:ACCOUNT_ROWS_SHOWN]
    rows = [
        [
            _Markup(
                f'{_e(a["name"] or a["domain"])}<br><span class="note">{_e(a["domain"])}</span>'
            ),
            a["tier"],
            a["icp_score"],
            _label(a["stage"]),
            _chips(a["covered"], "ok"),
            _chips(a["gaps"], "gap"),
        ]
        for a in shown
    ]
    accounts = _table(["account", "tier", "ICP", "stage", "covered", "gaps"], rows, {1, 2})
    listed = (
        f"Showing the first {_n(len(shown))} of {_n(len(with_gaps))}, "
        if len(with_gaps) > len(shown)
        else ""
    )
    more = (
        f'<p class="note">{_n(len(with_gaps))} target accounts lack at least one role. '
        f"{listed}Tier 1 first, most gaps first within a tier; "
        "<code>abm report --json</code> lists every target account.</p>"
    )
    return (
        head
        + "<h3>Target accounts missing each role</h3>"
        + _hbar_chart(bars, "Target accounts missing each required role", maximum=count)
        + "<h3>By tier</h3>"
        + tiers
        + "<h3>Accounts with gaps</h3>"
        + (more + accounts if with_gaps else '<p class="empty">None: every role is covered.</p>')
        + "</section>"
    )


def _html_velocity(velocity: list[dict[str, Any]]) -> str:
    head = (
        "<section><h2>Stage velocity</h2>"
        '<p class="lead">How fast accounts move: the median number of days an account spent '
        "in a stage before each move (for its first move, counted from when the account was "
        "imported). Half the moves were quicker, half slower.</p>"
    )
    if not velocity:
        return head + '<p class="empty">No account has changed stage yet.</p></section>'
    rows = [
        [_label(v["from_stage"]), _label(v["to_stage"]), _n(v["moves"]), _days(v["median_days"])]
        for v in velocity
    ]
    return (
        head
        + _table(["from", "to", "moves", "median days"], rows, {2, 3})
        + '<p class="note">An account can skip stages when it responds strongly at once.</p>'
        + "</section>"
    )


def _html_glossary() -> str:
    terms = [
        (
            "Tier",
            "How closely an account fits the ideal customer profile: tier 1 gets "
            "hand-tuned one-to-one content, tier 2 content per cluster or industry, tier 3 "
            "programmatic one-to-many campaigns.",
        ),
        ("Reached", "At least one message was sent to someone at the account."),
        (
            "Open, click and reply rates",
            "Sent emails that were opened, clicked or answered, "
            "each counted once per email, over emails sent.",
        ),
        (
            "A/B test and p-value",
            "People are split between variants of a step at random. "
            "The p-value (two-proportion z-test on click rate) is the chance of seeing a gap at "
            f"least this large if the variants were equally good; below {SIGNIFICANCE:g} the "
            "difference is called real. With under "
            f"{MIN_SENT_PER_VARIANT} sends per variant, or too few clicks, the report says "
            "there is not enough data rather than guess.",
        ),
        (
            "Buying committee",
            "The roles that decide a purchase: decision maker (signs), "
            "approver (finance or executive sign-off), specifier (sets technical requirements), "
            "reviewer (procurement, legal, security), influencer and user.",
        ),
        (
            "MQA",
            "Marketing-qualified account: enough people there engaged strongly enough "
            "to hand the account to sales.",
        ),
    ]
    items = "".join(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in terms)
    return f"<section><h2>How to read this report</h2><dl>{items}</dl></section>"


# --------------------------------------------------------------------------- markdown


def _md(value: Any) -> str:
    """Text safe in a markdown table cell: no raw HTML, markup characters escaped, one line."""
    text = html.escape("" if value is None else str(value), quote=False)
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())


def _md_table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> list[str]:
    align = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def report_markdown(data: dict[str, Any]) -> str:
    """The report's numbers as markdown for a Prefect artifact: tables, no charts, and no
    account-by-account list (the HTML report has it)."""
    h = data["headline"]
    lines = [
        "# ABM report",
        "",
        f"Generated {_md(_when(data['generated_at']))}.",
        "",
        f"**{_n(h['targeted'])}** target accounts · **{_n(h['reached'])}** reached · "
        f"**{_n(h['engaged'])}** engaged or further · **{_n(h['mqa'])}** MQA or further · "
        f"**{_n(h['emails_sent'])}** emails sent · click rate **{_md(_pct(h['click_rate']))}** "
        f"· reply rate **{_md(_pct(h['reply_rate']))}** · every committee role covered at "
        f"**{_md(_pct(h['full_coverage_rate'], 0))}** of target accounts",
        "",
        "## Accounts by tier and stage",
        "",
    ]
    funnel = data["funnel"]
    stages = funnel["stages"]
    lines += _md_table(
        ["", *(_label(s) for s in stages), "total", "reached", "engaged+", "MQA+"],
        [
            [
                row["label"],
                *(row["by_stage"].get(s, 0) for s in stages),
                row["accounts"],
                row["reached"],
                row["at_least"]["engaged"],
                row["at_least"]["mqa"],
            ]
            for row in [*funnel["tiers"], funnel["targeted"]]
        ],
        set(range(1, len(stages) + 5)),
    )
    lines += ["## Campaigns", ""]
    if not data["campaigns"]:
        lines += ["No campaign has run yet.", ""]
    for campaign in data["campaigns"]:
        lines += [f"### {_md(campaign['name'])} ({_md(campaign['key'])})", ""]
        lines += _md_table(
            [
                *("step", "channel", "planned", "sent", "skipped", "deferred", "failed"),
                *("uncertain", "click rate", "reply rate"),
            ],
            [
                [
                    s["step"],
                    s["channel"],
                    *(s[k] for k in ("planned", "sent", "skipped", "deferred", "failed")),
                    s["uncertain"],
                    _pct(s["click_rate"]),
                    _pct(s["reply_rate"]),
                ]
                for s in campaign["steps"]
            ],
            set(range(2, 10)),
        )
        reasons = campaign["totals"]["skipped_by_reason"]
        if reasons:
            said = "; ".join(f"{n} {_reason(r)}" for r, n in reasons.items())
            lines += [f"Skipped: {_md(said)}.", ""]
        for test in campaign["ab_tests"]:
            lines += [f"**A/B test, step {_md(test['step'])}**", ""]
            lines += _md_table(
                ["variant", "sent", "opens", "clicks", "replies", "click rate", "reply rate"],
                [
                    [
                        v["variant"],
                        v["sent"],
                        v["opens"],
                        v["clicks"],
                        v["replies"],
                        _pct(v["click_rate"]),
                        _pct(v["reply_rate"]),
                    ]
                    for v in test["variants"]
                ],
                set(range(1, 7)),
            )
            lines += [f"> {_md(verdict_text(c))}" for c in test["comparisons"]] + [""]
    committee = data["committee"]
    lines += ["## Buying-committee coverage", ""]
    lines += _md_table(
        ["tier", "accounts", "every role covered", "average coverage"],
        [
            [t["label"], t["accounts"], t["fully_covered"], _pct(t["average_coverage"], 0)]
            for t in committee["by_tier"]
        ],
        {1, 2, 3},
    )
    gaps = [f"{_label(r)} {n}" for r, n in committee["gaps_by_role"].items() if n]
    if gaps:
        lines += [f"Target accounts missing a role: {_md(', '.join(gaps))}.", ""]
    weeks = data["engagement"]["weeks"][-8:]
    if weeks:
        types = data["engagement"]["types"]
        lines += ["## Engagement per week (latest 8)", ""]
        lines += _md_table(
            ["week", *(_label(t) for t in types)],
            [[w["week"], *(w["counts"][t] for t in types)] for w in reversed(weeks)],
            set(range(1, len(types) + 1)),
        )
    if data["stage_velocity"]:
        lines += ["## Stage velocity (median days in a stage before moving)", ""]
        lines += _md_table(
            ["from", "to", "moves", "median days"],
            [
                [v["from_stage"], v["to_stage"], v["moves"], f"{v['median_days']:g}"]
                for v in data["stage_velocity"]
            ],
            {2, 3},
        )
    return "\n".join(lines).rstrip() + "\n"


def publish_artifact(data: dict[str, Any]) -> UUID:
    """Put the markdown report in Prefect under the stable key `abm-report`, so the UI keeps
    its versions; needs a Prefect API (in a flow run or a configured server)."""
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(
        key="abm-report",
        markdown=report_markdown(data),
        description="ABM report: funnel, campaigns, A/B tests, committee coverage, velocity",
    )

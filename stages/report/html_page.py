"""The report as one self-contained HTML page (inline CSS and SVG, no scripts, fonts or links
to fetch) for a browser, a mail attachment or print. Python picks and formats the numbers;
the Jinja2 templates in templates/ hold the markup and escape every text they are given."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from core.vocabulary import SOURCE_LABELS
from stages.report.charts import hbar_chart, line_chart, stacked_chart
from stages.report.data import (
    ACCOUNT_ROWS_SHOWN,
    MIN_SENT_PER_VARIANT,
    SIGNIFICANCE,
    VOLUME_EVENTS,
    rate,
)
from stages.report.text import (
    as_words,
    day_text,
    days_text,
    number,
    percent,
    sent_text,
    skip_reason_text,
    verdict_text,
    when_text,
)

STAGE_COLORS = {
    "target": "#cbd5e1",
    "aware": "#93c5fd",
    "engaged": "#3b82f6",
    "mqa": "#1d4ed8",
    "opportunity": "#1e3a8a",
    "customer": "#15803d",
}
OUTCOMES = ("sent", "skipped", "deferred", "waiting", "failed", "uncertain")
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
    "web_visit": "#0d9488",
    "intent": "#d97706",
}
SOURCE_COLORS = {
    "email": "#2563eb",
    "linkedin": "#0e7490",
    "web": "#15803d",
    "intent": "#f59e0b",
    "other": "#64748b",
    "breadth": "#a78bfa",
}
SOURCE_ACCOUNTS_CHARTED = 15
VARIANT_COLORS = ("#2563eb", "#f59e0b", "#15803d", "#7c3aed", "#db2777", "#0891b2")

_ENV = Environment(
    loader=PackageLoader("stages.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=StrictUndefined,
)


def render_html(data: dict[str, Any]) -> str:
    """The whole page for one `report_data` result."""
    return _ENV.get_template("report.html.j2").render(
        generated=when_text(data["generated_at"]),
        kpis=_kpis(data["headline"]),
        funnel=_funnel(data["funnel"]),
        campaigns=[_campaign(c) for c in data["campaigns"]],
        engagement=_engagement(data["engagement"]),
        sources=_sources(data["engagement_sources"]),
        committee=_committee(data["committee"]),
        velocity=[
            [
                as_words(v["from_stage"]),
                as_words(v["to_stage"]),
                number(v["moves"]),
                days_text(v["median_days"]),
            ]
            for v in data["stage_velocity"]
        ],
        glossary=_glossary(),
    )


def _table(
    headers: list[str], rows: list[list[Any]], numeric: set[int], css: str = ""
) -> dict[str, Any]:
    """A table for the `table` macro: columns in `numeric` align right."""
    return {"headers": headers, "rows": rows, "numeric": numeric, "css": css}


def _with_rate(count: int, share: float | None) -> dict[str, Any]:
    """A count with its rate underneath, or a dash where no rate applies."""
    return {
        "kind": "rate",
        "count": number(count),
        "rate": None if share is None else percent(share),
    }


def _kpis(h: dict[str, Any]) -> list[tuple[str, str, str]]:
    targeted = h["targeted"]

    def share(n: int) -> str:
        return f"{percent(rate(n, targeted), 0)} of target accounts" if targeted else "no targets"

    return [
        ("Target accounts", number(targeted), f"of {number(h['accounts'])} accounts (tiers 1–3)"),
        ("Reached", number(h["reached"]), share(h["reached"]) + ", at least one message"),
        ("Engaged or further", number(h["engaged"]), share(h["engaged"])),
        ("MQA or further", number(h["mqa"]), share(h["mqa"])),
        ("Emails sent", number(h["emails_sent"]), "across all campaigns"),
        (
            "LinkedIn tasks",
            number(h["linkedin_tasks"]),
            f"for reps, not emails; {number(h['audience_adds'])} audience adds",
        ),
        ("Click rate", percent(h["click_rate"]), f"{number(h['clicks'])} emails clicked"),
        ("Reply rate", percent(h["reply_rate"]), f"{number(h['replies'])} emails answered"),
        (
            "Full buying committee",
            percent(h["full_coverage_rate"], 0),
            f"{number(h['fully_covered'])} target accounts with every required role",
        ),
    ]


def _funnel(funnel: dict[str, Any]) -> dict[str, Any]:
    total = funnel["targeted"]
    stages = funnel["stages"]
    bars = []
    for stage in stages:
        n = total["at_least"][stage]
        share = percent(rate(n, total["accounts"]), 0)
        bars.append(
            (
                f"{as_words(stage)} or further",
                n,
                STAGE_COLORS.get(stage, "#64748b"),
                f"{number(n)} ({share})",
            )
        )
    headers = ["", *(as_words(s) for s in stages), "total", "reached", "engaged+", "MQA+"]
    rows = [
        [
            row["label"],
            *(number(row["by_stage"].get(s, 0)) for s in stages),
            number(row["accounts"]),
            number(row["reached"]),
            number(row["at_least"]["engaged"]),
            number(row["at_least"]["mqa"]),
        ]
        for row in [*funnel["tiers"], total]
    ]
    chart = hbar_chart(bars, "Target accounts at each journey stage or further")
    return {
        "chart": chart if total["accounts"] else None,
        "table": _table(headers, rows, set(range(1, len(headers))), "labels"),
    }


def _campaign(campaign: dict[str, Any]) -> dict[str, Any]:
    steps = campaign["steps"]
    bars = [
        (
            f"{step['step']} ({as_words(step['channel'])})",
            [(name, step[name], OUTCOME_COLORS[name]) for name in OUTCOMES],
        )
        for step in steps
    ]
    headers = ["step", "channel", "planned", *OUTCOMES, "opened", "clicked", "replied"]
    rows = [
        [
            step["step"],
            as_words(step["channel"]),
            *(number(step[k]) for k in ("planned", *OUTCOMES)),
            _with_rate(step["opens"], step["open_rate"]),
            _with_rate(step["clicks"], step["click_rate"]),
            _with_rate(step["replies"], step["reply_rate"]),
        ]
        for step in steps
    ]
    return {
        "name": campaign["name"],
        "key": campaign["key"],
        "paused": campaign["status"] == "paused",
        "has_steps": bool(steps),
        "sentence": _campaign_sentence(campaign),
        "chart": stacked_chart(bars, f"Outcome of each step of {campaign['name']}"),
        "legend": [(name, OUTCOME_COLORS[name]) for name in OUTCOMES],
        "table": _table(headers, rows, set(range(2, len(headers))), "labels"),
        "skipped": [
            (number(n), skip_reason_text(reason), reason)
            for reason, n in campaign["totals"]["skipped_by_reason"].items()
        ],
        "ab_tests": [_ab_test(test) for test in campaign["ab_tests"]],
    }


def _campaign_sentence(campaign: dict[str, Any]) -> str:
    t = campaign["totals"]
    if not t["sent"]:
        held = (
            f" {number(t['deferred'])} messages are held back by frequency caps or the sending "
            "window until a slot opens."
            if t["deferred"]
            else ""
        )
        return f"Nothing sent yet.{held}"
    rates = (
        f"; emails' click rate {percent(t['click_rate'])}, reply rate {percent(t['reply_rate'])}"
        if t["emails_sent"]
        else ""
    )
    reached = campaign["accounts_reached"]
    return (
        f"{sent_text(t)}, for people at {number(reached)} "
        f"{'account' if reached == 1 else 'accounts'}{rates}."
    )


def _ab_test(test: dict[str, Any]) -> dict[str, Any]:
    variants = test["variants"]
    colors = {v["variant"]: VARIANT_COLORS[i % len(VARIANT_COLORS)] for i, v in enumerate(variants)}
    bars: list[tuple[str, float, str, str]] = []
    for metric, metric_label in (("click_rate", "Click"), ("reply_rate", "Reply")):
        bars += [
            (
                f"{metric_label} rate · {v['variant']}",
                v[metric] or 0,
                colors[v["variant"]],
                percent(v[metric]),
            )
            for v in variants
        ]
    rows = [
        [
            v["variant"],
            number(v["sent"]),
            _with_rate(v["opens"], v["open_rate"]),
            _with_rate(v["clicks"], v["click_rate"]),
            _with_rate(v["replies"], v["reply_rate"]),
        ]
        for v in variants
    ]
    return {
        "step": test["step"],
        "any_sent": any(v["sent"] for v in variants),
        "names": ", ".join(v["variant"] for v in variants),
        "verdicts": [(c["result"], verdict_text(c)) for c in test["comparisons"]],
        "chart": hbar_chart(bars, f"Click and reply rates by variant of step {test['step']}"),
        "legend": [(f"variant {name}", color) for name, color in colors.items()],
        "table": _table(["variant", "sent", "opened", "clicked", "replied"], rows, {1, 2, 3, 4}),
    }


def _engagement(engagement: dict[str, Any]) -> dict[str, Any] | None:
    weeks = engagement["weeks"]
    if not weeks:
        return None
    shown = weeks[-26:]
    labels = [day_text(w["starts"])[:-5] for w in shown]
    charted = [t for t in engagement["types"] if t not in VOLUME_EVENTS]
    series = [
        (kind, [w["counts"][kind] for w in shown], EVENT_COLORS.get(kind, "#64748b"))
        for kind in charted
    ]
    types = engagement["types"]
    rows = [
        [f"{w['week']} (from {day_text(w['starts'])})", *(number(w["counts"][t]) for t in types)]
        for w in reversed(shown)
    ]
    return {
        "chart": line_chart(labels, series, "Responses per week by type") if series else None,
        "legend": [(as_words(kind), color) for kind, _, color in series],
        "weeks": len(weeks),
        "shown": len(shown),
        "table": _table(
            ["week", *(as_words(t) for t in types)], rows, set(range(1, len(types) + 1)), "labels"
        ),
    }


def _source_label(source: str) -> str:
    label = SOURCE_LABELS.get(source, source)
    return label[:1].upper() + label[1:]


def _tenths(value: float) -> float | int:
    """Points to one decimal, a whole number without its `.0`."""
    rounded = round(value, 1)
    return int(rounded) if rounded.is_integer() else rounded


def _points(value: float) -> str:
    return number(_tenths(value))


def _accounts_text(n: int) -> str:
    return f"{number(n)} {'account' if n == 1 else 'accounts'}"


def _sources(section: dict[str, Any]) -> dict[str, Any] | None:
    """Engagement by source: totals over the target accounts, the most engaged accounts'
    scores split by source, and the intent topics of the last weeks."""
    accounts = section["accounts"]
    topics = section["intent_topics"]
    if not accounts and not topics:
        return None
    shown = [s for s in section["sources"] if s != "other" or section["totals"]["other"]]
    parts = [*shown, "breadth"]
    totals = {**section["totals"], "breadth": section["breadth"]}
    with_source = {**section["accounts_with"], "breadth": len(accounts)}
    bars = [
        (
            _source_label(part),
            max(totals[part], 0),
            SOURCE_COLORS[part],
            f"{_points(totals[part])} ({_accounts_text(with_source.get(part, 0))})",
        )
        for part in parts
    ]
    stacked = [
        (
            a["name"] or a["domain"],
            [
                (
                    _source_label(part),
                    _tenths(a["breadth"] if part == "breadth" else a["sources"][part]),
                    SOURCE_COLORS[part],
                )
                for part in parts
            ],
        )
        for a in accounts[:SOURCE_ACCOUNTS_CHARTED]
    ]
    rows = [
        [
            {"kind": "account", "name": a["name"] or a["domain"], "domain": a["domain"]},
            a["tier"],
            as_words(a["stage"]),
            _points(a["engagement_score"]),
            *(_points(a["sources"][part]) for part in shown),
            _points(a["breadth"]),
        ]
        for a in accounts[:ACCOUNT_ROWS_SHOWN]
    ]
    headers = ["account", "tier", "stage", "score", *(_source_label(p) for p in parts)]
    topic_rows = [
        [
            t["topic"],
            number(t["accounts_surging"]),
            number(t["accounts"]),
            _points(t["top_score"]),
            day_text(t["latest"]),
        ]
        for t in topics
    ]
    return {
        "chart": hbar_chart(bars, "Engagement points of target accounts by source")
        if accounts
        else None,
        "accounts_chart": stacked_chart(
            stacked, "The most engaged target accounts: their score by source"
        )
        if stacked
        else None,
        "legend": [(_source_label(part), SOURCE_COLORS[part]) for part in parts],
        "accounts": len(accounts),
        "listed": (
            f"The first {number(ACCOUNT_ROWS_SHOWN)} of {number(len(accounts))}; "
            if len(accounts) > ACCOUNT_ROWS_SHOWN
            else ""
        ),
        "table": _table(headers, rows, set(range(1, len(headers))) - {2}),
        "not_split": number(section["not_split"]) if section["not_split"] else None,
        "intent_days": section["intent_days"],
        "topics": _table(
            ["topic", "accounts surging", "accounts with a signal", "top score", "latest"],
            topic_rows,
            {1, 2, 3},
            "labels",
        )
        if topic_rows
        else None,
    }


def _committee(committee: dict[str, Any]) -> dict[str, Any]:
    count = committee["accounts_count"]
    bars = [
        (
            as_words(role),
            n,
            "#dc2626" if n else "#15803d",
            f"{number(n)} of {number(count)} accounts",
        )
        for role, n in committee["gaps_by_role"].items()
    ]
    tiers = [
        [
            t["label"],
            number(t["accounts"]),
            f"{number(t['fully_covered'])} ({percent(rate(t['fully_covered'], t['accounts']), 0)})",
            percent(t["average_coverage"], 0),
        ]
        for t in committee["by_tier"]
    ]
    with_gaps = sorted(
        (a for a in committee["accounts"] if a["gaps"]),
        key=lambda a: (a["tier"], -len(a["gaps"]), -(a["icp_score"] or 0), a["domain"]),
    )
    shown = with_gaps[:ACCOUNT_ROWS_SHOWN]
    rows = [
        [
            {"kind": "account", "name": a["name"] or a["domain"], "domain": a["domain"]},
            a["tier"],
            a["icp_score"],
            as_words(a["stage"]),
            {"kind": "chips", "style": "ok", "roles": [as_words(r) for r in a["covered"]]},
            {"kind": "chips", "style": "gap", "roles": [as_words(r) for r in a["gaps"]]},
        ]
        for a in shown
    ]
    return {
        "roles": ", ".join(as_words(r) for r in committee["required_roles"]) or "none configured",
        "any": bool(committee["accounts"]),
        "chart": hbar_chart(bars, "Target accounts missing each required role", maximum=count),
        "tiers": _table(
            ["tier", "accounts", "every role covered", "average coverage"],
            tiers,
            {1, 2, 3},
            "labels",
        ),
        "with_gaps": number(len(with_gaps)) if with_gaps else None,
        "listed": (
            f"Showing the first {number(len(shown))} of {number(len(with_gaps))}, "
            if len(with_gaps) > len(shown)
            else ""
        ),
        "accounts": _table(["account", "tier", "ICP", "stage", "covered", "gaps"], rows, {1, 2}),
    }


def _glossary() -> list[tuple[str, str]]:
    return [
        (
            "Tier",
            "How closely an account fits the ideal customer profile: tier 1 gets "
            "hand-tuned one-to-one content, tier 2 content per cluster or industry, tier 3 "
            "programmatic one-to-many campaigns.",
        ),
        ("Reached", "At least one message was sent to someone at the account."),
        (
            "Emails, LinkedIn tasks and audience adds",
            "Counted apart: an email goes to the person; a LinkedIn task is a connection "
            "request or message handed to a rep to send by hand; an audience add puts the "
            "person in a LinkedIn matched audience for ads. Only emails have open, click and "
            "reply rates.",
        ),
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
            "Engagement by source",
            "An account's engagement score is the sum of what its signals weigh now (each "
            "loses half its weight every half-life, 30 days by default): email (opens, "
            "clicks, replies, bounces, also those from the monitored mailbox), LinkedIn (ad "
            "engagement, lead forms), web (pages viewed on your site after a tracked click) "
            "and intent data (topics third parties saw the account research, weighed by the "
            "topics you sell), plus a bonus for breadth across people and committee roles.",
        ),
        (
            "MQA",
            "Marketing-qualified account: enough people there engaged strongly enough "
            "to hand the account to sales.",
        ),
    ]

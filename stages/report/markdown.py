"""The report as markdown for a Prefect artifact: the same numbers as the HTML page, as
tables that the Prefect UI shows and keeps in versions."""

from __future__ import annotations

import html
from typing import Any
from uuid import UUID

from core.vocabulary import SOURCE_LABELS
from stages.report.text import as_words, number, percent, skip_reason_text, verdict_text, when_text


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
        f"Generated {_md(when_text(data['generated_at']))}.",
        "",
        f"**{number(h['targeted'])}** target accounts · **{number(h['reached'])}** reached · "
        f"**{number(h['engaged'])}** engaged or further · **{number(h['mqa'])}** MQA or further · "
        f"**{number(h['emails_sent'])}** emails sent · "
        f"**{number(h['linkedin_tasks'])}** LinkedIn tasks (for reps) · "
        f"**{number(h['audience_adds'])}** LinkedIn audience adds · "
        f"click rate **{_md(percent(h['click_rate']))}** · "
        f"reply rate **{_md(percent(h['reply_rate']))}** · every committee role covered at "
        f"**{_md(percent(h['full_coverage_rate'], 0))}** of target accounts",
        "",
        "## Accounts by tier and stage",
        "",
    ]
    funnel = data["funnel"]
    stages = funnel["stages"]
    lines += _md_table(
        ["", *(as_words(s) for s in stages), "total", "reached", "engaged+", "MQA+"],
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
                    percent(s["click_rate"]),
                    percent(s["reply_rate"]),
                ]
                for s in campaign["steps"]
            ],
            set(range(2, 10)),
        )
        reasons = campaign["totals"]["skipped_by_reason"]
        if reasons:
            said = "; ".join(f"{n} {skip_reason_text(r)}" for r, n in reasons.items())
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
                        percent(v["click_rate"]),
                        percent(v["reply_rate"]),
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
            [t["label"], t["accounts"], t["fully_covered"], percent(t["average_coverage"], 0)]
            for t in committee["by_tier"]
        ],
        {1, 2, 3},
    )
    gaps = [f"{as_words(r)} {n}" for r, n in committee["gaps_by_role"].items() if n]
    if gaps:
        lines += [f"Target accounts missing a role: {_md(', '.join(gaps))}.", ""]
    lines += _sources_markdown(data["engagement_sources"])
    weeks = data["engagement"]["weeks"][-8:]
    if weeks:
        types = data["engagement"]["types"]
        lines += ["## Engagement per week (latest 8)", ""]
        lines += _md_table(
            ["week", *(as_words(t) for t in types)],
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


def _sources_markdown(section: dict[str, Any]) -> list[str]:
    """Engagement points of the target accounts by source, and the intent topics (no
    account list: the HTML report has it)."""
    if not section["accounts"] and not section["intent_topics"]:
        return []
    lines = ["## Engagement by source", ""]
    totals = {**section["totals"], "breadth": section["breadth"]}
    with_source = {**section["accounts_with"], "breadth": len(section["accounts"])}
    lines += _md_table(
        ["source", "points", "target accounts"],
        [
            [SOURCE_LABELS.get(part, part), f"{totals[part]:g}", with_source.get(part, 0)]
            for part in (*section["sources"], "breadth")
            if part != "other" or totals["other"]
        ],
        {1, 2},
    )
    if section["intent_topics"]:
        lines += [f"**Intent topics of the last {section['intent_days']} days**", ""]
        lines += _md_table(
            ["topic", "accounts surging", "accounts", "top score", "latest"],
            [
                [
                    t["topic"],
                    t["accounts_surging"],
                    t["accounts"],
                    f"{t['top_score']:g}",
                    t["latest"],
                ]
                for t in section["intent_topics"][:10]
            ],
            {1, 2, 3},
        )
    return lines


def publish_artifact(data: dict[str, Any]) -> UUID:
    """Put the markdown report in Prefect under the stable key `abm-report`, so the UI keeps
    its versions; needs a Prefect API (in a flow run or a configured server)."""
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(
        key="abm-report",
        markdown=report_markdown(data),
        description="ABM report: funnel, campaigns, A/B tests, committee coverage, velocity",
    )

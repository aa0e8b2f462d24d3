"""What a person looks at: the report, and the demo end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from abm.cli.common import JsonOption, cells, err, open_engine, out, print_json
from core.errors import AbmError


def report(
    html: Annotated[
        Path | None, typer.Option(help="write a self-contained HTML report with charts here")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Campaign and account report: funnel, engagement, committee coverage, A/B tests."""
    from stages.report import render_html, report_data, verdict_text

    data = report_data(open_engine())
    if html:
        try:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(render_html(data), encoding="utf-8")
        except OSError as exc:
            raise AbmError(f"{html}: cannot write: {exc.strerror}") from None
        err.print(
            f"report written to {html.resolve()}: open it in a browser",
            highlight=False,
            markup=False,
        )
    if as_json:
        print_json(data)
        return
    h = data["headline"]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    out.print(
        f"[bold]{h['targeted']}[/] target accounts: {h['reached']} reached, {h['engaged']} "
        f"engaged or further, {h['mqa']} MQA or further; {h['fully_covered']} with every "
        f"committee role. Emails sent {h['emails_sent']}, click rate {rate(h['click_rate'])}, "
        f"reply rate {rate(h['reply_rate'])}. LinkedIn tasks {h['linkedin_tasks']} (for reps), "
        f"audience adds {h['audience_adds']}.",
        highlight=False,
    )
    sources = data["engagement_sources"]
    if sources["accounts"]:
        from core.vocabulary import SOURCE_LABELS

        parts = [
            f"{SOURCE_LABELS.get(source, source)} {points:g}"
            for source, points in sources["totals"].items()
            if source != "other" or points
        ]
        out.print(
            "Engagement points of target accounts by source: "
            f"{', '.join(parts)}, breadth {sources['breadth']:g}.",
            highlight=False,
            markup=False,
        )
    counts = ("planned", "sent", "skipped", "deferred", "failed")
    for campaign in data["campaigns"]:
        if not campaign["steps"]:
            continue
        table = Table("step", *counts, "click rate", "reply rate", title=Text(campaign["key"]))
        for step in campaign["steps"]:
            table.add_row(
                *cells(
                    step["step"],
                    *(str(step[k]) for k in counts),
                    rate(step["click_rate"]),
                    rate(step["reply_rate"]),
                )
            )
        out.print(table)
        for test in campaign["ab_tests"]:
            for comparison in test["comparisons"]:
                out.print(
                    f"A/B {campaign['key']} / {test['step']}: {verdict_text(comparison)}",
                    highlight=False,
                    markup=False,
                )
    if not html:
        err.print("charts, committee gaps and stage velocity: abm report --html report.html")


def demo(
    contacts: Annotated[int, typer.Option(min=20, max=1_000_000, help="demo contacts")] = 2000,
) -> None:
    """Make a demo dataset, run the demo campaign through Prefect, print a summary."""
    from abm.demo import run_demo

    run_demo(contacts, out, err)

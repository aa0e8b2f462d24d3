"""Getting data in: create the database, import CSV files, score accounts."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from abm.cli.common import err, open_engine
from core.domains import show
from core.settings import get_settings
from models.db import get_engine, migrate

import_app = typer.Typer(help="Import accounts, contacts, suppressions or intent data from CSV.")
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="reject a row instead of keeping it with a field left blank, mapped or converted",
    ),
]
SHOWN = 10  # rejects and warnings printed; the files beside the source have all of them


def init() -> None:
    """Create or migrate the database."""
    settings = get_settings()
    before, after = migrate(get_engine(settings.database_url))
    where = get_engine(settings.database_url).url.render_as_string(hide_password=True)
    if before == after:
        err.print(f"database {where} is up to date (revision {after})")
    else:
        err.print(f"database {where} migrated from {before or 'empty'} to revision {after}")


def _import(kind: str, path: Path, strict: bool, **options: Any) -> None:
    """Run one import and print what happened: notes, the first rejects and warnings (the
    rest are counted and in the files), then the counts as the last line. Exit 1 when a
    row was rejected; warnings alone are not a failure, every row went in."""
    from stages.importing import import_file

    report = import_file(kind, path, open_engine(), get_settings(), strict=strict, **options)
    for line in report.notes:
        err.print(line, markup=False, highlight=False)
    for reject in report.rejects[:SHOWN]:
        err.print(f"{path}:{reject.line}: {reject.reason}", style="yellow", markup=False)
    if len(report.rejects) > SHOWN:
        err.print(f"[yellow]... and {len(report.rejects) - SHOWN} more[/]")
    for warning in report.warnings[:SHOWN]:
        err.print(
            f"{path}:{warning.line}: warning: {warning.field} '{show(warning.value)}': "
            f"{warning.action}",
            style="cyan",
            markup=False,
            highlight=False,
        )
    if report.warning_count > SHOWN:
        err.print(f"[cyan]... and {report.warning_count - SHOWN} more warnings[/]")
    if report.rejects_path:
        err.print(f"rejected rows with reasons: {report.rejects_path}", highlight=False)
    if report.warnings_path:
        err.print(
            f"rows kept with a field left blank, mapped or converted: {report.warnings_path}",
            highlight=False,
        )
    print(
        f"imported={report.imported} updated={report.updated} "
        f"rejected={len(report.rejects)} warned={report.warned}"
    )
    if report.rejects:
        raise typer.Exit(1)


@import_app.command("accounts")
def import_accounts(file: Path, strict: StrictOption = False) -> None:
    """Upsert accounts by domain."""
    _import("accounts", file, strict)


@import_app.command("contacts")
def import_contacts(file: Path, strict: StrictOption = False) -> None:
    """Upsert contacts by email (their accounts must be imported first)."""
    _import("contacts", file, strict)


@import_app.command("suppressions")
def import_suppressions(file: Path, strict: StrictOption = False) -> None:
    """Emails or domains never to contact."""
    _import("suppressions", file, strict)


def _source(value: str | None) -> str | None:
    from stages.importing.intent import source_name

    try:
        return None if value is None else source_name(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _day(value: str | None) -> date | None:
    try:
        return None if value is None else date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD") from None


@import_app.command("intent")
def import_intent(
    file: Path,
    source: Annotated[
        str | None,
        typer.Option(
            callback=_source,
            help="the provider (bombora, g2, 6sense, demandbase, ...): part of each signal's "
            "key; default: recognised from the columns, else csv",
        ),
    ] = None,
    day: Annotated[
        str | None,
        typer.Option(
            "--date",
            callback=_day,
            help="YYYY-MM-DD: the day of every signal, for a file without a date column",
        ),
    ] = None,
    strict: StrictOption = False,
) -> None:
    """Intent data: domain, topic, score (0-100 or Low/Medium/High) or surge flag, date.

    Kept as engagement events of type `intent`, weighed by topic in the engagement rules;
    rows for domains that are not imported accounts are rejected."""
    _import("intent", file, strict, source=source, as_of=day)


def score() -> None:
    """(Re)score ICP fit and tiers for all accounts."""
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    per_tier = rescore_accounts_in_db(open_engine(), load_icp_rules(get_settings().icp_rules))
    total = sum(per_tier.values())
    parts = [f"tier {t}: {per_tier.get(t, 0)}" for t in (1, 2, 3)]
    err.print(f"scored {total} accounts; {', '.join(parts)}; not targeted: {per_tier.get(None, 0)}")

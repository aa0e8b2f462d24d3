"""Getting data in: create the database, import CSV files, score accounts."""

from __future__ import annotations

from pathlib import Path

import typer

from abm.cli.common import err, open_engine
from core.settings import get_settings
from models.db import get_engine, migrate

import_app = typer.Typer(help="Import accounts, contacts or suppressions from CSV.")


def init() -> None:
    """Create or migrate the database."""
    settings = get_settings()
    before, after = migrate(get_engine(settings.database_url))
    where = get_engine(settings.database_url).url.render_as_string(hide_password=True)
    if before == after:
        err.print(f"database {where} is up to date (revision {after})")
    else:
        err.print(f"database {where} migrated from {before or 'empty'} to revision {after}")


def _import(kind: str, path: Path) -> None:
    from stages.importing import import_file

    report = import_file(kind, path, open_engine(), get_settings())
    for line in report.notes:
        err.print(line, markup=False, highlight=False)
    for reject in report.rejects[:10]:
        err.print(f"{path}:{reject.line}: {reject.reason}", style="yellow", markup=False)
    if len(report.rejects) > 10:
        err.print(f"[yellow]... and {len(report.rejects) - 10} more[/]")
    if report.rejects_path:
        err.print(f"rejected rows with reasons: {report.rejects_path}", highlight=False)
    print(f"imported={report.imported} updated={report.updated} rejected={len(report.rejects)}")
    if report.rejects:
        raise typer.Exit(1)


@import_app.command("accounts")
def import_accounts(file: Path) -> None:
    """Upsert accounts by domain."""
    _import("accounts", file)


@import_app.command("contacts")
def import_contacts(file: Path) -> None:
    """Upsert contacts by email (their accounts must be imported first)."""
    _import("contacts", file)


@import_app.command("suppressions")
def import_suppressions(file: Path) -> None:
    """Emails or domains never to contact."""
    _import("suppressions", file)


def score() -> None:
    """(Re)score ICP fit and tiers for all accounts."""
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    per_tier = rescore_accounts_in_db(open_engine(), load_icp_rules(get_settings().icp_rules))
    total = sum(per_tier.values())
    parts = [f"tier {t}: {per_tier.get(t, 0)}" for t in (1, 2, 3)]
    err.print(f"scored {total} accounts; {', '.join(parts)}; not targeted: {per_tier.get(None, 0)}")

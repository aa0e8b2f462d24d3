"""`abm doctor`: what is missing or unsafe in the configured backends, before a real send
finds out. Exit 0 when nothing blocks, 1 when something would stop (or should stop) a real
send; each failing line names the setting to change."""

from __future__ import annotations

import typer
from rich.table import Table

from abm.cli.common import JsonOption, cells, err, out, print_json
from core.errors import ConfigError
from core.settings import get_settings

STYLES = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(as_json: JsonOption = False) -> None:
    """Check the configured backends' settings and say what is missing or unsafe."""
    from abm.cli.console import console_check
    from connectors.checks import Check, run_checks

    try:
        checks = [*run_checks(get_settings()), console_check(get_settings())]
    except ConfigError as exc:  # a value that does not parse stops everything else
        checks = [Check("settings", "fail", str(exc))]
    failed = [check for check in checks if check.status == "fail"]
    if as_json:
        print_json([check.as_dict() for check in checks])
    else:
        table = Table("check", "status", "message")
        for check in checks:
            name, status, message = cells(check.check, check.status, check.message)
            status.stylize(STYLES[check.status])
            table.add_row(name, status, message)
        out.print(table)
        warned = sum(check.status == "warn" for check in checks)
        summary = f"{len(failed)} failing, {warned} warning(s), {len(checks)} checks"
        err.print(
            f"{summary}: fix the failing settings before sending for real"
            if failed
            else f"{summary}: nothing blocks a send",
            highlight=False,
            markup=False,
        )
    if failed:
        raise typer.Exit(1)

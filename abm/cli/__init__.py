"""The `abm` command: a thin layer over the library. Expected problems print a clear
message and exit 2 (usage, configuration) or 1 (the work ran, something was rejected).
One module a command group; this one assembles them and is the entry point."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from abm.cli import (
    accounts,
    campaigns,
    console,
    data,
    doctor,
    engagement,
    operations,
    reporting,
)
from abm.cli.common import err
from core.errors import AbmError
from models.db import DatabaseError

app = typer.Typer(
    help="Account-based-marketing campaign orchestrator on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(data.init)
app.add_typer(data.import_app, name="import")
app.command("score")(data.score)
app.add_typer(accounts.accounts_app, name="accounts")
app.add_typer(accounts.contacts_app, name="contacts")
app.add_typer(accounts.stakeholders_app, name="stakeholders")
app.add_typer(campaigns.campaign_app, name="campaign")
app.add_typer(engagement.engagement_app, name="engagement")
app.add_typer(engagement.webhooks_app, name="webhooks")
app.add_typer(engagement.crm_app, name="crm")
app.add_typer(operations.suppressions_app, name="suppressions")
app.command("report")(reporting.report)
app.command("demo")(reporting.demo)
app.command("doctor")(doctor.doctor)
app.add_typer(console.console_app, name="console")
app.command("serve")(console.serve)


def main() -> None:
    """Entry point: expected errors become a message and an exit code, never a traceback."""
    try:
        code = app(standalone_mode=False)  # click returns the code of typer.Exit here
    except (AbmError, DatabaseError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, (click.ClickException, typer.TyperException)):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)

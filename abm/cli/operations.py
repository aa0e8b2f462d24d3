"""Running the operation: suppressions (see and lift them), the campaigns there are, and
campaign files on the Prefect schedule. `campaign list|schedule|schedules|unschedule` join
the `campaign` group of abm.cli.campaigns."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from abm.cli.campaigns import campaign_app
from abm.cli.common import JsonOption, cells, err, open_engine, operator, out, print_json
from core.errors import AbmError

suppressions_app = typer.Typer(
    help="Emails and domains never to contact: list them, lift one (kept in the history)."
)


class Kind(StrEnum):
    email = "email"
    domain = "domain"


class Channel(StrEnum):
    all = "all"
    email = "email"
    linkedin = "linkedin"


PERSON_ASKED_HELP = (
    "lift an unsubscribe because this person asked to hear from you again (consent law: only "
    "the person can take back an unsubscribe)"
)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def when(value: Any) -> str:
    """A stored time as ISO 8601 to the second, for JSON and tables alike."""
    return value.isoformat(timespec="seconds") if value is not None else ""


@suppressions_app.command("list")
def suppressions_list(
    kind: Annotated[Kind | None, typer.Option(case_sensitive=False)] = None,
    channel: Annotated[Channel | None, typer.Option(case_sensitive=False)] = None,
    search: Annotated[str | None, typer.Option(help="text in the value or the reason")] = None,
    lifted: Annotated[
        bool, typer.Option("--lifted", help="the lifted ones instead, with who, when and why")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Suppressions in force (or lifted ones), by kind, value and channel."""
    from models.store import lifted_suppression_rows, suppression_rows

    engine = open_engine()
    kind_value = kind.value if kind else None
    channel_value = channel.value if channel else None
    if lifted:
        rows = lifted_suppression_rows(engine, kind_value, channel_value, search)
    else:
        rows = suppression_rows(engine, kind_value, channel_value, search)
    for row in rows:
        for name in ("created_at", "lifted_at"):
            if name in row:
                row[name] = when(row[name])
    if as_json:
        print_json(rows)
        return
    if lifted:
        _lifted_table(rows)
        return
    table = Table("kind", "value", "channel", "reason", "source", "since", "unsubscribe")
    for row in rows:
        table.add_row(
            *cells(
                row["kind"],
                row["value"],
                row["channel"],
                row["reason"] or "",
                row["source"],
                row["created_at"][:10],
                "yes" if row["unsubscribe"] else "",
            )
        )
    out.print(table)
    err.print(plural(len(rows), "suppression"), markup=False)
    unsubscribes = sum(1 for row in rows if row["unsubscribe"])
    if unsubscribes:
        err.print(
            f"{plural(unsubscribes, 'unsubscribe')}: lifted only when the person asks "
            "(abm suppressions remove VALUE --person-asked --reason ...)",
            markup=False,
        )


def _lifted_table(rows: list[dict[str, Any]]) -> None:
    table = Table("kind", "value", "channel", "was", "lifted", "by", "why", "person asked")
    for row in rows:
        table.add_row(
            *cells(
                row["kind"],
                row["value"],
                row["channel"],
                f"{row['reason'] or '-'} ({row['source']}, {row['created_at'][:10]})",
                row["lifted_at"][:16].replace("T", " "),
                row["lifted_by"],
                row["lift_reason"],
                "yes" if row["person_asked"] else "",
            )
        )
    out.print(table)
    err.print(f"{plural(len(rows), 'lifted suppression')}", markup=False)


@suppressions_app.command("remove")
def suppressions_remove(
    value: Annotated[str, typer.Argument(help="the email address or domain")],
    reason: Annotated[str, typer.Option(help="why it is lifted; kept in the history")],
    channel: Annotated[
        Channel | None,
        typer.Option(case_sensitive=False, help="only this channel's suppression (default all)"),
    ] = None,
    person_asked: Annotated[bool, typer.Option("--person-asked", help=PERSON_ASKED_HELP)] = False,
    by: Annotated[str | None, typer.Option(help="who lifts it (default: your login name)")] = None,
) -> None:
    """Lift the suppression of one email or domain. The people it alone held can be
    contacted again; the lift is kept with who, when and why (`list --lifted`)."""
    from models.store import SuppressionNotFound, UnsubscribeNotLifted, lift_suppressions
    from stages.importing.suppressions import suppression_key

    if not reason.strip():
        raise AbmError("--reason: say why the suppression is lifted; it is kept in the history")
    kind, key = suppression_key(value)
    engine = open_engine()
    try:
        lifted = lift_suppressions(
            engine,
            kind,
            key,
            channel.value if channel else None,
            (by or "").strip() or operator(),
            reason.strip(),
            person_asked=person_asked,
        )
    except SuppressionNotFound as exc:
        raise AbmError(f"{exc}; `abm suppressions list --search {key}` shows them") from None
    except UnsubscribeNotLifted:
        raise AbmError(
            f"{key} unsubscribed (or opted out), and nothing was lifted: an unsubscribe is the "
            "person's own withdrawal of consent, which privacy and anti-spam law (GDPR, "
            "PECR, CAN-SPAM) lets only that person take back. If they asked to hear from you "
            f"again, run: abm suppressions remove {key} --person-asked --reason "
            '"when and how they asked"'
        ) from None
    from models.audit import record_action

    named = f"; --by {by.strip()}" if by and by.strip() else ""
    record_action(
        engine,
        operator(),
        "suppression.lift",
        f"{kind} {key} on {channel.value if channel else 'every channel'}",
        reason.strip() + (" (the person asked)" if person_asked else "") + named,
        via="cli",
    )
    for row in lifted:
        err.print(
            f"lifted: {row['kind']} {row['value']} on channel {row['channel']} (reason "
            f"{row['reason'] or '-'}, from {row['source']}, since {when(row['created_at'])}); "
            f"{plural(row['contacts_reactivated'], 'contact')} active again",
            markup=False,
            highlight=False,
        )


@campaign_app.command("list")
def campaign_list(as_json: JsonOption = False) -> None:
    """Campaigns that have run: key, name, status, steps and progress (sent of planned)."""
    from stages.delivery.campaigns import campaign_rows

    rows = campaign_rows(open_engine())
    if as_json:
        print_json(rows)
        return
    if not rows:
        err.print("no campaign has run yet: `abm campaign run FILE` starts one", markup=False)
        return
    table = Table("key", "name", "status", "steps", "sent/planned")
    for row in rows:
        steps = row["file_problem"] or " → ".join(
            f"{step['id']} ({step['channel'].replace('_', ' ')})" for step in row["steps"]
        )
        progress = row["progress"]
        table.add_row(
            *cells(
                row["key"],
                row["name"],
                row["status"],
                steps,
                f"{progress['sent']}/{progress['planned']}",
            )
        )
    out.print(table)


@campaign_app.command("schedule")
def campaign_schedule(
    file: Path,
    cron: Annotated[str, typer.Option(help='when, as cron: "0 9 * * 1-5" is 09:00 on weekdays')],
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA time zone of the cron (default: the campaign's sending window's)"),
    ] = None,
) -> None:
    """Run a campaign file on a schedule of the run-campaign deployment (Prefect server)."""
    from abm.schedules import schedule_campaign

    row = schedule_campaign(file, cron, timezone)
    done = "rescheduled" if row["replaced"] else "scheduled"
    err.print(
        f"{row['campaign']}: {done} on {row['deployment']} at {row['cron']!r} "
        f"({row['timezone']}) with campaign_file={row['campaign_file']}; a worker of pool "
        "`abm` runs it from its checkout",
        markup=False,
        highlight=False,
    )
    if row["paused"]:
        err.print(
            f"[yellow]the deployment {row['deployment']} is paused: nothing runs until it is "
            "resumed (`prefect deployment resume ...` or the UI)[/]"
        )


@campaign_app.command("schedules")
def campaign_schedules_list(as_json: JsonOption = False) -> None:
    """Every schedule that runs campaign files, whether set here or in prefect.yaml."""
    from abm.schedules import campaign_schedules

    rows = campaign_schedules()
    if as_json:
        print_json(rows)
        return
    table = Table("campaign", "file", "when", "time zone", "active", "deployment", "set by")
    for row in rows:
        table.add_row(
            *cells(
                row["campaign"] or "",
                row["campaign_file"] or "",
                row["schedule"],
                row["timezone"],
                "yes" if row["active"] else "off",
                row["deployment"],
                row["set_by"],
            )
        )
    out.print(table)
    err.print(plural(len(rows), "schedule"), markup=False)


@campaign_app.command("unschedule")
def campaign_unschedule(file: Path) -> None:
    """Stop running a campaign file on the schedule `abm campaign schedule` gave it."""
    from abm.schedules import unschedule_campaign

    for row in unschedule_campaign(file):
        err.print(
            f"{row['campaign']}: schedule {row['schedule']!r} ({row['timezone']}) removed from "
            f"{row['deployment']}",
            markup=False,
            highlight=False,
        )

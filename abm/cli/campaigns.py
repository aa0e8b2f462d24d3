"""Campaign files: validate, preview, run, pause, resume, status, people, resolve."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from abm.cli.common import JsonOption, cells, err, open_engine, operator, out, print_json
from core.settings import get_settings
from core.vocabulary import PersonState

# Rows `campaign people` prints unless told otherwise: a screenful, with a count of the rest.
PEOPLE_SHOWN = 100

campaign_app = typer.Typer(help="Campaign files: validate, run, status.")


@campaign_app.command("validate")
def campaign_validate(file: Path) -> None:
    """Check a campaign file and render every template it uses with sample data."""
    from connectors.checks import require_send_ready
    from stages.delivery.preview import validate_campaign

    require_send_ready(get_settings())
    for line in validate_campaign(file, get_settings()):
        err.print(line, highlight=False, markup=False)


@campaign_app.command("preview")
def campaign_preview(
    file: Path,
    account: Annotated[str, typer.Option(help="the account's domain")],
    contact: Annotated[str | None, typer.Option(help="a contact's email")] = None,
    step: Annotated[str | None, typer.Option(help="step id (default: the first)")] = None,
    html: Annotated[Path | None, typer.Option(help="also write the HTML part to this file")] = None,
) -> None:
    """Render exactly what would be sent to one person, headers included."""
    from email.message import Message

    from stages.delivery.preview import preview

    chosen, person, rendered = preview(open_engine(), get_settings(), file, account, contact, step)
    variant = f", variant {person['variant']}" if person.get("variant") else ""
    err.print(
        f"step {chosen.id} ({chosen.channel}) for {person['email']} at {person['domain']}{variant}",
        highlight=False,
        markup=False,
    )
    if not isinstance(rendered, Message):
        print(rendered)
        return
    for name, value in rendered.items():
        print(f"{name}: {value}")
    for part in rendered.get_payload():
        body = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        print(f"\n----- {part.get_content_type()} -----\n{body}")
        if html and part.get_content_type() == "text/html":
            html.write_text(body, encoding="utf-8")
            err.print(
                f"HTML written to {html}: open it in a browser", highlight=False, markup=False
            )


@campaign_app.command("run")
def campaign_run(
    file: Path,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="at most N messages for each step in all, counting those planned by "
            "earlier runs (a rehearsal of a few people; not a per-run batch size)",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and render, send nothing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the campaign flow now (an ad-hoc run, on the configured Prefect API).

    Exit codes: 0 all good; 1 messages of this run failed, died or became uncertain, or the
    flow failed; 2 a configuration or input error (before anything is written or started);
    3 the campaign is paused by a rule (the reputation circuit breaker, a provider's refusal)."""
    from abm.prefect_runtime import run_flow_quietly
    from flows.preflight import preflight
    from stages.delivery.ledger import ledger_summary, paused_by_rule

    preflight(get_settings(), file)  # every input, before a row is written or Prefect starts
    campaign_id = _campaign_id(file)
    engine = open_engine()
    before = ledger_summary(engine, campaign_id)
    with _LedgerProgress(engine, campaign_id, enabled=not dry_run):
        summary = run_flow_quietly(str(file), limit=limit, simulate=False, dry_run=dry_run)
    by_rule = paused_by_rule(engine, campaign_id)
    if summary.get("paused") and not by_rule:  # a person paused it: as they asked
        err.print("[yellow]the campaign is paused: nothing was sent[/]")
        err.print(f"why: {summary.get('paused_because')}", markup=False)
    if dry_run and not as_json:
        err.print("dry run: nothing was sent; 'sent' counts what would go out now")
    _summary(summary, as_json)
    if summary.get("target_accounts") == 0 and not as_json:
        err.print(_empty_audience_text(file), markup=False)
    if by_rule:  # this run or an earlier one: nothing goes out until a person resumes it
        err.print(f"paused: {by_rule}", style="red", markup=False)
        raise typer.Exit(PAUSED_BY_RULE_EXIT)
    if not dry_run:
        failed = summary["failed"] - before["failed"]
        doubtful = summary["uncertain"] - before["uncertain"]
        if failed > 0 or doubtful > 0:  # exit 1: a scheduler or script must be able to tell
            settle = f"; abm campaign resolve {file} settles the uncertain" if doubtful else ""
            err.print(
                f"{failed} messages failed and {doubtful} became uncertain in this run (a "
                "crash's leftovers count when the run found them): abm campaign people "
                f"{file} --state failed (or dead, uncertain){settle}",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)
    elif summary.get("failed"):
        raise typer.Exit(1)


# `campaign run`'s exit code when the campaign is paused by a rule rather than by a person
PAUSED_BY_RULE_EXIT = 3


class _LedgerProgress:
    """A progress bar on stderr fed by the ledger itself while the flow runs: messages
    handled (sent, skipped, failed) out of those due now."""

    def __init__(self, engine: Any, campaign_id: int, enabled: bool = True) -> None:
        import threading

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.engine, self.campaign_id, self.enabled = engine, campaign_id, enabled
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
        )

    def _watch(self) -> None:
        from stages.delivery.ledger import ledger_summary

        task = self.progress.add_task("preparing (target, map, plan)", total=None)
        start = ledger_summary(self.engine, self.campaign_id)
        done_before = start["sent"] + start["skipped"] + start["failed"]
        while not self.stop.wait(0.5):
            now = ledger_summary(self.engine, self.campaign_id)
            handled = now["sent"] + now["skipped"] + now["failed"] - done_before
            waiting = now["pending"] - now["deferred"]
            if handled or waiting:
                self.progress.update(
                    task, description="sending", completed=handled, total=handled + waiting
                )

    def __enter__(self) -> _LedgerProgress:
        if self.enabled:
            self.progress.start()
            self.thread.start()
        else:
            self.status = err.status("rehearsing the campaign flow on Prefect")
            self.status.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join(timeout=5)
            self.progress.stop()
        else:
            self.status.stop()


def _campaign_id(file: Path) -> int:
    from core.campaign_file import load_campaign
    from stages.delivery.ledger import register_campaign

    key, campaign = load_campaign(file)
    return register_campaign(open_engine(), key, campaign, file)


def _audit(file: Path, action: str, detail: str | None = None) -> None:
    """The action in the audit log, by the login name, via the command line."""
    from core.campaign_file import load_campaign
    from models.audit import record_action

    key, _ = load_campaign(file)
    record_action(open_engine(), operator(), action, key, detail, via="cli")


@campaign_app.command("pause")
def campaign_pause(file: Path) -> None:
    """Stop sending at once (also mid-run, before the next batch); nobody gets a step twice."""
    from stages.delivery.ledger import set_campaign_status

    set_campaign_status(open_engine(), _campaign_id(file), "paused")
    _audit(file, "campaign.pause")
    err.print(f"{file}: paused", markup=False)


@campaign_app.command("resume")
def campaign_resume(
    file: Path,
    account: Annotated[
        str | None,
        typer.Option(help="lift the reply-pause of this account only (account_rules: pause)"),
    ] = None,
) -> None:
    """Carry on where the campaign stopped (or, with --account, after a reply paused it)."""
    from stages.delivery.ledger import set_campaign_status
    from stages.delivery.send_rules import release_account

    if account:
        due = release_account(open_engine(), _campaign_id(file), account.strip().lower())
        _audit(file, "campaign.release-account", f"account {account.strip().lower()}")
        err.print(f"{file}: {account} released; {due} held messages are due again", markup=False)
        return
    set_campaign_status(open_engine(), _campaign_id(file), "active")
    _audit(file, "campaign.resume")
    err.print(f"{file}: active again; the next run or schedule sends what is due", markup=False)


@campaign_app.command("status")
def campaign_status(file: Path, as_json: JsonOption = False) -> None:
    """The delivery ledger of a campaign: counts by state and skip reason."""
    from core.campaign_file import load_campaign
    from stages.delivery.ledger import campaign_id_for, ledger_summary

    key, _ = load_campaign(file)
    engine = open_engine()
    _summary(ledger_summary(engine, campaign_id_for(engine, key)), as_json, file)


@campaign_app.command("people")
def campaign_people(
    file: Path,
    account: Annotated[str | None, typer.Option(help="only this account's domain")] = None,
    state: Annotated[
        PersonState | None, typer.Option(case_sensitive=False, help="only rows in this state")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help=f"at most N rows (default {PEOPLE_SHOWN}; --json: all)"),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, help="skip the first N rows (next page)")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Each person in the campaign: step, state, next due time and the reason in plain words."""
    from core.campaign_file import load_campaign
    from core.domains import domain_or_none
    from stages.delivery.ledger import campaign_id_for
    from stages.delivery.people import campaign_people, count_people

    key, campaign = load_campaign(file)
    engine = open_engine()
    campaign_id = campaign_id_for(engine, key)
    domain = (domain_or_none(account) or account.strip().lower()) if account else None
    steps = [step.id for step in campaign.steps]
    shown = limit if limit is not None or as_json else PEOPLE_SHOWN
    rows = campaign_people(engine, campaign_id, steps, state, domain, shown, offset)
    if as_json:
        _stream_json(rows)
        return
    table = Table("account", "email", "name", "step", "state", "next due", "reason")
    listed = 0
    for row in rows:
        listed += 1
        step = f"{row['step']} ({row['variant']})" if row["variant"] else row["step"]
        due = f"{row['due_at']:%Y-%m-%d %H:%M} UTC" if row["due_at"] else ""
        table.add_row(
            *cells(
                row["account_domain"],
                row["email"],
                row["name"] or "",
                step,
                row["state"],
                due,
                row["reason"] or "",
            )
        )
    total = count_people(engine, campaign_id, state, domain)
    if listed:
        out.print(table)
    rest = total - offset - listed
    if rest > 0:
        err.print(
            f"rows {offset + 1}-{offset + listed} of {total}; {rest} more: "
            f"--offset {offset + listed} for the next page, --state or --account to narrow, "
            "--json for all",
            markup=False,
        )
    else:
        err.print(f"{total} rows", markup=False)


@campaign_app.command("resolve")
def campaign_resolve(
    file: Path,
    relay_log: Annotated[
        list[Path] | None,
        typer.Option(
            help="a mail relay's log (Postfix, Exim, Sendmail) or a list of Message-IDs: "
            "each uncertain message it names counts as sent"
        ),
    ] = None,
    resend: Annotated[
        bool, typer.Option(help="send the rest again, under the same Message-ID")
    ] = False,
    mark_sent: Annotated[bool, typer.Option(help="count the rest as sent")] = False,
    account: Annotated[str | None, typer.Option(help="only this account's domain")] = None,
    email: Annotated[str | None, typer.Option(help="only this person's message")] = None,
    older_than: Annotated[
        str | None, typer.Option(help="only messages uncertain for this long, e.g. 6h or 2d")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Settle messages a crash left uncertain (`campaign people --state uncertain` lists
    them): the relay's log first, then --resend or --mark-sent for what it did not name."""
    from core.campaign_file import load_campaign, parse_wait
    from core.domains import domain_or_none
    from stages.delivery.ledger import campaign_id_for
    from stages.delivery.uncertain import (
        Selection,
        Settled,
        count_uncertain,
        mark_sent_by_message_id,
        message_ids_in,
        settle,
    )

    if resend and mark_sent:
        raise typer.BadParameter("choose one of --resend and --mark-sent")
    try:
        wait = parse_wait(older_than) if older_than else None
    except ValueError as exc:
        raise typer.BadParameter(f"--older-than: {exc}") from None
    key, _ = load_campaign(file)
    engine = open_engine()
    domain = (domain_or_none(account) or account.strip().lower()) if account else None
    selection = Selection(campaign_id_for(engine, key), email, domain, wait)
    if not (relay_log or resend or mark_sent):
        waiting = count_uncertain(engine, selection)
        raise typer.BadParameter(
            f"{waiting} messages are uncertain here; say how to settle them: --relay-log "
            "FILE (the ones your relay's log names count as sent), then --resend or --mark-sent"
        )
    settled = Settled()
    for log in relay_log or []:
        with log.open(encoding="utf-8", errors="replace") as lines:
            named = message_ids_in(lines)
        settled.marked_sent += mark_sent_by_message_id(
            engine, named, f"named in the relay log {log.name}", selection.campaign_id
        )
    because = "operator: abm campaign resolve"
    if resend:
        settled.resent = settle(engine, selection, "resend", because)
    elif mark_sent:
        settled.marked_sent += settle(engine, selection, "mark_sent", because)
    settled.left = count_uncertain(engine, selection)
    if as_json:
        print_json(settled.__dict__)
        return
    err.print(
        f"{file}: {settled.marked_sent} counted as sent, {settled.resent} to be sent again "
        f"under the same Message-ID at the next run, {settled.left} still uncertain",
        markup=False,
    )


def _stream_json(rows: Iterable[dict[str, Any]]) -> None:
    """A JSON list written as the rows come, one object a line: a campaign of any size
    lists without being held in memory."""
    sys.stdout.write("[")
    separator = "\n"
    for row in rows:
        sys.stdout.write(separator + json.dumps(row, default=str, ensure_ascii=False))
        separator = ",\n"
    sys.stdout.write("\n]\n" if separator != "\n" else "]\n")


def _empty_audience_text(file: Path) -> str:
    """Why a run reached nobody, in the campaign's own terms (found trying it on my own
    accounts: all were customers or untiered, and the run showed only zeros)."""
    from core.campaign_file import load_campaign

    audience = load_campaign(file)[1].audience
    filters = " and its icp/intent filters" if audience.icp or audience.intent else ""
    return (
        f"no account is in the audience of {file}: tiers {', '.join(map(str, audience.tiers))} "
        f"at stages {', '.join(audience.stages)}{filters}; `abm accounts list` shows each "
        "account's tier and stage (`abm score` tiers them by your ICP rules)"
    )


def _summary(summary: dict[str, Any], as_json: bool, file: Path | None = None) -> None:
    from stages.delivery.send import default_sender_text
    from stages.report.text import skip_reason_text

    if as_json:
        print_json(summary)
        return
    columns = ("planned", "sent", "skipped", "deferred", "failed", "uncertain", "pending")
    table = Table(*columns)
    table.add_row(*(str(summary.get(k, 0)) for k in columns))
    out.print(table)
    for reason, count in summary["skipped_by_reason"].items():
        out.print(f"skipped ({reason}): {count}, {skip_reason_text(reason)}", markup=False)
    if fallback := default_sender_text(summary.get("sent_from_default_sender") or {}):
        out.print(fallback, markup=False)
    if summary.get("left_audience_pending"):
        out.print(
            f"{summary['left_audience_pending']} planned messages are for people no longer in "
            "the audience (the campaign file or the accounts changed): they will be skipped "
            "as left_audience when due",
            markup=False,
        )
    if summary.get("paused_because") and file is not None:
        out.print(f"paused: {summary['paused_because']}", markup=False)
    if summary.get("uncertain") and file is not None:
        err.print(
            f"{summary['uncertain']} messages are uncertain (a crash hit while they were being "
            f"handed over): abm campaign people {file} --state uncertain lists them, "
            f"abm campaign resolve {file} settles them",
            markup=False,
        )
    held = [state for state in ("deferred", "skipped", "failed") if summary.get(state)]
    if file is not None and held:
        err.print(
            f"who and why: abm campaign people {file} --state {held[0]}"
            + (f" (or {', '.join(held[1:])})" if held[1:] else ""),
            markup=False,
        )

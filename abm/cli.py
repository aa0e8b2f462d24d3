"""The `abm` command: a thin layer over the library. Expected problems print a clear
message and exit 2 (usage, configuration) or 1 (the work ran, something was rejected)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from core.errors import AbmError
from core.settings import get_settings
from models.db import DatabaseError, get_engine, migrate, require_current_schema

app = typer.Typer(
    help="Account-based-marketing campaign orchestrator on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Import accounts, contacts or suppressions from CSV.")
accounts_app = typer.Typer(help="Target accounts: fit, tier, stage, committee.")
contacts_app = typer.Typer(help="Contacts and their committee roles.")
stakeholders_app = typer.Typer(help="Buying-committee mapping.")
campaign_app = typer.Typer(help="Campaign files: validate, run, status.")
engagement_app = typer.Typer(help="Engagement from providers.")
webhooks_app = typer.Typer(help="The HTTP receiver for provider events and unsubscribes.")
crm_app = typer.Typer(help="The CRM: ABM results onto its company records.")
app.add_typer(import_app, name="import")
app.add_typer(accounts_app, name="accounts")
app.add_typer(contacts_app, name="contacts")
app.add_typer(stakeholders_app, name="stakeholders")
app.add_typer(campaign_app, name="campaign")
app.add_typer(engagement_app, name="engagement")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(crm_app, name="crm")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]


def _cells(*values: Any) -> list[Text]:
    """Table cells shown as they are: data such as `[/b]` or `[red]` in a company name or a
    job title must not be read as rich markup (which would restyle it, hide it or crash)."""
    return [Text(str(value)) for value in values]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False, indent=2) + "\n")


def _engine():  # type: ignore[no-untyped-def]
    engine = get_engine(get_settings().database_url)
    require_current_schema(engine)
    return engine


@app.command()
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

    report = import_file(kind, path, _engine(), get_settings())
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


@app.command()
def score() -> None:
    """(Re)score ICP fit and tiers for all accounts."""
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    per_tier = rescore_accounts_in_db(_engine(), load_icp_rules(get_settings().icp_rules))
    total = sum(per_tier.values())
    parts = [f"tier {t}: {per_tier.get(t, 0)}" for t in (1, 2, 3)]
    err.print(f"scored {total} accounts; {', '.join(parts)}; not targeted: {per_tier.get(None, 0)}")


@accounts_app.command("list")
def accounts_list(
    tier: Annotated[int | None, typer.Option(min=1, max=3)] = None,
    stage: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOption = False,
) -> None:
    """Accounts with score, tier, stage and engagement."""
    from models.queries import list_accounts

    rows = list_accounts(_engine(), tier, stage)
    if as_json:
        _print_json(rows)
        return
    table = Table("domain", "name", "score", "tier", "stage", "engagement", "contacts")
    for row in rows:
        table.add_row(
            *_cells(
                row["domain"],
                row["name"] or "",
                "" if row["score"] is None else str(row["score"]),
                "-" if row["tier"] is None else str(row["tier"]),
                row["stage"],
                f"{row['engagement_score']:g}",
                str(row["contacts"]),
            )
        )
    out.print(table)
    err.print(f"{len(rows)} accounts")


@accounts_app.command("show")
def accounts_show(domain: str, as_json: JsonOption = False) -> None:
    """One account: score with reasons, committee with roles and gaps, engagement, stages."""
    from models.queries import get_account
    from stages.committee.coverage import coverage
    from stages.engagement.journey import stage_history
    from stages.targeting.scoring import load_icp_rules

    engine = _engine()
    account = get_account(engine, domain.strip().lower())
    if account is None:
        raise AbmError(f"no account with domain {domain!r}")
    account["stage_history"] = stage_history(engine, account["id"])
    required = load_icp_rules(get_settings().icp_rules).committee.required_roles
    reachable = [c["role"] for c in account["contacts"] if c["status"] == "active"]
    cover = coverage(reachable, required)
    account["committee"] = {
        "required": list(required),
        "covered": list(cover.covered),
        "gaps": list(cover.gaps),
    }
    if as_json:
        _print_json(account)
        return
    tier = "not targeted" if account["tier"] is None else f"tier {account['tier']}"
    out.print(
        f"[bold]{escape(account['name'] or domain)}[/] ({escape(account['domain'])})",
        highlight=False,
    )
    out.print(
        f"{account['industry'] or 'industry unknown'} · {account['employees'] or '?'} employees"
        f" · {account['country'] or '?'} · ICP {account['icp_score']} · {tier}"
        f" · stage {account['stage']} · engagement {account['engagement_score']:g}",
        highlight=False,
        markup=False,
    )
    out.print("\n[bold]Why this score[/]")
    for reason in account["icp_reasons"]:
        out.print(f"  {reason}", highlight=False, markup=False)
    out.print("\n[bold]Buying committee[/]")
    table = Table("role", "name", "title", "seniority", "function", "status")
    for c in account["contacts"]:
        name = " ".join(p for p in (c["first_name"], c["last_name"]) if p)
        table.add_row(
            *_cells(
                c["role"] or "",
                name,
                c["title"] or "",
                c["seniority"] or "",
                c["function"] or "",
                c["status"],
            )
        )
    out.print(table)
    out.print(f"covered: {', '.join(cover.covered) or 'none'}")
    out.print(f"[red]gaps: {', '.join(cover.gaps)}[/]" if cover.gaps else "gaps: none")
    if account["stage_history"]:
        out.print("\n[bold]Stage history[/]")
        for change in account["stage_history"]:
            out.print(
                f"  {change['changed_at']:%Y-%m-%d %H:%M} {change['from_stage']} -> "
                f"{change['to_stage']} ({change['source']}): {change['reason']}",
                highlight=False,
                markup=False,
            )
    if account["engagement"]:
        out.print("\n[bold]Recent engagement[/]")
        for event in account["engagement"][:15]:
            out.print(
                f"  {event['occurred_at']:%Y-%m-%d %H:%M} {event['type']:<12} "
                f"{event['email'] or '(account)'}",
                highlight=False,
                markup=False,
            )


@accounts_app.command("set-stage")
def accounts_set_stage(
    domain: str,
    stage: str,
    reason: Annotated[str, typer.Option(help="why: kept in the stage history")],
) -> None:
    """Set an account's journey stage by hand (kept in the stage history as set by a person).

    It stands: engagement moves the account on only on events after this change."""
    from stages.engagement.journey import set_stage

    moved = set_stage(_engine(), domain, stage, reason)
    if moved is None:
        err.print(
            f"{domain} is already at stage {stage.strip().lower()}: nothing recorded",
            markup=False,
        )
        return
    err.print(f"{domain}: {moved[0]} -> {moved[1]} ({reason.strip()})", markup=False)


@contacts_app.command("list")
def contacts_list(
    account: Annotated[str | None, typer.Option(help="only this account's domain")] = None,
    as_json: JsonOption = False,
) -> None:
    """Contacts with seniority, function, committee role and status."""
    from models.queries import list_contacts

    rows = list_contacts(_engine(), account.strip().lower() if account else None)
    if as_json:
        _print_json(rows)
        return
    table = Table("email", "account", "title", "seniority", "function", "role", "status")
    for row in rows:
        table.add_row(
            *_cells(
                row["email"],
                row["account_domain"],
                row["title"] or "",
                row["seniority"] or "",
                row["function"] or "",
                row["role"] or "",
                row["status"],
            )
        )
    out.print(table)
    err.print(f"{len(rows)} contacts")


@stakeholders_app.command("classify")
def stakeholders_classify(as_json: JsonOption = False) -> None:
    """Read job titles from stdin, one a line; print seniority, function and role."""
    from stages.committee.titles import classify_title, load_title_table

    table = load_title_table(get_settings().title_rules)
    titles = [line.rstrip("\r\n") for line in sys.stdin]
    rows = []
    for title in titles:
        result = classify_title(title, table)
        rows.append(
            {
                "title": title,
                "seniority": result.seniority,
                "function": result.function,
                "role": result.role,
            }
        )
    if as_json:
        _print_json(rows)
        return
    view = Table("title", "seniority", "function", "role")
    for row in rows:
        view.add_row(*_cells(row["title"], row["seniority"], row["function"], row["role"]))
    out.print(view)


@campaign_app.command("validate")
def campaign_validate(file: Path) -> None:
    """Check a campaign file and render every template it uses with sample data."""
    from stages.delivery.preview import validate_campaign

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

    chosen, person, rendered = preview(_engine(), get_settings(), file, account, contact, step)
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
    limit: Annotated[int | None, typer.Option(min=1, help="plan at most N messages")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and render, send nothing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the campaign flow now (an ad-hoc run, on the configured Prefect API)."""
    from abm.prefect_runtime import run_flow_quietly

    campaign_id = _campaign_id(file)
    with _LedgerProgress(_engine(), campaign_id, enabled=not dry_run):
        summary = run_flow_quietly(str(file), limit=limit, simulate=False, dry_run=dry_run)
    if summary.get("paused"):
        err.print("[yellow]the campaign is paused: nothing was sent[/]")
    if dry_run and not as_json:
        err.print("dry run: nothing was sent; 'sent' counts what would go out now")
    _summary(summary, as_json)


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
    return register_campaign(_engine(), key, campaign, file)


@campaign_app.command("pause")
def campaign_pause(file: Path) -> None:
    """Stop sending at once (also mid-run, before the next batch); nobody gets a step twice."""
    from stages.delivery.ledger import set_campaign_status

    set_campaign_status(_engine(), _campaign_id(file), "paused")
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
        due = release_account(_engine(), _campaign_id(file), account.strip().lower())
        err.print(f"{file}: {account} released; {due} held messages are due again", markup=False)
        return
    set_campaign_status(_engine(), _campaign_id(file), "active")
    err.print(f"{file}: active again; the next run or schedule sends what is due", markup=False)


@campaign_app.command("status")
def campaign_status(file: Path, as_json: JsonOption = False) -> None:
    """The delivery ledger of a campaign: counts by state and skip reason."""
    from core.campaign_file import load_campaign
    from stages.delivery.ledger import campaign_id_for, ledger_summary

    key, _ = load_campaign(file)
    engine = _engine()
    _summary(ledger_summary(engine, campaign_id_for(engine, key)), as_json)


def _summary(summary: dict[str, Any], as_json: bool) -> None:
    from stages.report.text import skip_reason_text

    if as_json:
        _print_json(summary)
        return
    columns = ("planned", "sent", "skipped", "deferred", "failed", "uncertain", "pending")
    table = Table(*columns)
    table.add_row(*(str(summary.get(k, 0)) for k in columns))
    out.print(table)
    for reason, count in summary["skipped_by_reason"].items():
        out.print(f"skipped ({reason}): {count}, {skip_reason_text(reason)}", markup=False)
    if summary.get("left_audience_pending"):
        out.print(
            f"{summary['left_audience_pending']} planned messages are for people no longer in "
            "the audience (the campaign file or the accounts changed): they will be skipped "
            "as left_audience when due",
            markup=False,
        )


@engagement_app.command("sync")
def engagement_sync(as_json: JsonOption = False) -> None:
    """Pull LinkedIn ad analytics by company and lead-form responses (sandbox by default:
    only from the files in ABM_LINKEDIN_SANDBOX_DIR, never invented)."""
    from dataclasses import asdict

    from models.queries import list_accounts
    from stages.engagement.linkedin_sync import sync_linkedin
    from stages.engagement.rollup import engagement_rules_from, rollup_accounts

    engine = _engine()
    rules = engagement_rules_from(get_settings())
    report = sync_linkedin(engine, get_settings())
    changes = 0
    if report.stored:  # nothing pulled: the accounts stay exactly as they were
        ids = [row["id"] for row in list_accounts(engine)]
        changes = rollup_accounts(engine, ids, rules)
    result = {**asdict(report), "stage_changes": changes}
    if as_json:
        _print_json(result)
    else:
        for key, value in result.items():
            if key not in ("notes", "problems", "sandbox_dir"):
                err.print(f"{key.replace('_', ' ')}: {value}", markup=False)
        for note in report.notes:
            err.print(note, markup=False)
        for problem in report.problems:
            err.print(problem, style="yellow", markup=False)
    if report.problems:
        raise typer.Exit(1)


@engagement_app.command("ingest")
def engagement_ingest(
    file: Path,
    provider: Annotated[str, typer.Option(help="only sendgrid for now")] = "sendgrid",
    as_json: JsonOption = False,
) -> None:
    """Bulk-load provider events (e.g. an export), one JSON event a line; stored once each."""
    from connectors.email.sendgrid_events import check_events, parse_sendgrid
    from connectors.email.webhook_events import BadEvents
    from stages.engagement.ingest import ingest_sendgrid_export
    from stages.engagement.rollup import engagement_rules_from

    if provider != "sendgrid":
        raise AbmError(f"--provider {provider}: only sendgrid is supported")
    engine = _engine()
    rules = engagement_rules_from(get_settings())
    bad = 0
    try:
        lines = file.open("rb")  # bytes: a line that is not UTF-8 is one malformed line
    except OSError as exc:
        raise AbmError(f"{file}: cannot read: {exc.strerror}") from None

    def batches() -> Iterator[list[dict]]:
        nonlocal bad
        batch: list[dict] = []
        with lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    events = parse_sendgrid(b"[" + line + b"]")
                    check_events(events)
                except RecursionError:
                    bad += 1
                    err.print(f"{file}:{number}: nested too deeply", style="yellow", markup=False)
                    continue
                except BadEvents as exc:
                    bad += 1
                    err.print(f"{file}:{number}: {exc}", style="yellow", markup=False)
                    continue
                batch += events
                if len(batch) >= 5000:
                    yield batch
                    batch = []
        yield batch

    total = ingest_sendgrid_export(engine, batches(), rules)
    result = {**total.__dict__, "malformed": bad}
    if as_json:
        _print_json(result)
    else:
        print(" ".join(f"{key}={value}" for key, value in result.items()))
    if bad:
        raise typer.Exit(1)


@crm_app.command("push")
def crm_push(as_json: JsonOption = False) -> None:
    """Push accounts whose tier, scores or stage changed since their last push (failed: again)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from connectors.crm import get_crm
    from core.errors import ConfigError
    from stages.crm import push_changed

    engine = _engine()
    crm = get_crm(get_settings())
    if crm is None:
        raise ConfigError(
            "no CRM is configured: set ABM_HUBSPOT_ACCESS_TOKEN to the access token of a "
            "HubSpot private app to push accounts to HubSpot"
        )
    bar = Progress(
        TextColumn(f"pushing to {crm.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("push", total=None)
    with crm, bar:
        report = push_changed(
            engine, crm, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    if as_json:
        _print_json({**report.counts(), "failures": report.failures})
    else:
        failures = list(report.failures.items())
        for domain, reason in failures[:50]:
            err.print(f"{domain}: {reason}", style="yellow", markup=False, highlight=False)
        if len(failures) > 50:
            err.print(f"... and {len(failures) - 50} more (--json lists them all)")
        print(" ".join(f"{key}={value}" for key, value in report.counts().items()))
    if report.failures:
        raise typer.Exit(1)


@webhooks_app.command("serve")
def webhooks_serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8025,
) -> None:
    """Serve POST /webhooks/sendgrid, GET and POST /unsubscribe/{token}, GET /healthz."""
    import uvicorn

    from abm.webhooks import create_app

    _engine()
    err.print(f"listening on http://{host}:{port} (Ctrl+C to stop)", highlight=False)
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


@app.command()
def report(
    html: Annotated[
        Path | None, typer.Option(help="write a self-contained HTML report with charts here")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Campaign and account report: funnel, engagement, committee coverage, A/B tests."""
    from stages.report import render_html, report_data, verdict_text

    data = report_data(_engine())
    if html:
        try:
            html.write_text(render_html(data), encoding="utf-8")
        except OSError as exc:
            raise AbmError(f"{html}: cannot write: {exc.strerror}") from None
        err.print(
            f"report written to {html.resolve()}: open it in a browser",
            highlight=False,
            markup=False,
        )
    if as_json:
        _print_json(data)
        return
    h = data["headline"]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    out.print(
        f"[bold]{h['targeted']}[/] target accounts: {h['reached']} reached, {h['engaged']} "
        f"engaged or further, {h['mqa']} MQA or further; {h['fully_covered']} with every "
        f"committee role. Emails sent {h['emails_sent']}, click rate {rate(h['click_rate'])}, "
        f"reply rate {rate(h['reply_rate'])}.",
        highlight=False,
    )
    counts = ("planned", "sent", "skipped", "deferred", "failed")
    for campaign in data["campaigns"]:
        if not campaign["steps"]:
            continue
        table = Table("step", *counts, "click rate", "reply rate", title=Text(campaign["key"]))
        for step in campaign["steps"]:
            table.add_row(
                *_cells(
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


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(min=20, max=1_000_000, help="demo contacts")] = 2000,
) -> None:
    """Make a demo dataset, run the demo campaign through Prefect, print a summary."""
    from abm.demo import run_demo

    run_demo(contacts, out, err)


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

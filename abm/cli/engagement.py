"""Engagement in and results out: provider events, LinkedIn sync, the CRM, the web server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from abm.cli.common import JsonOption, err, open_engine, print_json
from core.errors import AbmError
from core.settings import get_settings

engagement_app = typer.Typer(help="Engagement from providers.")
webhooks_app = typer.Typer(help="The HTTP receiver for provider events and unsubscribes.")
crm_app = typer.Typer(
    help="The CRM (ABM_CRM): ABM results onto its account records, owners, deals and meetings back."
)


@engagement_app.command("sync")
def engagement_sync(as_json: JsonOption = False) -> None:
    """Pull LinkedIn ad analytics by company and lead-form responses (sandbox by default:
    only from the files in ABM_LINKEDIN_SANDBOX_DIR, never invented)."""
    from dataclasses import asdict

    from models.queries import list_accounts
    from stages.engagement.linkedin_sync import sync_linkedin
    from stages.engagement.rollup import engagement_rules_from, rollup_accounts

    engine = open_engine()
    rules = engagement_rules_from(get_settings())
    report = sync_linkedin(engine, get_settings())
    changes = 0
    if report.stored:  # nothing pulled: the accounts stay exactly as they were
        ids = [row["id"] for row in list_accounts(engine)]
        changes = rollup_accounts(engine, ids, rules)
    result = {**asdict(report), "stage_changes": changes}
    if as_json:
        print_json(result)
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
    engine = open_engine()
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
        print_json(result)
    else:
        print(" ".join(f"{key}={value}" for key, value in result.items()))
    if bad:
        raise typer.Exit(1)


@engagement_app.command("mailbox")
def engagement_mailbox(as_json: JsonOption = False) -> None:
    """Read the monitored mailbox (ABM_IMAP_URL) once: replies, delivery reports (RFC 3464),
    complaints (RFC 5965) and auto-replies (RFC 3834), each message stored once. Exits 1
    when a message could not be read or the connection kept dropping."""
    from stages.engagement.mailbox_poll import poll_mailbox

    engine = open_engine()
    report = poll_mailbox(engine, get_settings())
    result = report.as_dict()
    if as_json:
        print_json(result)
    else:
        for line in report.notes:
            err.print(line, markup=False, highlight=False)
        for problem in report.problems:
            err.print(problem, style="yellow", markup=False, highlight=False)
        skip = ("mailbox", "notes", "problems", "cursor")
        print(" ".join(f"{key}={value}" for key, value in result.items() if key not in skip))
    if report.problems or report.incomplete:
        raise typer.Exit(1)


NO_CRM = (
    "no CRM is configured: set ABM_HUBSPOT_ACCESS_TOKEN to the access token of a HubSpot "
    "private app, or ABM_CRM to hubspot, salesforce or sandbox (files in ABM_CRM_SANDBOX_DIR)"
)


@crm_app.command("pull")
def crm_pull(
    kind: Annotated[
        list[str] | None,
        typer.Option(help="what to pull: accounts, deals or meetings (repeat it; default all)"),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="read everything again from the start, not only what changed since the last "
            "pull: after importing accounts the CRM already had (applying twice changes nothing)",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Pull what changed in the CRM since the last pull: owners, deals (and the stages they
    give accounts), meetings with our people; each page stored with its cursor."""
    from connectors.crm import PULL_KINDS, get_crm
    from connectors.http import ApiError
    from core.errors import ConfigError
    from stages.crm.pull import pull_crm
    from stages.crm.stage_map import stage_table_from
    from stages.engagement.rollup import engagement_rules_from

    kinds = list(dict.fromkeys(kind or PULL_KINDS))
    wrong = [k for k in kinds if k not in PULL_KINDS]
    if wrong:
        raise typer.BadParameter(
            f"{', '.join(wrong)}: use {', '.join(PULL_KINDS)}", param_hint="--kind"
        )
    settings = get_settings()
    engine = open_engine()
    table, rules = stage_table_from(settings), engagement_rules_from(settings)
    crm = get_crm(settings)
    if crm is None:
        raise ConfigError(NO_CRM)

    def progress(what: str, number: int, page) -> None:
        err.print(
            f"{crm.name} {what}: page {number} stored ({len(page.records)} records), "
            f"cursor {page.cursor or '-'}",
            markup=False,
            highlight=False,
        )

    try:
        with crm:
            report = pull_crm(
                engine,
                crm,
                kinds,
                stage_table=table,
                rules=rules,
                progress=progress,
                full=full,
            )
    except ApiError as exc:  # unreachable, or failing after every retry: not a traceback
        err.print(
            f"error: the CRM did not answer after its retries ({exc}); every page stored "
            "above stays stored, and the next pull goes on from there",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1) from None
    if as_json:
        print_json(report.as_dict())
        return
    for title, lines, style in (
        ("moved", report.moves, None),
        ("kept by precedence", report.kept, "yellow"),
        ("meeting withdrawn", report.withdrawn, None),
        ("deals say nothing", report.unmapped, "yellow"),
        ("skipped", report.skipped, "yellow"),
        ("warning", report.warnings, "yellow"),
    ):
        for line in lines[:50]:
            err.print(f"{title}: {line}", style=style, markup=False, highlight=False)
        if len(lines) > 50:
            err.print(f"... and {len(lines) - 50} more {title} (--json lists 50 of each)")
    if report.unknown_domains:
        shown = ", ".join(d for d, _ in report.unknown_domains.most_common(10))
        more = len(report.unknown_domains) - 10
        err.print(
            "not ours (no account with that domain; import them, then `abm crm pull --full` "
            f"applies what the CRM has for them): {shown}"
            + (f" and {more} more" if more > 0 else ""),
            markup=False,
            highlight=False,
        )
    for note in report.notes:
        err.print(note, markup=False, highlight=False)
    print(" ".join(f"{key}={value}" for key, value in report.counts().items()))


@crm_app.command("push")
def crm_push(as_json: JsonOption = False) -> None:
    """Push accounts whose tier, scores or stage changed since their last push (failed: again)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from connectors.crm import get_crm
    from core.errors import ConfigError
    from stages.crm import push_changed

    engine = open_engine()
    crm = get_crm(get_settings())
    if crm is None:
        raise ConfigError(NO_CRM)
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
        print_json({**report.counts(), "failures": report.failures})
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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="ABM_WEBHOOK_WORKERS",
            help="server processes; more than 1 needs PostgreSQL (SQLite takes one writer "
            "at a time, so more processes would only queue on its lock)",
        ),
    ] = 1,
) -> None:
    """Serve POST /webhooks/sendgrid, GET and POST /unsubscribe/{token}, GET /healthz."""
    import uvicorn

    from abm.webhooks import SERVER_LIMITS, check_port, check_workers, create_app

    check_workers(open_engine(), workers)
    check_port(host, port)
    err.print(
        f"listening on http://{host}:{port} with {workers} worker process"
        f"{'es' if workers > 1 else ''} (Ctrl+C to stop)",
        highlight=False,
    )
    if workers == 1:
        uvicorn.run(create_app(), host=host, port=port, log_level="warning", **SERVER_LIMITS)
        return
    # Each worker process builds its own app (and database pool) from the same settings.
    uvicorn.run(
        "abm.webhooks:create_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="warning",
        **SERVER_LIMITS,
    )

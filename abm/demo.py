"""`abm demo`: the main job end to end on embedded defaults, on a demo dataset."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from abm.demo_data import BAD_CONTACT_ROWS, write_demo_csvs
from abm.demo_tracking import TrackedDemo, simulate_tracked_engagement
from abm.prefect_runtime import prefect_log_path, prepare_environment, run_flow_quietly
from core.errors import AbmError
from core.settings import REPO_ROOT, Settings, get_settings, reset_settings
from core.vocabulary import STAGES
from models.db import get_engine, migrate
from models.queries import accounts_by_tier_and_stage, list_accounts
from models.tables import Account, EngagementEvent
from stages.importing import import_file
from stages.report import render_html, report_data

DEMO_CAMPAIGN = REPO_ROOT / "campaigns" / "demo.yaml"


def _refuse_real_data(engine: Engine) -> None:
    """The demo writes invented companies; never into a database holding real ones."""
    with engine.connect() as connection:
        real = connection.execute(
            select(Account.domain).where(Account.domain.not_like("%.example")).limit(1)
        ).scalar()
    if real is not None:
        raise AbmError(
            f"this database holds real accounts (e.g. {real}); the demo only runs on an empty "
            "or demo database: set ABM_DATABASE_URL to another one"
        )


def _use_demo_state(settings: Settings) -> None:
    """The demo's own database and outbox under `<state dir>/demo/`, so its invented
    companies and simulated engagement never share a database with the user's accounts
    (unless ABM_DATABASE_URL or ABM_OUTBOX_DIR say otherwise, when the refusal below and the
    flow's own check still keep real accounts out of it)."""
    demo_dir = settings.state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    if "database_url" not in settings.model_fields_set:
        os.environ["ABM_DATABASE_URL"] = f"sqlite:///{(demo_dir / 'abm.db').as_posix()}"
    if "outbox_dir" not in settings.model_fields_set:
        os.environ["ABM_OUTBOX_DIR"] = str(demo_dir / "outbox")
    reset_settings()


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_demo(contacts: int, out: Console, err: Console) -> None:
    """Generate, import, score, map, render, deliver to the outbox, write engagement back."""
    started = time.perf_counter()
    os.environ["ABM_EMAIL_BACKEND"] = "outbox"  # the demo never sends real email
    reset_settings()
    _use_demo_state(get_settings())
    prepare_environment()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    migrate(engine)
    _refuse_real_data(engine)
    sent_before = _sent(engine)

    demo_dir = settings.state_dir / "demo"
    accounts_csv, contacts_csv = write_demo_csvs(demo_dir, contacts=contacts)
    suppressions_csv = _write_suppressions(demo_dir, contacts_csv)
    err.print(f"[bold]1.[/] demo data written to {_relative(demo_dir)}/", highlight=False)
    for kind, path in (
        ("accounts", accounts_csv),
        ("contacts", contacts_csv),
        ("suppressions", suppressions_csv),
    ):
        report = import_file(kind, path, engine, settings)
        line = (
            f"   import {kind}: imported={report.imported} updated={report.updated} "
            f"rejected={len(report.rejects)}"
        )
        if report.rejects_path:
            line += f" (reasons in {_relative(report.rejects_path)})"
        err.print(line, highlight=False)

    err.print(
        "[bold]2.[/] running campaigns/demo.yaml through Prefect "
        "(score, map, render, deliver, write back) ..."
    )
    with err.status("starting a temporary Prefect server and running the flow"):
        summary = run_flow_quietly(str(DEMO_CAMPAIGN), limit=None, simulate=True)
    err.print(
        "[bold]3.[/] following tracked links and site visits of simulated people through "
        "the web server (in process) ..."
    )
    tracked = simulate_tracked_engagement(engine, settings)
    elapsed = time.perf_counter() - started

    out.print()
    out.print(_tier_stage_table(engine))
    new = summary["sent"] - sent_before
    out.print(
        f"Emails: {summary['sent']} written as .eml files to {_relative(settings.outbox_dir)}/ "
        f"({new} new this run{'; nothing is sent twice' if new == 0 else ''}), "
        f"{summary['skipped']} skipped, {summary['failed']} failed.",
        highlight=False,
    )
    if summary["deferred"]:
        out.print(
            f"Deferred: {summary['deferred']} held back by frequency caps; they go out on a "
            "later run, once a slot frees up.",
            highlight=False,
        )
    if summary["skipped_by_reason"]:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items())
        out.print(f"Skipped because: {reasons}.", highlight=False)
    simulated = _simulated_events(engine)
    if simulated:
        kinds = ", ".join(f"{count} {kind}" for kind, count in simulated.items())
        out.print(
            f"Engagement is SIMULATED: {sum(simulated.values())} invented events ({kinds}), "
            "made by the demo in this demo database only and marked as simulated; real "
            "engagement comes from provider webhooks and `abm engagement sync`.",
            highlight=False,
        )
    _print_tracked(out, tracked)
    top = sorted(list_accounts(engine), key=lambda r: -r["engagement_score"])[:3]
    if top:
        out.print(
            "Most engaged (simulated): "
            + ", ".join(f"{r['domain']} ({r['stage']}, {r['engagement_score']:g})" for r in top),
            highlight=False,
        )
    report = demo_dir / "report.html"
    report.write_text(render_html(report_data(engine)), encoding="utf-8")
    out.print(f"Report: {_relative(report)} (open it in a browser)", highlight=False)
    url = engine.url.render_as_string(hide_password=True)
    out.print(f"Database: {url}   Prefect log: {_relative(prefect_log_path())}", highlight=False)
    sample = next(iter(sorted(settings.outbox_dir.glob("*.eml"))), None)
    if sample is not None:
        out.print(f"Open one in your mail program: {_relative(sample)}", highlight=False)
    out.print(
        f"Done in {elapsed:.0f} s. The demo keeps its own database; to look around in it:",
        highlight=False,
    )
    example = top[0]["domain"] if top else "<domain>"
    abm = _command_name()
    out.print(f"  export ABM_DATABASE_URL={url}", highlight=False)
    for command in (
        "accounts list --tier 1",
        f"accounts show {example}",
        f"contacts list --account {example}",
    ):
        out.print(f"  {abm} {command}", highlight=False)
    out.print('or in the browser, as a user you add (the console, README "The console"):')
    for command in ("console add-user you --role operator", "serve"):
        out.print(f"  {abm} {command}", highlight=False)
    out.print(
        "Your own data goes into the default database (.abm/abm.db), never mixed with "
        "the demo's: unset ABM_DATABASE_URL, then `abm init` and `abm import ...`.",
        highlight=False,
    )


def _print_tracked(out: Console, tracked: TrackedDemo) -> None:
    """What the simulated clicks through our own redirect and the site visits did."""
    if not tracked.clicks:
        return
    stored = tracked.stored
    out.print(
        f"Tracked links, SIMULATED: {tracked.clicks} simulated readers followed the tracked "
        f"link in their .eml through the redirect server (`abm webhooks serve`): "
        f"{stored['click']} clicks stored and counted, {stored['click_scanner']} by a mail "
        f"scanner stored apart and not counted, then {stored['web_visit']} page views on the "
        "demo site carrying the visitor id the click handed it (as the site script sends "
        "them), counted for that person and account.",
        highlight=False,
    )
    if tracked.example_link and tracked.example_target:
        link = tracked.example_link
        shown = link if len(link) <= 70 else link[:67] + "..."
        out.print(f"  e.g. {shown} -> {tracked.example_target}", highlight=False)


def _command_name() -> str:
    """How the user reaches `abm`: plain when it is on PATH, else the path they ran."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("abm")
    if invoked.name != "abm" or (on_path and Path(on_path).resolve() == invoked.resolve()):
        return "abm"
    return _relative(invoked)


def _write_suppressions(directory: Path, contacts_csv: Path) -> Path:
    """A small do-not-contact list (every 250th demo person), so the demo shows the rules
    that protect people at work: those people are skipped, with the reason recorded."""
    with contacts_csv.open(encoding="utf-8", newline="") as handle:
        emails = [row["email"] for row in csv.DictReader(handle)][: -BAD_CONTACT_ROWS or None]
    path = directory / "suppressions.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "reason"])
        writer.writerows([email, "asked not to be contacted"] for email in emails[::250])
    return path


def _simulated_events(engine: Engine) -> dict[str, int]:
    """Simulated events by type, most first, so the summary can say what was invented."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(EngagementEvent.type, func.count())
            .where(EngagementEvent.provider == "simulated")
            .group_by(EngagementEvent.type)
        ).all()
    return dict(sorted(rows, key=lambda row: (-row[1], row[0])))


def _sent(engine: Engine) -> int:
    from models.queries import delivery_state_counts

    return delivery_state_counts(engine).get("sent", 0)


def _tier_stage_table(engine: Engine) -> Table:
    counts = accounts_by_tier_and_stage(engine)
    stages = [s for s in STAGES if any(stage == s for _, stage in counts)] or ["target"]
    table = Table("accounts", *stages, "total", title="Accounts by tier and journey stage")
    for tier in (1, 2, 3, None):
        cells = [counts.get((tier, stage), 0) for stage in stages]
        label = {1: "tier 1 (1:1)", 2: "tier 2 (1:few)", 3: "tier 3 (1:many)"}.get(
            tier, "not targeted"
        )
        table.add_row(label, *(str(c) for c in cells), str(sum(cells)))
    return table

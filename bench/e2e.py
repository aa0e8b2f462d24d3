"""One end-to-end campaign run, in a process of its own: `python -m bench.e2e ...`.

`python -m bench` starts it once per size and delivery target, so its peak memory is its
own. The path is the real one: `abm init` (migrate a fresh database), `abm import accounts`
and `abm import contacts` (`stages.importing`), then the `run_campaign` Prefect
flow on bench/campaign.yaml against the Prefect API in `PREFECT_API_URL`: score, target, map
committees, plan the ledger, render and deliver in chunk tasks (to the outbox as `.eml`
files, or over SMTP), record every outcome, write engagement back. The result (timings,
ledger and outbox counts, task runs, peak memory per stage) goes to `--out` as JSON."""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    CAMPAIGN,
    SECRET_KEY,
    ChildPeakMemory,
    PeakMemory,
    bench_icp_rules,
    write_result,
)


def _configure(args: argparse.Namespace) -> None:
    """The `ABM_*` settings of this run; nothing is read from a `.env` file."""
    state = Path(args.state_dir)
    os.environ.update(
        ABM_STATE_DIR=str(state),
        ABM_DATABASE_URL=args.database_url,
        ABM_OUTBOX_DIR=str(state / "outbox"),
        ABM_EMAIL_BACKEND=args.backend,
        ABM_ICP_RULES=str(bench_icp_rules(state)),
        ABM_SECRET_KEY=SECRET_KEY,
    )
    if args.smtp_url:
        os.environ["ABM_SMTP_URL"] = args.smtp_url
    # a real backend refuses the loopback default; the bench's sink never follows the links
    os.environ.setdefault("ABM_PUBLIC_URL", "https://abm.bench.example.com")
    if args.task_workers:
        os.environ["ABM_CHUNK_WORKERS"] = str(args.task_workers)
    if args.chunk_runner:
        os.environ["ABM_CHUNK_RUNNER"] = args.chunk_runner


def task_runs_of(flow_run_id: UUID, settle_s: float = 30.0) -> list[Any]:
    """Every task run the Prefect API holds for a flow run. The server records task runs
    from events, a moment after they happen: read until two reads agree and all are final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + settle_s
    previous: list[Any] | None = None
    with get_client(sync_client=True) as client:
        while True:
            runs: list[Any] = []
            while True:
                page = client.read_task_runs(flow_run_filter=flow_runs, offset=len(runs), limit=200)
                runs += page
                if len(page) < 200:
                    break
            final = all(run.state is not None and run.state.is_final() for run in runs)
            if (previous is not None and len(previous) == len(runs) and final) or (
                time.monotonic() > deadline
            ):
                return runs
            previous = runs
            time.sleep(1.0)


def stage_seconds(runs: list[Any]) -> dict[str, dict[str, float]]:
    """Per task name: how many runs, wall time from the first start to the last end, and
    the sum of the runs' own durations (larger than wall time when chunks overlap)."""
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for run in runs:
        if run.start_time and run.end_time:
            spans[run.name.rsplit("-", 1)[0]].append((run.start_time, run.end_time))
    return {
        name: {
            "runs": len(pairs),
            "wall_s": round(
                (max(end for _, end in pairs) - min(start for start, _ in pairs)).total_seconds(), 2
            ),
            "busy_s": round(sum((end - start).total_seconds() for start, end in pairs), 2),
        }
        for name, pairs in sorted(spans.items())
    }


def count_eml(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    with os.scandir(directory) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".eml"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    memory = PeakMemory()
    _configure(args)
    from abm.prefect_runtime import prepare_environment
    from core.settings import get_settings, reset_settings

    reset_settings()
    prepare_environment()  # Prefect's own log to the state folder, before Prefect loads
    started = time.perf_counter()
    from flows.campaign import chunk_plan, run_campaign

    prefect_import_s = time.perf_counter() - started
    from sqlalchemy import func, select

    from bench.import_contacts import timed_import
    from models.db import get_engine, migrate
    from models.tables import Delivery

    settings = get_settings()
    engine = get_engine(settings.database_url)
    started = time.perf_counter()
    migrate(engine)
    migrate_s = time.perf_counter() - started
    memory.end_stage("setup")

    data = Path(args.data_dir)
    imported = timed_import(engine, settings, data / "accounts.csv", data / "contacts.csv")
    memory.end_stage("import")

    plan = chunk_plan(settings, imported.imported, os.cpu_count() or 1)
    chunk_runner = f"{plan.workers} {plan.kind}, chunks of {plan.size:,}"
    started = time.perf_counter()
    with ChildPeakMemory() as chunk_processes:
        state = run_campaign(campaign_file=str(CAMPAIGN), return_state=True)
    flow_s = time.perf_counter() - started
    memory.end_stage("flow")
    summary = state.result()

    runs = task_runs_of(state.state_details.flow_run_id)
    with engine.connect() as connection:
        ledger = dict(
            connection.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
        )
    return {
        "database": engine.dialect.name,
        "backend": args.backend,
        "chunk_runner": chunk_runner,
        "prefect_import_s": round(prefect_import_s, 2),
        "migrate_s": round(migrate_s, 2),
        "import_accounts_s": round(imported.accounts_s, 2),
        "import_contacts_s": round(imported.contacts_s, 2),
        "import_s": round(imported.seconds, 2),
        "flow_s": round(flow_s, 2),
        "e2e_s": round(imported.seconds + flow_s, 2),
        "imported": imported.imported,
        "rejected": imported.rejected,
        "summary": summary,
        "ledger_rows": sum(ledger.values()),
        "ledger_by_state": ledger,
        "eml_files": count_eml(settings.outbox_dir),
        "task_runs": len(runs),
        "stages": stage_seconds(runs),
        "peak_rss_mb": memory.peak_mb,
        # with ABM_CHUNK_RUNNER=processes, the largest chunk process's own peak
        "chunk_process_peak_rss_mb": chunk_processes.peak_mb if plan.kind == "processes" else None,
        "peak_rss_mb_by_stage": memory.stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="holds accounts.csv, contacts.csv")
    parser.add_argument("--state-dir", required=True, help="a fresh folder for this run")
    parser.add_argument("--database-url", required=True, help="an empty database")
    parser.add_argument("--backend", choices=("outbox", "smtp"), default="outbox")
    parser.add_argument("--smtp-url", default=None)
    parser.add_argument(
        "--task-workers", type=int, default=None, help="chunk tasks at once (ABM_CHUNK_WORKERS)"
    )
    parser.add_argument(
        "--chunk-runner", choices=("threads", "processes"), default=None, help="ABM_CHUNK_RUNNER"
    )
    parser.add_argument("--out", required=True, help="where the JSON result goes")
    args = parser.parse_args()
    write_result(Path(args.out), run(args))


if __name__ == "__main__":
    main()

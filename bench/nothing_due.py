"""What a run costs when nothing is due: `python -m bench.nothing_due [--contacts N ...]
[--campaigns K] [--database-url URL] [--profile]`.

Per size, in a child process of its own (fresh database and state folder) against one
temporary Prefect server: `abm import` of the demo data, the bench campaign's full run (every
contact sent to the outbox), then the same `run_campaign` again with nothing due, then
`advance_sequences` over K active campaigns with nothing due (the other K-1 are copies of
the first, their ledgers copied as sent, set up straight in the database and not timed).
Beside them, in the same child: an empty Prefect flow run (Prefect's own fixed cost of a
flow run here) and the import of `flows.campaign` (Prefect's import time), so the report
says what of the fixed cost is Prefect's and what is ours. `--profile` also writes the
nothing-due run's cProfile (the 40 largest cumulative entries) to the work folder.

Everything here happens within minutes, while a completed run vouches for changes only up
to 10 minutes before it started (`stages.delivery.ledger.PLANNED_MARGIN`, for commits that
land late): the child sets that margin to zero, which is what a tick more than 10 minutes
after the last change sees.

The goals (issue 22): a nothing-due run at the largest size costs at most 1.3x the same at
the smallest and at most 0.15 of the full run at the largest; `advance_sequences` over 10
campaigns with nothing due, under 30 s in all."""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CAMPAIGN, fresh_database, is_postgres_url, write_result

GOAL_SIZE_X = 1.3
GOAL_SHARE_OF_FULL = 0.15
GOAL_ADVANCE_S = 30.0


def _copy_campaigns(engine: Any, source_key: str, folder: Path, count: int) -> list[Path]:
    """K-1 more active campaigns like `source_key`, their ledgers copied from its (all sent),
    so each has nothing due: set up in SQL, not timed."""
    import yaml
    from sqlalchemy import insert, literal, select

    from core.campaign_file import load_campaign
    from core.settings import get_settings
    from flows.campaign import campaign_fingerprint
    from models.tables import Campaign, Delivery

    text = yaml.safe_load(CAMPAIGN.read_text(encoding="utf-8"))
    paths = []
    columns = [
        "step", "contact_id", "account_id", "channel", "variant", "state", "due_at",
        "attempts", "sent_at", "created_at", "updated_at",
    ]  # fmt: skip
    with engine.begin() as connection:
        source_id, planned_through = connection.execute(
            select(Campaign.id, Campaign.planned_through).where(Campaign.key == source_key)
        ).one()
        for number in range(2, count + 1):
            key = f"{source_key}-{number}"
            path = folder / f"{key}.yaml"
            path.write_text(yaml.safe_dump({**text, "key": key}, sort_keys=False), "utf-8")
            paths.append(path)
            campaign_id = connection.execute(
                insert(Campaign)
                .values(
                    key=key,
                    name=f"{text['name']} ({number})",
                    source_path=str(path),
                    # as if it had run when the first did, with its own file
                    planned_through=planned_through,
                    plan_fingerprint=campaign_fingerprint(get_settings(), load_campaign(path)[1]),
                )
                .returning(Campaign.id)
            ).scalar_one()
            table = Delivery.__table__
            rows = select(*[table.c[name] for name in columns], literal(campaign_id)).where(
                table.c.campaign_id == source_id
            )
            connection.execute(
                insert(table).from_select([*columns, "campaign_id"], rows)  # type: ignore[arg-type]
            )
    return paths


def _task_seconds(flow_run_id: Any) -> dict[str, dict[str, float]]:
    from bench.e2e import stage_seconds, task_runs_of

    return stage_seconds(task_runs_of(flow_run_id))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The child: one size, everything in this process."""
    from bench.e2e import _configure

    args.backend, args.smtp_url, args.task_workers, args.chunk_runner = "outbox", None, None, None
    _configure(args)
    from abm.prefect_runtime import prepare_environment
    from core.settings import get_settings, reset_settings

    reset_settings()
    prepare_environment()
    started = time.perf_counter()
    from prefect import flow

    from flows.campaign import run_campaign
    from flows.scheduled import advance_sequences

    try:  # ticks come more than 10 minutes after the last change (see the docstring)
        import stages.delivery.ledger as ledger

        ledger.PLANNED_MARGIN = ledger.timedelta(0)
    except AttributeError:
        pass

    prefect_import_s = time.perf_counter() - started

    from bench.import_contacts import timed_import
    from models.db import get_engine, migrate

    settings = get_settings()
    engine = get_engine(settings.database_url)
    migrate(engine)
    data = Path(args.data_dir)
    imported = timed_import(engine, settings, data / "accounts.csv", data / "contacts.csv")

    @flow(name="bench-empty-flow")
    def empty_flow() -> int:
        return 0

    empty_flow()  # the first flow run of a process also pays for the client's start
    started = time.perf_counter()
    empty_flow()
    empty_flow_s = time.perf_counter() - started

    started = time.perf_counter()
    full = run_campaign(campaign_file=str(CAMPAIGN), return_state=True)
    full_s = time.perf_counter() - started
    full_summary = full.result()

    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    idle = run_campaign(campaign_file=str(CAMPAIGN), return_state=True)
    if profiler:
        profiler.disable()
    nothing_due_s = time.perf_counter() - started
    idle_summary = idle.result()
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        Path(args.state_dir, "nothing-due.profile.txt").write_text(text.getvalue(), "utf-8")

    key = "bench-intro"
    _copy_campaigns(engine, key, Path(args.state_dir), args.campaigns)
    started = time.perf_counter()
    advance = advance_sequences(return_state=True)
    advance_s = time.perf_counter() - started
    advanced = advance.result()

    return {
        "contacts": imported.imported,
        "database": engine.dialect.name,
        "prefect_import_s": round(prefect_import_s, 2),
        "empty_flow_s": round(empty_flow_s, 2),
        "full_s": round(full_s, 2),
        "full_sent": full_summary["sent"],
        "nothing_due_s": round(nothing_due_s, 2),
        "nothing_due_sent": idle_summary["sent"],
        "nothing_due_tasks": _task_seconds(idle.state_details.flow_run_id),
        "nothing_due_share_of_full": round(nothing_due_s / full_s, 3),
        "campaigns": args.campaigns,
        "advance_s": round(advance_s, 2),
        "advance_result": advanced,
        "advance_tasks": _task_seconds(advance.state_details.flow_run_id),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The parent: a temporary Prefect server, then one child per size."""
    from bench.harness import BenchError, Runner, machine, prefect_server, settle

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="abm-bench-idle-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, Any] = {}
    try:
        with prefect_server(work) as (api_url, server_s):
            runner = Runner(work, api_url)
            for contacts in args.contacts:
                data = work / f"data-{contacts}"
                runner.generate(contacts, data)
                state = work / f"state-{contacts}"
                with fresh_database(args.database_url, work / "db", f"idle{contacts}") as url:
                    settle()
                    argv = ["--child", "--data-dir", str(data), "--state-dir", str(state)]
                    argv += ["--database-url", url, "--campaigns", str(args.campaigns)]
                    sizes[str(contacts)] = runner.run(
                        "nothing_due", f"idle-{contacts}", *argv, *(["--profile"] * args.profile)
                    )
                print(f"{contacts:,} contacts: {json.dumps(sizes[str(contacts)])}", file=sys.stderr)
    except BenchError as exc:
        raise SystemExit(str(exc)) from None
    finally:
        if not (args.keep or args.work_dir or args.profile):
            shutil.rmtree(work, ignore_errors=True)
    small, large = sizes[str(min(args.contacts))], sizes[str(max(args.contacts))]
    return {
        "machine": machine(),
        "prefect_server_start_s": round(server_s, 1),
        "work_dir": str(work),
        "sizes": sizes,
        "nothing_due_large_vs_small_x": round(large["nothing_due_s"] / small["nothing_due_s"], 2),
        "nothing_due_share_of_full_at_largest": large["nothing_due_share_of_full"],
        "advance_s_at_largest": large["advance_s"],
        "goals": {
            "large_vs_small_x": GOAL_SIZE_X,
            "share_of_full": GOAL_SHARE_OF_FULL,
            "advance_s": GOAL_ADVANCE_S,
        },
    }


def _table(report: dict[str, Any]) -> str:
    sizes = report["sizes"]
    lines = ["| | " + " | ".join(f"{int(n):,} contacts" for n in sizes) + " |"]
    lines.append("|---|" + "---:|" * len(sizes))
    for label, key in (
        ("full run, s", "full_s"),
        ("nothing-due run, s", "nothing_due_s"),
        ("nothing-due / full", "nothing_due_share_of_full"),
        ("empty Prefect flow run, s", "empty_flow_s"),
        ("import of flows.campaign (Prefect), s", "prefect_import_s"),
        ("advance-sequences, nothing due, s", "advance_s"),
    ):
        lines.append(f"| {label} | " + " | ".join(str(r[key]) for r in sizes.values()) + " |")
    campaigns = next(iter(sizes.values()))["campaigns"]
    x = report["nothing_due_large_vs_small_x"]
    share = report["nothing_due_share_of_full_at_largest"]
    lines += [
        "",
        f"nothing-due largest / smallest: {x}x (goal <= {GOAL_SIZE_X}); share of the full run "
        f"at the largest: {share} (goal <= {GOAL_SHARE_OF_FULL}); advance-sequences over "
        f"{campaigns} campaigns at the largest: {report['advance_s_at_largest']} s "
        f"(goal < {GOAL_ADVANCE_S:.0f} s at 1,000,000).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--campaigns", type=int, default=10, help="active campaigns (default 10)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server, else SQLite")
    parser.add_argument("--profile", action="store_true", help="cProfile the nothing-due run")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None)
    # the child's own arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        write_result(Path(args.out), run(args))
        return 0
    if args.database_url and not is_postgres_url(args.database_url):
        args.database_url = None
    report = measure(args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(json.dumps(report, indent=2, default=str) if args.json else _table(report), end="")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

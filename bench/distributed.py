"""One campaign's delivery on one Dask worker against two: `python -m bench.distributed`.

    python -m bench.distributed --database-url postgresql+psycopg://... [--contacts 100000]
                                [--pairs 1] [--state-dir DIR] [--out FILE]

One fresh PostgreSQL database (Dask needs it) of N demo contacts, imported and scored as in
`bench.e2e`, every contact in the benchmark campaign's audience; a temporary Prefect server;
a Dask scheduler. Each round starts 1 or 2 `dask worker` processes (one thread each, each in
a working folder of its own, as on separate machines, writing to one shared outbox folder),
plans the campaign's step afresh and delivers every due row through the flow's own path:
`chunk_plan` and the Dask chunk runner mapping `deliver_chunk`, with the take-over check.
Rounds run 1 2 2 1 ..., so drift of the machine falls on both alike. The result: messages a
second with one worker and with two, and their ratio, goes to stdout and `--out`.

A worker is a process: two workers can go at most as fast as the cores they get. On a
machine whose cores also run the flow, the scheduler and PostgreSQL, the ratio says how
much of a second core the second worker found, not what a second machine would give."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CAMPAIGN,
    SECRET_KEY,
    bench_icp_rules,
    free_port,
    is_postgres_url,
    write_result,
)
from bench.harness import prefect_server

STEP = "intro"


def _worker_env(database_url: str, folder: Path, outbox: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABM_", "PREFECT_"))}
    return {
        **env,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "ABM_STATE_DIR": str(folder / ".abm"),
        "ABM_DATABASE_URL": database_url,
        "ABM_EMAIL_BACKEND": "outbox",
        "ABM_OUTBOX_DIR": str(outbox),
        "ABM_SECRET_KEY": SECRET_KEY,
        "ABM_ICP_RULES": os.environ["ABM_ICP_RULES"],
    }


def _start_workers(count: int, scheduler: str, work: Path, env_for: Any) -> list[Any]:
    from distributed import Client

    workers = []
    for n in range(count):
        folder = work / f"worker{n + 1}"
        folder.mkdir(exist_ok=True)
        log = (folder / "worker.log").open("ab")
        workers.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "distributed.cli.dask_worker", scheduler),
                    *("--no-nanny", "--nthreads", "1", "--no-dashboard", "--name", f"w{n + 1}"),
                ],
                cwd=folder,
                env=env_for(folder),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    with Client(scheduler, timeout=60) as client:
        client.wait_for_workers(count, timeout=120)
        # what a chunk imports, before the clock starts (seconds a fresh process pays once)
        client.run(importlib.import_module, "flows.tasks")
    return workers


def _stop(processes: list[Any]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _one_round(workers: int, engine: Any, outbox: Path, planning: tuple) -> dict[str, Any]:
    """Plan the step afresh and deliver every due row on the Dask cluster: sent, seconds."""
    from prefect import flow
    from sqlalchemy import delete

    from core.settings import get_settings, reset_settings
    from flows.campaign import _deliver_step
    from flows.tasks import deliver_chunk
    from models.db import session_scope
    from models.tables import Delivery
    from stages.delivery.ledger import DeliveryContext, plan_step

    campaign_id, key, campaign, targets = planning
    with session_scope(engine) as session:
        session.execute(delete(Delivery))
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.mkdir(parents=True)
    plan_step(engine, campaign_id, key, campaign.steps, 0, targets)
    os.environ["ABM_CHUNK_WORKERS"] = str(workers)
    reset_settings()
    settings = get_settings()
    context = DeliveryContext(settings.database_url, campaign, campaign_id, key, STEP)

    @flow(name="bench-distributed-step")
    def deliver_step() -> dict[str, Any]:
        started = time.perf_counter()
        outcomes = _deliver_step(settings, deliver_chunk, context, "bench-distributed")
        return {
            "sent": sum(o.sent for o in outcomes),
            "seconds": time.perf_counter() - started,
        }

    result = deliver_step()
    result["workers"] = workers
    result["per_s"] = result["sent"] / result["seconds"]
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not is_postgres_url(args.database_url):
        raise SystemExit("--database-url must name a PostgreSQL server: Dask runs need one")
    from bench.common import fresh_database

    work = Path(args.state_dir or tempfile.mkdtemp(prefix="abm-bench-dask-"))
    work.mkdir(parents=True, exist_ok=True)
    outbox = work / "outbox"
    with fresh_database(args.database_url, work, "dask") as database_url:
        os.environ.update(
            ABM_STATE_DIR=str(work / ".abm"),
            ABM_DATABASE_URL=database_url,
            ABM_EMAIL_BACKEND="outbox",
            ABM_OUTBOX_DIR=str(outbox),
            ABM_SECRET_KEY=SECRET_KEY,
            ABM_ICP_RULES=str(bench_icp_rules(work)),
            ABM_CHUNK_RUNNER="dask",
        )
        scheduler_address = f"tcp://127.0.0.1:{free_port()}"
        os.environ["ABM_DASK_SCHEDULER"] = scheduler_address
        with prefect_server(work) as (api_url, _):
            os.environ["PREFECT_API_URL"] = api_url
            return _rounds(args, work, outbox, database_url, scheduler_address, api_url)


def _rounds(
    args: argparse.Namespace,
    work: Path,
    outbox: Path,
    database_url: str,
    scheduler_address: str,
    api_url: str,
) -> dict[str, Any]:
    from abm.demo_data import write_demo_csvs
    from bench.import_contacts import timed_import
    from core.campaign_file import load_campaign
    from core.settings import get_settings, reset_settings
    from models.db import get_engine, migrate
    from stages.delivery.ledger import register_campaign
    from stages.targeting.audience import target_account_ids
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    reset_settings()
    settings = get_settings()
    engine = get_engine(database_url)
    migrate(engine)
    accounts, contacts = write_demo_csvs(work / "data", contacts=args.contacts)
    timed_import(engine, settings, accounts, contacts)
    rescore_accounts_in_db(engine, load_icp_rules(settings.icp_rules))
    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    planning = (campaign_id, key, campaign, target_account_ids(engine, campaign.audience))

    scheduler_log = (work / "scheduler.log").open("ab")
    scheduler = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"),
            *("--port", scheduler_address.rsplit(":", 1)[1], "--no-dashboard"),
        ],
        cwd=work,
        env=_worker_env(database_url, work, outbox, api_url),
        stdout=scheduler_log,
        stderr=subprocess.STDOUT,
    )
    rounds: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    try:
        for pair in range(args.pairs):
            for count in (1, 2) if pair % 2 == 0 else (2, 1):
                workers = _start_workers(
                    count,
                    scheduler_address,
                    work,
                    lambda folder: _worker_env(database_url, folder, outbox, api_url),
                )
                try:
                    rounds[count].append(_one_round(count, engine, outbox, planning))
                finally:
                    _stop(workers)
                print(json.dumps(rounds[count][-1]), flush=True)
    finally:
        _stop([scheduler])
    one = sum(r["sent"] for r in rounds[1]) / sum(r["seconds"] for r in rounds[1])
    two = sum(r["sent"] for r in rounds[2]) / sum(r["seconds"] for r in rounds[2])
    return {
        "contacts": args.contacts,
        "cores": os.cpu_count(),
        "rounds": rounds,
        "one_worker_per_s": round(one, 1),
        "two_workers_per_s": round(two, 1),
        "ratio": round(two / one, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=1, help="rounds of one and of two workers")
    parser.add_argument("--state-dir", help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    if args.out:
        write_result(args.out, result)


if __name__ == "__main__":
    main()

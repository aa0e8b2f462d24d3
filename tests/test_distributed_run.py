"""One campaign over many machines: `run_campaign` with ABM_CHUNK_RUNNER=dask sends its chunk
tasks to two Dask worker processes, each in a working folder of its own (own `.abm` state,
own settings) and sharing nothing but one PostgreSQL and the SMTP relay. One worker is
killed with SIGKILL while a message it sent is still waiting for the relay's 250. Dask runs
the dead worker's chunk again on the survivor, which finds the rows still claimed; once the
short lease has run out the flow takes them over. The run ends on the survivor with nothing
in flight, and the relay's own record agrees with the ledger: nobody got two messages, every
`sent` row arrived once, the kill left at most one uncertain message per thread of the dead
worker, and each is accounted for (at most once at the relay)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

import psutil
import pytest
from smtp_server import RecordingHandler, free_port, smtp_server
from sqlalchemy import select

from abm.demo_data import write_demo_csvs
from core.errors import ConfigError
from core.settings import Settings, get_settings, reset_settings
from flows.campaign import chunk_plan
from flows.distributed import disagreements
from models.tables import Delivery
from stages.importing import import_file

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = REPO / "campaigns" / "demo.yaml"
CONTACTS = 540  # about 300 people in the buying committees of the target accounts
THREADS = 2  # per Dask worker
LEASE_SECONDS = 3
SERVER_LATENCY = 0.03  # seconds between a message's data and the relay's 250
KILL_AFTER = 20  # messages at the relay before the kill is armed: mid-run, not at the start
STARTUP_TIMEOUT = 60.0


def test_dask_needs_postgresql_and_a_scheduler(monkeypatch):
    monkeypatch.setenv("ABM_CHUNK_RUNNER", "dask")
    reset_settings()
    with pytest.raises(ConfigError, match=r"ABM_DASK_SCHEDULER: .*tcp://HOST:8786"):
        get_settings()
    monkeypatch.setenv("ABM_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    reset_settings()
    with pytest.raises(ConfigError, match="set ABM_DATABASE_URL to PostgreSQL"):
        get_settings()
    monkeypatch.setenv("ABM_DATABASE_URL", "postgresql+psycopg://abm@db.internal/abm")
    reset_settings()
    assert get_settings().dask_scheduler == "tcp://127.0.0.1:8786"


def test_a_dask_plan_names_the_scheduler_and_grows_its_chunks():
    settings = Settings(
        chunk_runner="dask",
        dask_scheduler="tcp://10.0.0.5:8786",
        database_url="postgresql+psycopg://abm@db/abm",
        chunk_workers=8,
    )
    plan = chunk_plan(settings, 100_000, cores=2)
    # the cluster's 8 threads, about four chunks each, as on processes
    assert (plan.kind, plan.workers, plan.size, plan.scheduler) == (
        "dask",
        8,
        3125,
        "tcp://10.0.0.5:8786",
    )
    assert chunk_plan(Settings(chunk_runner="threads"), 100_000, 2).scheduler is None


def test_workers_that_would_send_otherwise_are_named():
    flow = {"email_backend": "smtp", "idempotent": False}
    workers = {
        "tcp://10.0.0.7:4001": {"email_backend": "smtp", "idempotent": False},
        "tcp://10.0.0.8:4001": {"email_backend": "outbox", "idempotent": True},
        "tcp://10.0.0.9:4001": {"problem": "ABM_EMAIL_BACKEND=smtp needs ABM_SMTP_URL"},
    }
    assert disagreements(flow, workers) == [
        "tcp://10.0.0.8:4001: ABM_EMAIL_BACKEND is outbox there, smtp here",
        "tcp://10.0.0.9:4001: ABM_EMAIL_BACKEND=smtp needs ABM_SMTP_URL",
    ]


@dataclass
class PeerRecordingHandler(RecordingHandler):
    """Records which client port each message came in on, then waits before its 250; calls
    `on_message` with that port while the sender is still waiting."""

    latency: float = 0.0
    ports: list[int] = field(default_factory=list)
    on_message: object = None

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        reply = await super().handle_DATA(server, session, envelope)
        self.ports.append(session.peer[1])
        if callable(self.on_message):
            self.on_message(session.peer[1])
        await asyncio.sleep(self.latency)
        return reply


def _start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_workers(address: str, count: int, logs: list[Path]) -> None:
    from distributed import Client

    with Client(address, timeout=STARTUP_TIMEOUT) as client:
        try:
            client.wait_for_workers(count, timeout=STARTUP_TIMEOUT)
        except TimeoutError:
            pytest.fail("Dask workers did not join:\n" + "\n".join(p.read_text() for p in logs))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_worker_killed_mid_run_leaves_every_message_sent_once_on_the_survivor(
    database_url, tmp_path, monkeypatch, prefect_server
):
    from prefect.settings import PREFECT_API_URL

    from flows.campaign import run_campaign
    from models.db import get_engine

    engine = get_engine(database_url)
    handler = PeerRecordingHandler(latency=SERVER_LATENCY)
    with ExitStack() as stack:
        controller = stack.enter_context(smtp_server(handler))
        scheduler_address = f"tcp://127.0.0.1:{free_port()}"
        common = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ABM_", "PREFECT_"))},
            "PYTHONPATH": str(REPO),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        scheduler = _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                scheduler_address.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
            tmp_path,
            common,
            tmp_path / "scheduler.log",
        )
        stack.callback(_stop, scheduler)
        workers, logs = [], []
        for name in ("w1", "w2"):
            folder = tmp_path / name  # a machine of its own: own folder, own state, own settings
            folder.mkdir()
            env = {
                **common,
                "ABM_STATE_DIR": str(folder / ".abm"),
                "ABM_SECRET_KEY": "test-secret-key",
                "ABM_DATABASE_URL": database_url,
                "ABM_EMAIL_BACKEND": "smtp",
                "ABM_PUBLIC_URL": "https://abm.acme.com",
                "ABM_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
                "ABM_LEASE_SECONDS": str(LEASE_SECONDS),
            }
            logs.append(folder / "worker.log")
            worker = _start(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    scheduler_address,
                    "--no-nanny",  # the process that sends is the one killed
                    "--nthreads",
                    str(THREADS),
                    "--no-dashboard",
                    "--name",
                    name,
                ],
                folder,
                env,
                logs[-1],
            )
            stack.callback(_stop, worker)
            workers.append(worker)

        # the data, while the workers start
        monkeypatch.setenv("ABM_DATABASE_URL", database_url)
        monkeypatch.setenv("ABM_EMAIL_BACKEND", "smtp")
        monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")
        monkeypatch.setenv("ABM_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        monkeypatch.setenv("ABM_LEASE_SECONDS", str(LEASE_SECONDS))
        monkeypatch.setenv("ABM_CHUNK_RUNNER", "dask")
        monkeypatch.setenv("ABM_DASK_SCHEDULER", scheduler_address)
        monkeypatch.setenv("ABM_CHUNK_SIZE", "10")
        monkeypatch.setenv("ABM_CHUNK_WORKERS", str(2 * THREADS))
        reset_settings()
        accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=CONTACTS)
        import_file("accounts", accounts, engine, get_settings())
        import_file("contacts", contacts, engine, get_settings())
        _wait_for_workers(scheduler_address, 2, logs)

        victim = psutil.Process(workers[0].pid)
        killed = threading.Event()

        def kill_if_the_victim_sent(port: int) -> None:
            """SIGKILL the first worker as a message of its own waits for the relay's 250."""
            if killed.is_set() or len(handler.ports) < KILL_AFTER:
                return
            with suppress(psutil.Error):
                if any(c.laddr.port == port for c in victim.net_connections(kind="tcp")):
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.set()

        handler.on_message = kill_if_the_victim_sent
        started = time.monotonic()
        summary = run_campaign(campaign_file=str(CAMPAIGN))
        elapsed = time.monotonic() - started

    assert killed.is_set(), "the first worker never sent a message after the kill was armed"
    assert workers[0].wait(timeout=10) == -signal.SIGKILL
    assert workers[1].returncode in (None, 0, -signal.SIGTERM)  # the survivor ran to the end

    # the run completed on the survivor: nothing left in flight, every planned row settled
    # (deferred ones wait for a frequency cap, as on one machine: planned, not claimed)
    assert summary["in_flight"] == 0 and summary["pending"] == summary["deferred"]
    settled = summary["sent"] + summary["skipped"] + summary["uncertain"]
    assert summary["planned"] == settled + summary["deferred"]
    assert summary["failed"] == 0
    # the kill caught the victim's message at the relay; at most one per thread of it
    assert 1 <= summary["uncertain"] <= THREADS

    received = Counter(
        BytesHeaderParser().parsebytes(message.content)["Message-ID"].strip().strip("<>")
        for message in handler.received
    )
    assert max(received.values()) == 1, "someone got a message twice"
    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.state, Delivery.message_id).where(Delivery.message_id.is_not(None))
        ).all()
    sent = {message_id.strip("<>") for state, message_id in rows if state == "sent"}
    uncertain = {message_id.strip("<>") for state, message_id in rows if state == "uncertain"}
    assert sent <= set(received), "a message the ledger calls sent never reached the relay"
    # every message at the relay is a sent row or an uncertain one (the kill's), none other
    assert set(received) <= sent | uncertain
    assert set(received) & uncertain, "the message the kill caught is not the uncertain one"
    print(f"{summary['sent']} sent, {summary['uncertain']} uncertain in {elapsed:.1f} s")

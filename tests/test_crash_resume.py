"""Crash and resume against a real SMTP server: a worker process delivering a campaign is
killed with SIGKILL at random moments, expired leases are released as `uncertain` (SMTP is
not idempotent) and the worker is started again, until a run finishes with nothing due.

The ledger and the server's own record must then agree: nothing lost, nothing sent twice,
and no more messages of unknown fate than there were kills (the SMTP backend commits the
ledger after every message, so a kill can catch at most one message in flight)."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, cast

import pytest
from smtp_server import RecordingHandler, smtp_server
from sqlalchemy import Engine, func, select

from abm.demo_data import write_demo_csvs
from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from models.db import get_engine
from models.tables import Delivery, utcnow
from stages.content.compose import Composer
from stages.delivery.ledger import (
    due_delivery_ids,
    ledger_summary,
    plan_step,
    register_campaign,
    release_expired_leases,
)
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
WORKER = Path(__file__).resolve().parent / "crash_worker.py"
STEP = "intro"
HELD = ("rendered", "sending")  # taken by a run, outcome not yet recorded
ENDED = {"sent", "skipped", "uncertain"}
CONTACTS = 540  # about 300 people in the buying committees of the target accounts
SEED = 20_240_607
KILLS = 24  # kill points; the run after the last one goes to the end
MIN_KILLS = 20
KILL_DELAY = (0.02, 0.4)  # seconds after the worker starts delivering
SERVER_LATENCY = 0.025  # seconds a message spends in the server after it is taken
LEASE_SECONDS = 1
STARTUP_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0


@dataclass
class SlowRecordingHandler(RecordingHandler):
    """Records each message when its data is in, then takes a while to say 250: a kill in
    that while leaves a message the server has but the ledger cannot know was accepted."""

    latency: float = 0.0

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.latency)
        return reply


def plan_demo_campaign(engine: Engine, data_dir: Path) -> tuple[int, int]:
    """Demo accounts and contacts, imported and scored; the demo campaign's first step
    planned for the buying committees. Returns the campaign id and the rows planned."""
    settings = get_settings()
    accounts, contacts = write_demo_csvs(data_dir, contacts=CONTACTS)
    import_file("accounts", accounts, engine, settings)
    import_file("contacts", contacts, engine, settings)
    rescore_accounts_in_db(engine, load_icp_rules())
    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    account_ids = target_account_ids(engine, campaign.audience)
    roles = list(campaign.audience.required_roles)
    planned = plan_step(engine, campaign_id, key, campaign.steps, 0, account_ids, roles)
    return campaign_id, planned


@dataclass
class Run:
    """How one worker run ended."""

    status: str  # "signal 9" when the kill landed, else "exit CODE"
    done: bool  # it found nothing more due and said so

    @property
    def killed(self) -> bool:
        return self.status == f"signal {signal.SIGKILL.value}"


class Worker:
    """`crash_worker.py` with this test's environment: each `run` is a fresh forked process
    that delivers until nothing is due, unless the test SIGKILLs it first."""

    def __init__(self, cwd: Path, log: Path) -> None:
        self.log = log
        self.child: int | None = None
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), str(CAMPAIGN), STEP],
                cwd=cwd,
                env=dict(os.environ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._line(STARTUP_TIMEOUT) == "ready"

    def run(self, kill_after: float | None) -> Run:
        self._send("go")
        started = self._line(STARTUP_TIMEOUT)
        assert started.startswith("started "), started
        self.child = int(started.split()[1])
        if kill_after is not None:
            time.sleep(kill_after)
            # not yet reaped (the worker waits for `reap`): this PID is still our child
            os.kill(self.child, signal.SIGKILL)
        self._send("reap")
        done = False
        while True:
            line = self._line(RUN_TIMEOUT)
            if line.startswith(("exit ", "signal ")):
                self.child = None
                return Run(line, done)
            done = done or line.startswith("done")

    def close(self) -> None:
        if self.child is not None:  # a failed test must not leave a sender behind
            with suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGKILL)
        stdin = cast(IO[str], self.process.stdin)
        with suppress(OSError):
            stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _read(self) -> None:
        """Lines as they come, so a wait can time out without losing buffered ones."""
        for line in cast(IO[str], self.process.stdout):
            self.lines.put(line)
        self.lines.put("")

    def _send(self, command: str) -> None:
        stdin = cast(IO[str], self.process.stdin)
        stdin.write(f"{command}\n")
        stdin.flush()

    def _line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        assert line, f"worker went quiet: {self.log.read_text()[-3000:]}"
        return line.strip()


def wait_for_leases(engine: Engine, campaign_id: int, timeout: float = 10.0) -> None:
    """Until no row of the campaign is held under a lease that has not yet run out
    (recording an outcome clears the lease)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            live = connection.execute(
                select(func.count()).where(
                    Delivery.campaign_id == campaign_id, Delivery.lease_until >= utcnow()
                )
            ).scalar_one()
        if not live:
            return
        assert time.monotonic() < deadline, f"{live} leases still live after {timeout}s"
        time.sleep(0.05)


def held_rows(engine: Engine, campaign_id: int) -> dict[str, int]:
    """Rows a run has taken and not yet given an outcome, by state."""
    with engine.connect() as connection:
        return dict(
            connection.execute(
                select(Delivery.state, func.count())
                .where(Delivery.campaign_id == campaign_id, Delivery.state.in_(HELD))
                .group_by(Delivery.state)
            ).all()
        )


def received_message_ids(handler: RecordingHandler) -> tuple[Counter[str], list[str]]:
    """Message-IDs the server took, counted, and the recipients of messages with none."""
    parser = BytesHeaderParser()
    found: Counter[str] = Counter()
    without: list[str] = []
    for received in handler.received:
        message_id = parser.parsebytes(received.content)["Message-ID"]
        if message_id is None:
            without.extend(received.rcpt_tos)
        else:
            found[str(message_id).strip()] += 1
    return found, without


@pytest.mark.slow
def test_killed_workers_resume_without_losing_or_repeating_a_message(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = SlowRecordingHandler(latency=SERVER_LATENCY)
    rng = random.Random(SEED)
    delays = [rng.uniform(*KILL_DELAY) for _ in range(KILLS)]
    log = tmp_path / "worker.log"
    kills = 0
    with smtp_server(handler) as controller:
        monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("ABM_EMAIL_BACKEND", "smtp")
        monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")  # a real backend needs one
        monkeypatch.setenv("ABM_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        monkeypatch.setenv("ABM_LEASE_SECONDS", str(LEASE_SECONDS))
        reset_settings()
        engine = get_engine(sqlite_url)
        campaign_id, planned = plan_demo_campaign(engine, tmp_path / "data")
        assert 250 <= planned <= 350
        assert len(due_delivery_ids(engine, campaign_id, STEP)) == planned

        worker = Worker(tmp_path, log)
        try:
            for delay in delays:
                run = worker.run(kill_after=delay)
                if not run.killed:
                    break  # it finished before this kill point: that was the final run
                kills += 1
                wait_for_leases(engine, campaign_id)
                release_expired_leases(engine, campaign_id, requeue=False)
                assert held_rows(engine, campaign_id) == {}
            else:
                run = worker.run(kill_after=None)
        finally:
            worker.close()
        assert run == Run("exit 0", done=True), log.read_text()[-3000:]
        assert due_delivery_ids(engine, campaign_id, STEP) == []
    # the server has stopped: every message it took is in `handler.received`

    key, campaign = load_campaign(CAMPAIGN)
    step = next(step for step in campaign.steps if step.id == STEP)
    composer = Composer(get_settings(), key, campaign_id, campaign, step)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.id, Delivery.contact_id, Delivery.state, Delivery.message_id).where(
                Delivery.campaign_id == campaign_id
            )
        ).all()
    # the Message-ID each row is sent with, whether or not the ledger got to store it
    message_ids = {row.id: composer.message_id(row.id, row.contact_id) for row in rows}
    by_state: dict[str, set[int]] = {}
    for row in rows:
        by_state.setdefault(row.state, set()).add(row.id)
        if row.message_id is not None:
            assert row.message_id == message_ids[row.id]
    sent = by_state.get("sent", set())
    skipped = by_state.get("skipped", set())
    uncertain = by_state.get("uncertain", set())
    received, without_message_id = received_message_ids(handler)
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    uncertain_received = sum(1 for row_id in uncertain if message_ids[row_id] in received)

    with capsys.disabled():
        print(
            f"\ncrash/resume: planned={planned} kills={kills} sent={len(sent)} "
            f"skipped={len(skipped)} uncertain={len(uncertain)} "
            f"uncertain-but-received={uncertain_received} duplicates={duplicates} "
            f"received={len(handler.received)} without-message-id={len(without_message_id)}"
        )

    # (1) nothing lost: every row reached an end state, none is left held or planned
    assert set(by_state) <= ENDED, ledger_summary(engine, campaign_id)
    assert len(rows) == planned
    # every message the server took names its ledger row in its Message-ID header
    assert without_message_id == [], (
        f"{len(without_message_id)} messages arrived without a Message-ID header, "
        f"to {without_message_id[:5]}..."
    )
    # (2) every row the ledger calls sent reached the server exactly once
    assert [row_id for row_id in sorted(sent) if received[message_ids[row_id]] != 1] == []
    # (3) with requeue=False an uncertain row is never sent again: no duplicates at all,
    # and a kill leaves at most the one message in flight uncertain
    assert duplicates == 0, [mid for mid, count in received.items() if count > 1]
    assert len(uncertain) <= kills, (
        f"{len(uncertain)} rows uncertain after {kills} kills, "
        f"{len(uncertain) - uncertain_received} of them never reached the server"
    )
    # (4) the server got nothing the ledger does not know, and nothing it skipped
    assert set(received) <= {message_ids[row_id] for row_id in sent | uncertain}
    # (5) a claim that never reached the provider gives its attempt back: every message sent
    # was attempted exactly once, however many crashes it lived through
    with engine.connect() as connection:
        attempts = set(
            connection.execute(
                select(Delivery.attempts).where(
                    Delivery.campaign_id == campaign_id, Delivery.state == "sent"
                )
            ).scalars()
        )
    assert attempts == {1}, attempts
    assert kills >= MIN_KILLS, f"only {kills} kills landed before the work ran out"

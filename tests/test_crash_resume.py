"""Crash, resume and resolve against a real SMTP server: a process group of two senders
delivering a campaign is killed with SIGKILL at random moments, expired leases are released
as `uncertain` (SMTP is not idempotent) and the senders are started again, until a run
finishes with nothing due. Then the operator settles what stayed uncertain: the messages
the relay's log names count as sent (`abm campaign resolve --relay-log`), the rest are sent
again under the same Message-ID (`--resend`), and one more run sends them.

Before the resolution, no more messages are of unknown fate than kills x senders (the SMTP
backend commits the ledger after every message, so a kill catches at most one message in
flight per sender). After it, the ledger and the server's own record agree: every planned
person has a message or a recorded reason, nobody got two, nothing is uncertain. On SQLite
and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
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
from typing import IO, Any, cast

import pytest
from cli_support import run_abm
from smtp_server import RecordingHandler, smtp_server
from sqlalchemy import Engine, func, select

from abm.demo_data import write_demo_csvs
from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from models.db import get_engine
from models.tables import Delivery, utcnow
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
MIN_KILLS = 16
SENDERS = 2  # sender processes in the killed group, as a flow's concurrent chunk tasks
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
                [sys.executable, str(WORKER), str(CAMPAIGN), STEP, str(SENDERS)],
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
            # not yet reaped (the worker waits for `reap`): this group is still its child's
            os.killpg(self.child, signal.SIGKILL)
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
                os.killpg(self.child, signal.SIGKILL)
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


def relay_log(handler: RecordingHandler, path: Path) -> Path:
    """What a Postfix relay logs for each message it takes: its queue id and Message-ID."""
    parser = BytesHeaderParser()
    with path.open("w") as log:
        for number, received in enumerate(handler.received):
            message_id = parser.parsebytes(received.content)["Message-ID"]
            log.write(f"Dec  4 10:00:00 relay postfix/cleanup[812]: Q{number:05X}: ")
            log.write(f"message-id={message_id}\n")
    return path


def ledger_rows(engine: Engine, campaign_id: int) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(
                    Delivery.id,
                    Delivery.contact_id,
                    Delivery.state,
                    Delivery.message_id,
                    Delivery.skip_reason,
                    Delivery.attempts,
                ).where(Delivery.campaign_id == campaign_id)
            ).all()
        )


@pytest.mark.slow
def test_killed_senders_resume_and_resolve_without_losing_or_repeating_a_message(
    database_url: str,
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
        monkeypatch.setenv("ABM_DATABASE_URL", database_url)
        monkeypatch.setenv("ABM_EMAIL_BACKEND", "smtp")
        monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")  # a real backend needs one
        monkeypatch.setenv("ABM_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        monkeypatch.setenv("ABM_LEASE_SECONDS", str(LEASE_SECONDS))
        reset_settings()
        engine = get_engine(database_url)
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
            assert run == Run("exit 0", done=True), log.read_text()[-3000:]
            assert due_delivery_ids(engine, campaign_id, STEP) == []
            before = {row.id: row for row in ledger_rows(engine, campaign_id)}
            uncertain = {i for i, row in before.items() if row.state == "uncertain"}
            # every message in doubt is known by the Message-ID it went out with
            assert all(before[i].message_id for i in uncertain)

            # the operator settles them: what the relay logged was sent, the rest go again
            code, out, _ = run_abm(
                capsys, monkeypatch, "campaign", "resolve", str(CAMPAIGN),
                "--relay-log", str(relay_log(handler, tmp_path / "mail.log")),
                "--resend", "--json",
            )  # fmt: skip
            assert code == 0
            settled = json.loads(out)
            run = worker.run(kill_after=None)
            assert run == Run("exit 0", done=True), log.read_text()[-3000:]
        finally:
            worker.close()
    # the server has stopped: every message it took is in `handler.received`

    rows = ledger_rows(engine, campaign_id)
    by_state: dict[str, set[int]] = {}
    for row in rows:
        by_state.setdefault(row.state, set()).add(row.id)
    message_ids = {row.id: row.message_id for row in rows}
    sent = by_state.get("sent", set())
    received, without_message_id = received_message_ids(handler)
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    recipients = Counter(rcpt for message in handler.received for rcpt in message.rcpt_tos)

    with capsys.disabled():
        print(
            f"\ncrash/resume/resolve ({engine.dialect.name}): planned={planned} kills={kills} "
            f"senders={SENDERS} uncertain-before-resolving={len(uncertain)} "
            f"resolved-as-sent={settled['marked_sent']} resent={settled['resent']} "
            f"sent={len(sent)} skipped={len(by_state.get('skipped', ()))} "
            f"duplicates={duplicates} received={len(handler.received)}"
        )

    # (1) before resolving: at most one message in flight per sender per kill was in doubt
    assert len(uncertain) <= kills * SENDERS
    assert settled["marked_sent"] + settled["resent"] == len(uncertain)
    assert settled["left"] == 0
    # (2) after: every planned person has a message or a recorded reason
    assert len(rows) == planned
    assert set(by_state) <= {"sent", "skipped"}, ledger_summary(engine, campaign_id)
    assert all(row.skip_reason for row in rows if row.state == "skipped")
    # (3) every message the server took names its ledger row in its Message-ID header
    assert without_message_id == [], without_message_id[:5]
    # (4) every row the ledger calls sent reached the server exactly once; nobody got two
    assert [row_id for row_id in sorted(sent) if received[message_ids[row_id]] != 1] == []
    assert duplicates == 0, [mid for mid, count in received.items() if count > 1]
    assert max(recipients.values()) == 1
    # (5) the server got nothing the ledger does not count as sent
    assert set(received) == {message_ids[row_id] for row_id in sent}
    # (6) a claim that never reached the server gives its attempt back: a message sent was
    # attempted once, or twice when its first attempt was in doubt and it was sent again
    assert {row.attempts for row in rows if row.state == "sent" and row.id not in uncertain} == {1}
    assert kills >= MIN_KILLS, f"only {kills} kills landed before the work ran out"

"""The worker `test_crash_resume.py` kills, as a small fork server so a restart costs a fork
rather than seconds of imports. Settings come from the environment (`ABM_*`).

    python tests/crash_worker.py CAMPAIGN_FILE STEP [SENDERS]

The parent imports everything, prints `ready`, then for every `go` line on stdin forks a
fresh child in a process group of its own, prints `started PID` and waits for a `reap` line
before it collects the child (so the PID cannot be reused while the test may still SIGKILL
its group), then prints `exit CODE` or `signal NUMBER`. The child forks SENDERS - 1 more
senders into its group (default 1: itself alone); each builds its own engine and SMTP
connection and delivers its share of the due chunks of the step (`ABM_CHUNK_SIZE` rows), as
the campaign flow's concurrent tasks do, until nothing is due. When every sender is done the
child prints `done` and its counts as JSON. End of stdin ends the parent."""

from __future__ import annotations

import json
import os
import sys
import threading
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

from connectors.email import get_backend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.db import chunked, get_engine
from stages.delivery.ledger import DeliveryContext, campaign_id_for, due_delivery_ids
from stages.delivery.send import deliver

MAX_PASSES = 50  # rows that stay due pass after pass must not spin forever


def deliver_everything_due(campaign_file: str, step: str, sender: int = 0, senders: int = 1) -> int:
    """One sender's run: what a crashed run's replacement does, taking every `senders`-th
    chunk from the `sender`-th (the others' chunks, once they are gone, from any). Returns
    the exit code."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    key, campaign = load_campaign(Path(campaign_file))
    context = DeliveryContext(
        settings.database_url, campaign, campaign_id_for(engine, key), key, step
    )
    totals = {"sent": 0, "skipped": 0, "failed": 0, "dead": 0, "deferred": 0}
    for _ in range(MAX_PASSES):
        ids = due_delivery_ids(engine, context.campaign_id, step)
        if not ids:
            if sender == 0:
                print("done", json.dumps(totals), flush=True)
            return 0
        chunks = list(chunked(ids, settings.chunk_size))
        for chunk in chunks[sender::senders] or chunks:
            outcome = asdict(deliver(engine, settings, context, list(chunk), get_backend(settings)))
            for name in totals:
                totals[name] += outcome[name]
    print(f"rows still due after {MAX_PASSES} passes", file=sys.stderr, flush=True)
    return 2


def child(campaign_file: str, step: str, senders: int) -> None:
    """The group's first sender: forks the others, sends its share, waits for theirs."""
    os.setpgid(0, 0)
    others = []
    for sender in range(1, senders):
        pid = os.fork()
        if pid == 0:
            sender_process(campaign_file, step, sender, senders)
        others.append(pid)
    sender_process(campaign_file, step, 0, senders, others)


def sender_process(
    campaign_file: str, step: str, sender: int, senders: int, others: list[int] | None = None
) -> None:
    code = 1
    try:
        code = max(
            [deliver_everything_due(campaign_file, step, sender, senders)]
            + [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in others or []]
        )
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(campaign_file: str, step: str, senders: str = "1") -> int:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            print(f"expected go, got {line!r}", file=sys.stderr, flush=True)
            return 1
        # nothing but this thread may exist across a fork
        assert threading.active_count() == 1, threading.enumerate()
        pid = os.fork()
        if pid == 0:
            child(campaign_file, step, int(senders))
        with suppress(ProcessLookupError):  # as the child does: whichever runs first, it exists
            os.setpgid(pid, pid)
        print(f"started {pid}", flush=True)
        command = sys.stdin.readline()
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print(f"signal {os.WTERMSIG(status)}", flush=True)
        else:
            print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
        if command.strip() != "reap":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

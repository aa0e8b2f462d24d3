"""The worker `test_crash_resume.py` kills, as a small fork server so a restart costs a fork
rather than seconds of imports. Settings come from the environment (`ABM_*`).

    python tests/crash_worker.py CAMPAIGN_FILE STEP

The parent imports everything, prints `ready`, then for every `go` line on stdin forks a
fresh child, prints `started PID` and waits for a `reap` line before it collects the child
(so the PID cannot be reused while the test may still SIGKILL it), then prints `exit CODE`
or `signal NUMBER`. A child builds its own engine and SMTP connection and delivers every due
row of the step in chunks of `ABM_CHUNK_SIZE`, as the campaign flow does, until nothing is
due; then it prints `done` and its counts as JSON. End of stdin ends the parent."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from connectors.email import get_backend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.db import chunked, get_engine
from stages.delivery.ledger import DeliveryContext, campaign_id_for, due_delivery_ids
from stages.delivery.send import deliver

MAX_PASSES = 50  # rows that stay due pass after pass must not spin forever


def deliver_everything_due(campaign_file: str, step: str) -> int:
    """One worker run: what a crashed run's replacement does. Returns the exit code."""
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
            print("done", json.dumps(totals), flush=True)
            return 0
        for chunk in chunked(ids, settings.chunk_size):
            outcome = asdict(deliver(engine, settings, context, list(chunk), get_backend(settings)))
            for name in totals:
                totals[name] += outcome[name]
    print(f"rows still due after {MAX_PASSES} passes", file=sys.stderr, flush=True)
    return 2


def child(campaign_file: str, step: str) -> None:
    code = 1
    try:
        code = deliver_everything_due(campaign_file, step)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(campaign_file: str, step: str) -> int:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            print(f"expected go, got {line!r}", file=sys.stderr, flush=True)
            return 1
        # nothing but this thread may exist across a fork
        assert threading.active_count() == 1, threading.enumerate()
        pid = os.fork()
        if pid == 0:
            child(campaign_file, step)
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

"""`python -m bench` at a tiny size: every figure the README table needs is there and
positive, and the end-to-end run really wrote its `.eml` files and ledger rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRED = (
    "e2e_contacts_per_s",
    "naive_contacts_per_s",
    "raw_renders_per_s",
    "task_runs_per_100k",
    "peak_rss_mb",
    "e2e_smtp_contacts_per_s",
    "bare_smtplib_msgs_per_s",
    "raw_bulk_inserts_per_s",
    "naive_outbox_contacts_per_s",
    "outbox_vs_naive_x",
    "smtp_vs_naive_x",
    "outbox_vs_raw_renders",
    "smtp_vs_bare_smtplib",
    "bare_file_writes_per_s",
    "bare_bound_contacts_per_s",
    "outbox_vs_bare_bound",
)


@pytest.mark.slow
def test_bench_harness_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABM_", "PREFECT_"))}
    tiny = [
        "--naive-sample",
        "20",
        "--renders",
        "200",
        "--inserts",
        "500",
        "--smtp-messages",
        "100",
        "--file-writes",
        "100",
        "--settle-s",
        "0",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--contacts",
            "200",
            "--json",
            *tiny,
            "--work-dir",
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # nothing but the JSON object on stdout

    size = report["sizes"]["200"]
    for key in REQUIRED:
        assert size[key] > 0, key
    assert report["prefect_server_start_s"] > 0
    assert report["naive"]["sample"] == 20
    assert size["messages_sent"] == 200
    assert size["smtp_messages_sent"] == size["smtp_messages_received"] == 200
    assert size["task_runs"] >= 5  # score, target, map, one chunk, write back

    # the outbox run's own files: real .eml files, one per ledger row
    outbox = work / "runs" / "e2e_200_outbox" / "outbox"
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == size["eml_files"] == size["ledger_rows"] == 200
    assert b"Subject:" in files[0].read_bytes()
    run = json.loads((work / "results" / "e2e_200_outbox.json").read_text())
    assert run["ledger_by_state"] == {"sent": 200}

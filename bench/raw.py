"""The raw limits the end-to-end figures are held against: `python -m bench.raw ...`.

- bare Jinja2 renders/s of the campaign's HTML template, and the composer's full messages/s
  without database or Prefect (`bench.render_messages`);
- bare SQLAlchemy Core bulk inserts/s of contact rows into the same kind of database
  (`bench.import_contacts.raw_bulk_inserts_per_s`);
- bare file writes/s: each message's bytes to a new file (open, write, close), the least
  an outbox of one file per message costs;
- a bare smtplib loop over ONE reused connection to the same loopback SMTP server, sending
  real messages of the campaign (pre-rendered): the transport's own limit.

The result goes to `--out` as JSON."""

from __future__ import annotations

import argparse
import os
import smtplib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import CAMPAIGN, SECRET_KEY, SENDER, PeakMemory, write_result


def bare_smtplib_per_s(smtp_url: str, messages: list[bytes], count: int) -> float:
    """`count` messages over one connection: MAIL, RCPT, DATA for each, then one QUIT."""
    url = urlsplit(smtp_url)
    sender = SENDER.split("<")[1].rstrip(">")
    started = time.perf_counter()
    with smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 25) as server:
        for i in range(count):
            server.sendmail(sender, [f"person{i}@acme.example"], messages[i % len(messages)])
    return count / (time.perf_counter() - started)


def bare_file_writes_per_s(directory: Path, messages: list[bytes], count: int) -> float:
    """`count` new files, one message each: no temporary name, no link, no ledger."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i in range(count):
        descriptor = os.open(directory / f"{i}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(descriptor, messages[i % len(messages)])
        os.close(descriptor)
    return count / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    os.environ.update(ABM_STATE_DIR=str(state), ABM_SECRET_KEY=SECRET_KEY)
    from email.policy import compat32

    from abm.demo_data import write_demo_csvs
    from bench.import_contacts import raw_bulk_inserts_per_s
    from bench.render_messages import best_of_rounds, first_step_composer, sample_row
    from core.settings import get_settings, reset_settings
    from models.db import get_engine

    reset_settings()
    memory = PeakMemory()
    composer = first_step_composer(get_settings(), CAMPAIGN)
    raw, full = best_of_rounds(args.renders, composer, rounds=5)
    result: dict[str, Any] = {
        "renders": args.renders,
        "raw_renders_per_s": round(raw),
        "full_messages_per_s": round(full),
    }
    _, contacts_csv = write_demo_csvs(state / "data", contacts=args.inserts)
    engine = get_engine(args.database_url)
    result["inserts"] = args.inserts
    result["database"] = engine.dialect.name
    result["raw_bulk_inserts_per_s"] = round(
        raw_bulk_inserts_per_s(engine, contacts_csv, args.inserts)
    )
    crlf = compat32.clone(linesep="\r\n")
    messages = [composer.email(sample_row(i)).as_bytes(policy=crlf) for i in range(100)]
    result["file_writes"] = args.file_writes
    result["bare_file_writes_per_s"] = round(
        bare_file_writes_per_s(state / "bare-files", messages, args.file_writes)
    )
    if args.smtp_url:
        result["smtp_messages"] = args.smtp_messages
        result["message_bytes"] = round(sum(map(len, messages)) / len(messages))
        result["bare_smtplib_msgs_per_s"] = round(
            bare_smtplib_per_s(args.smtp_url, messages, args.smtp_messages)
        )
    memory.end_stage("raw")
    result["peak_rss_mb"] = memory.peak_mb
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--smtp-url", default=None)
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--inserts", type=int, default=100_000)
    parser.add_argument("--smtp-messages", type=int, default=5000)
    parser.add_argument("--file-writes", type=int, default=10_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    write_result(Path(args.out), run(args))


if __name__ == "__main__":
    main()

"""Engagement ingest throughput: `python -m bench.ingest_events [--events N] [--json]`.

N SendGrid-style events (opens, clicks, deliveries; unique event ids) for the people of a
demo dataset, through the same path as the webhook and `abm engagement ingest` (parse,
match by Message-ID or email, de-duplicate, store, apply suppressions), beside a plain
bulk insert of the same rows into an empty table in the same run. Goal: 20,000 events/s
on SQLite.

Each body of --batch events is one ingest call and one committed transaction, as a webhook
delivery must be, and its events carry the matched person and account (so every index and
foreign key is maintained); the plain insert is a single transaction of rows without them.
It bounds what SQLite can do on this machine at the moment: a ceiling to compare against,
not a figure to reach. The load average and the ingest's CPU seconds are reported beside
the rates: on a shared machine the wall-clock rate follows the load, the CPU time much less."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from abm.demo_data import write_demo_csvs
from connectors.email.sendgrid_events import parse_sendgrid
from core.settings import get_settings
from models.db import get_engine, migrate
from models.tables import EngagementEvent
from stages.engagement.ingest import ingest_sendgrid
from stages.importing import import_file

KINDS = ("delivered", "open", "open", "click")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine = get_engine(f"sqlite:///{folder / 'bench.db'}")
        migrate(engine)
        accounts, contacts = write_demo_csvs(folder, contacts=2000)
        import_file("accounts", accounts, engine, get_settings())
        import_file("contacts", contacts, engine, get_settings())
        emails = [line.split(",")[0] for line in contacts.read_text().splitlines()[1:-3]]
        start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
        events = [
            {
                "email": emails[i % len(emails)],
                "timestamp": start + i,
                "event": KINDS[i % len(KINDS)],
                "sg_event_id": f"bench-{i}",
                "sg_message_id": f"sg-{i // 4}",
            }
            for i in range(args.events)
        ]
        bodies = [
            json.dumps(events[i : i + args.batch]).encode()
            for i in range(0, len(events), args.batch)
        ]

        load_before = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        stored = 0
        for body in bodies:
            stored += ingest_sendgrid(engine, parse_sendgrid(body)).stored
        ours, ours_cpu = time.perf_counter() - started, time.process_time() - cpu_started

        plain_engine = get_engine(f"sqlite:///{folder / 'plain.db'}")
        migrate(plain_engine)
        rows = [
            {
                "provider": "sendgrid",
                "provider_event_id": e["sg_event_id"],
                "type": e["event"],
                "channel": "email",
                "occurred_at": datetime.fromtimestamp(e["timestamp"], UTC),
                "data": {},
                "created_at": datetime.now(UTC),
            }
            for e in events
        ]
        started = time.perf_counter()
        with plain_engine.begin() as connection:
            for i in range(0, len(rows), args.batch):
                connection.execute(EngagementEvent.__table__.insert(), rows[i : i + args.batch])
        plain = time.perf_counter() - started

    result = {
        "events": args.events,
        "stored": stored,
        "ingest_events_per_s": round(args.events / ours),
        "plain_insert_rows_per_s": round(args.events / plain),
    }
    result["ratio"] = round(result["ingest_events_per_s"] / result["plain_insert_rows_per_s"], 2)
    result["ingest_cpu_s"] = round(ours_cpu, 2)
    result["load_average"] = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>24}: {value}")


if __name__ == "__main__":
    main()

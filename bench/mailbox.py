"""Monitored-mailbox throughput: `python -m bench.mailbox [--messages N] [--json]`.

Starts a private Dovecot (the test suite's, `tests/imap_server.py`) and delivers N
messages into one INBOX's Maildir, as a local delivery agent would: replies, RFC 3464
hard and soft bounces, RFC 5965 complaints, RFC 3834 auto-replies and newsletters, in the
proportions a campaign's mailbox sees. Then it times one `poll_mailbox` over all of them
on a fresh SQLite database holding the people and the ledger rows they answer: fetch in
batches, classify, match, store with suppressions and the accounts' rollup, move the
cursor, set the keyword. Dovecot indexes the new mail when the poll first opens the
folder, so that is in the figure too. Goal: 200 messages/s. A second poll (nothing new)
is timed too.

Without Dovecot (Debian: apt-get install dovecot-imapd) it measures nothing and says so:
`{"skipped": "..."}`, exit 0, so a machine without it can still run the other benches."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import REPO_ROOT

GOAL_PER_S = 200.0
ACCOUNTS = 200
PEOPLE_PER_ACCOUNT = 5


def _tests_module(name: str) -> ModuleType:
    """A helper module of the test suite, loaded from its file (tests is not a package)."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:  # where they import each other from, as under pytest
        sys.path.append(tests)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _message_id(n: int) -> str:
    return f"<abm.{n}.bench@demo.example>"


def _people(engine: Any) -> list[str]:
    """ACCOUNTS x PEOPLE_PER_ACCOUNT people, each sent one message of one campaign."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.store import insert_new_rows, upsert_accounts, upsert_contacts
    from models.tables import Campaign, Contact, Delivery, utcnow

    domains = [f"account{n}.example" for n in range(ACCOUNTS)]
    upsert_accounts(engine, [{"domain": d, "attributes": {}, "technologies": []} for d in domains])
    emails = [f"person{p}@{d}" for d in domains for p in range(PEOPLE_PER_ACCOUNT)]
    upsert_contacts(
        engine,
        [{"email": e, "account_domain": e.split("@")[1], "attributes": {}} for e in emails],
    )
    now = utcnow()
    with session_scope(engine) as session:
        session.add(Campaign(key="bench", name="Bench"))
        session.flush()
        rows = session.execute(select(Contact.id, Contact.account_id, Contact.email)).all()
        by_email = {email: (cid, aid) for cid, aid, email in rows}
        insert_new_rows(
            session,
            engine,
            Delivery.__table__,
            [
                {
                    "campaign_id": 1,
                    "step": "intro",
                    "contact_id": by_email[email][0],
                    "account_id": by_email[email][1],
                    "channel": "email",
                    "state": "sent",
                    "message_id": _message_id(n),
                    "attempts": 1,
                    "due_at": now,
                    "sent_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for n, email in enumerate(emails)
            ],
            ["campaign_id", "step", "contact_id"],
        )
    return emails


def compose(count: int, emails: list[str]) -> list[bytes]:
    """`count` messages about our messages to `emails`, in a campaign mailbox's mix."""
    samples = _tests_module("mail_samples")
    messages = []
    for n in range(count):
        person = n % len(emails)
        email, ours, own = emails[person], _message_id(person), f"<in.{n}@bench.example>"
        kind = n % 20
        if kind < 10:
            messages.append(samples.reply(own, ours, email))
        elif kind < 14:
            messages.append(samples.dsn(own, ours, email))
        elif kind < 16:
            messages.append(samples.dsn(own, ours, email, "delayed", "4.4.7"))
        elif kind < 18:
            messages.append(samples.auto_reply(own, ours, email))
        elif kind < 19:
            messages.append(samples.arf(own, ours, email))
        else:
            messages.append(samples.newsletter(own))
    return messages


def measure(count: int) -> dict[str, Any]:
    imap_server = _tests_module("imap_server")
    try:
        server_context = imap_server.dovecot()
        server = server_context.__enter__()
    except FileNotFoundError as exc:
        return {"skipped": str(exc)}
    try:
        return _measure(server, count)
    finally:
        server_context.__exit__(None, None, None)


def _measure(server: Any, count: int) -> dict[str, Any]:
    from core.settings import Settings
    from models.db import get_engine, migrate
    from stages.engagement.mailbox_poll import poll_mailbox

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = get_engine(url)
        migrate(engine)
        emails = _people(engine)
        messages = compose(count, emails)
        started = time.perf_counter()
        server.deliver("bench", messages)
        deliver_s = time.perf_counter() - started
        settings = Settings(
            database_url=url,
            state_dir=Path(tmp) / "state",
            imap_url=server.url("bench"),
            secret_key="bench-secret-key",
        )
        started, cpu = time.perf_counter(), time.process_time()
        report = poll_mailbox(engine, settings)
        poll_s, poll_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        again = poll_mailbox(engine, settings)
        idle_s = time.perf_counter() - started
        engine.dispose()
    per_s = round(report.read / poll_s, 1)
    return {
        "messages": count,
        "mailbox_bytes": sum(len(m) for m in messages),
        "deliver_s": round(deliver_s, 2),
        "poll_s": round(poll_s, 2),
        "poll_cpu_s": round(poll_cpu_s, 2),
        "mailbox_messages_per_s": per_s,
        "goal_per_s": GOAL_PER_S,
        "goal_met": per_s >= GOAL_PER_S,
        "read": report.read,
        "stored": report.stored,
        "by_kind": {
            k: getattr(report, k)
            for k in (
                "replies",
                "auto_replies",
                "hard_bounces",
                "soft_bounces",
                "complaints",
                "other",
                "unmatched",
            )
        },
        "second_poll_s": round(idle_s, 3),
        "second_poll_read": again.read,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    result = measure(args.messages)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    elif "skipped" in result:
        print(f"mailbox poll: not measured: {result['skipped']}")
    else:
        print(
            f"mailbox poll: {result['read']:,} messages in {result['poll_s']} s = "
            f"{result['mailbox_messages_per_s']:,} messages/s (goal >= {GOAL_PER_S:g}: "
            f"{'ok' if result['goal_met'] else 'MISSED'}); {result['stored']:,} events stored; "
            f"a second poll read {result['second_poll_read']} in {result['second_poll_s']} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

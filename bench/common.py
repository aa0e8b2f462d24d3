"""What the benchmark modules share: where things are, fresh databases, peak memory, the
demo rows and the result files the child processes hand back to `python -m bench`."""

from __future__ import annotations

import json
import os
import resource
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.settings import DEFAULTS_DIR, REPO_ROOT

BENCH_DIR = Path(__file__).resolve().parent
CAMPAIGN = BENCH_DIR / "campaign.yaml"
"""The benchmark campaign: the demo's intro email to every contact, caps on but high."""
SECRET_KEY = "bench-secret-key"
SENDER = "Demo Co <marketing@demo.example>"

__all__ = [
    "BENCH_DIR",
    "CAMPAIGN",
    "REPO_ROOT",
    "ChildPeakMemory",
    "PeakMemory",
    "bench_icp_rules",
    "fresh_database",
    "is_postgres_url",
    "write_result",
]


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and make_url(url).get_backend_name() == "postgresql"


@contextmanager
def fresh_database(server_url: str | None, folder: Path, name: str) -> Iterator[str]:
    """The URL of an empty database for one run, removed afterwards.

    SQLite (`server_url` None or a SQLite URL): a new file `folder/name.db`. PostgreSQL: a
    new database on that server (`CREATE DATABASE`, so the user needs that right), dropped
    at the end; the database the URL names is never written to."""
    if not is_postgres_url(server_url):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.db"
        for stale in (path, path.with_suffix(".db-wal"), path.with_suffix(".db-shm")):
            stale.unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    assert server_url is not None
    database = f"abm_bench_{name}_{uuid.uuid4().hex[:8]}".lower()
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        yield make_url(server_url).set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def bench_icp_rules(folder: Path) -> Path:
    """The default ICP rules with a tier-3 threshold of 0: every account is scored by the
    real rules and lands in a tier, so every contact is in the campaign's audience."""
    rules = yaml.safe_load((DEFAULTS_DIR / "icp.yaml").read_text(encoding="utf-8"))
    rules["tiers"][3] = 0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "icp-every-account.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


class PeakMemory:
    """Peak resident memory of this process, per stage.

    Linux lets a process reset its high-water mark (`/proc/self/clear_refs`, value 5), so
    each stage's peak is its own; the process's peak is the largest of them."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.resettable = self._reset()

    @staticmethod
    def current_peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    @staticmethod
    def _reset() -> bool:
        try:
            with open(f"/proc/{os.getpid()}/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            return False
        return True

    def end_stage(self, name: str) -> None:
        """Record the peak since the previous stage ended, then start measuring afresh."""
        self.stages[name] = round(self.current_peak_mb(), 1)
        self._reset()

    @property
    def peak_mb(self) -> float:
        return max([*self.stages.values(), 0.0])


class ChildPeakMemory:
    """The largest own peak (VmHWM) among this process's descendants, sampled by a thread.

    `getrusage(RUSAGE_CHILDREN)` cannot say this: a spawned child is forked before it
    execs, and Linux carries the parent's size at that moment into the child's maxrss, so a
    chunk process would seem as large as the flow that started it. VmHWM belongs to the
    child's own image; sampling every quarter second catches each pool process, which lives
    for a whole step."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.peak_kb = 0
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildPeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        return round(self.peak_kb / 1024, 1) if self.peak_kb else None

    def _sample(self) -> None:
        while not self._stop.wait(self._every_s):
            for pid in _descendants(os.getpid()):
                self.peak_kb = max(self.peak_kb, _vm_hwm_kb(pid))


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as handle:
                    children = [int(child) for child in handle.read().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Children hand their numbers back in a file, so stray output cannot corrupt them."""
    path.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# As in the demo dataset (~2,000 contacts in ~200 accounts).
PEOPLE_PER_ACCOUNT = 10


def seed_sent_ledger(
    database_url: str,
    messages: int,
    campaign_key: str,
    steps: tuple[str, str],
    sent: Any,
    roles: tuple[str, ...] = (),
) -> list[tuple[int, str, int, str]]:
    """`messages` sent messages (both steps for each of messages/2 people, 10 people an
    account) of one campaign in a fresh database, without Message-IDs (the caller sets
    them); their (delivery id, step, contact id, email), in id order. `roles` are handed
    out to the people in turn (none: no role)."""
    from sqlalchemy import select

    from models.db import get_engine, migrate
    from models.tables import Account, Campaign, Contact, Delivery, utcnow

    engine = get_engine(database_url)
    migrate(engine)
    now = utcnow()
    people = (messages + 1) // 2
    accounts_n = max(1, people // PEOPLE_PER_ACCOUNT)
    stamps = {"created_at": now, "updated_at": now}
    with engine.begin() as connection:
        connection.execute(
            Account.__table__.insert(),
            [
                {
                    "domain": f"account{i}.example",
                    "name": f"Account {i}",
                    "technologies": [],
                    "attributes": {},
                    "icp_reasons": [],
                    "stage": "target",
                    "engagement_score": 0.0,
                    "tier": 1 + i % 3,
                    **stamps,
                }
                for i in range(accounts_n)
            ],
        )
        accounts = list(connection.execute(select(Account.id).order_by(Account.id)).scalars())
        connection.execute(
            Contact.__table__.insert(),
            [
                {
                    "email": f"person{i}@account{i % accounts_n}.example",
                    "account_id": accounts[i % accounts_n],
                    "status": "active",
                    "role": roles[i % len(roles)] if roles else None,
                    "attributes": {},
                    **stamps,
                }
                for i in range(people)
            ],
        )
        contacts = connection.execute(
            select(Contact.id, Contact.account_id).order_by(Contact.id)
        ).all()
        campaign = connection.execute(
            Campaign.__table__.insert().values(
                key=campaign_key, name=campaign_key.replace("-", " "), status="active", **stamps
            )
        ).inserted_primary_key[0]
        connection.execute(
            Delivery.__table__.insert(),
            [
                {
                    "campaign_id": campaign,
                    "step": step,
                    "contact_id": contact,
                    "account_id": account,
                    "channel": "email",
                    "variant": "a",
                    "state": "sent",
                    "due_at": sent,
                    "sent_at": sent,
                    "attempts": 1,
                    **stamps,
                }
                for step in steps
                for contact, account in contacts
            ][:messages],
        )
        rows = connection.execute(
            select(Delivery.id, Delivery.step, Contact.id, Contact.email)
            .join(Contact, Contact.id == Delivery.contact_id)
            .order_by(Delivery.id)
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def set_message_ids(database_url: str, message_ids: dict[int, str]) -> None:
    """Give each ledger row (by id) its Message-ID, in one executemany."""
    from sqlalchemy import bindparam

    from models.db import get_engine
    from models.tables import Delivery

    engine = get_engine(database_url)
    table = Delivery.__table__
    with engine.begin() as connection:
        connection.execute(
            table.update()
            .where(table.c.id == bindparam("_id"))
            .values(message_id=bindparam("_mid")),
            [{"_id": row_id, "_mid": mid} for row_id, mid in message_ids.items()],
        )
    engine.dispose()

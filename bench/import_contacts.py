"""Import throughput: `python -m bench.import_contacts [--contacts N] [--database-url URL]`.

Times the real import path (read, validate, classify titles, bulk upsert) for N demo
contacts in a fresh process, which also gives the import's peak memory (`ru_maxrss`: the
data generator and the baselines below hold far more), then a re-import of the same file
(must change nothing), beside a naive
baseline measured in the same run: one ORM object per row with a lookup by email first,
which is how a first version of an importer is usually written; and beside the raw limit,
a bare SQLAlchemy Core bulk insert of the same rows into a table without constraints.
`python -m bench` times its imports with `timed_import` and its raw insert limit with
`raw_bulk_inserts_per_s`."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Engine, MetaData, Table
from sqlmodel import Session, select

from abm.demo_data import write_demo_csvs
from core.settings import Settings, get_settings
from models.db import get_engine, migrate
from models.tables import Account, Contact, utcnow
from stages.committee.titles import classify_title
from stages.importing import import_file


@dataclass
class ImportTiming:
    """What importing one demo dataset (accounts, then contacts) took."""

    accounts_s: float
    contacts_s: float
    imported: int
    updated: int
    rejected: int

    @property
    def seconds(self) -> float:
        return self.accounts_s + self.contacts_s


def timed_import(
    engine: Engine, settings: Settings, accounts_csv: Path, contacts_csv: Path
) -> ImportTiming:
    """`abm import accounts` then `abm import contacts`, through the real import code."""
    started = time.perf_counter()
    import_file("accounts", accounts_csv, engine, settings)
    accounts_s = time.perf_counter() - started
    started = time.perf_counter()
    report = import_file("contacts", contacts_csv, engine, settings)
    contacts_s = time.perf_counter() - started
    return ImportTiming(
        accounts_s, contacts_s, report.imported, report.updated, len(report.rejects)
    )


def contacts_import_in_fresh_process(url: str, contacts_csv: Path) -> dict[str, float]:
    """`abm import contacts` in a new interpreter whose accounts are already imported:
    seconds, rows imported and its peak resident memory, which no other work inflates."""
    command = [sys.executable, "-m", "bench.import_contacts", "--only-import", str(contacts_csv)]
    child = subprocess.run(
        [*command, "--database-url", url],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(child.stdout)


def _only_import(url: str, contacts_csv: Path) -> dict[str, float]:
    started = time.perf_counter()
    report = import_file("contacts", contacts_csv, get_engine(url), get_settings())
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "imported": report.imported,
        "updated": report.updated,
        "rejected": len(report.rejects),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def naive_import(engine: Engine, path: Path, limit: int) -> int:
    """Row by row through the ORM: look the contact up, then add or change it."""
    done = 0
    with Session(engine) as session, path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if done >= limit:
                break
            if "@" not in row["email"]:
                continue
            account = session.exec(
                select(Account).where(Account.domain == row["account_domain"])
            ).first()
            if account is None:
                continue
            contact = session.exec(select(Contact).where(Contact.email == row["email"])).first()
            found = classify_title(row["title"])
            if contact is None:
                contact = Contact(email=row["email"], account_id=account.id)
            contact.first_name, contact.last_name = row["first_name"], row["last_name"]
            contact.title, contact.role = row["title"], found.role
            contact.seniority, contact.function = found.seniority, found.function
            session.add(contact)
            done += 1
        session.commit()
    return done


def raw_bulk_inserts_per_s(
    engine: Engine, contacts_csv: Path, limit: int, batch: int = 5000
) -> float:
    """Bare SQLAlchemy Core `executemany` of contact rows, in one transaction, into a fresh
    table shaped like `contact` but with no index, unique or foreign key: the database's
    own limit for the writes an import does. The table is dropped afterwards."""
    table = Table(
        "bench_raw_contact",
        MetaData(),
        *(
            Column(column.name, column.type, primary_key=column.primary_key)
            for column in Contact.__table__.columns
        ),
    )
    now = utcnow()
    with contacts_csv.open(encoding="utf-8", newline="") as handle:
        rows = [
            {
                "email": row["email"],
                "account_id": 1,
                "first_name": row["first_name"],
                "last_name": row["last_name"],
                "title": row["title"],
                "linkedin_url": row["linkedin_url"] or None,
                "country": row["country"] or None,
                "timezone": row["timezone"] or None,
                "consent": row["consent"] or None,
                "status": "active",
                "attributes": {},
                "created_at": now,
                "updated_at": now,
            }
            for row in itertools.islice(csv.DictReader(handle), limit)
        ]
    table.drop(engine, checkfirst=True)
    table.create(engine)
    try:
        started = time.perf_counter()
        with engine.begin() as connection:
            for start in range(0, len(rows), batch):
                connection.execute(table.insert(), rows[start : start + batch])
        return len(rows) / (time.perf_counter() - started)
    finally:
        table.drop(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only-import", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only_import:
        print(json.dumps(_only_import(args.database_url, args.only_import)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        engine = get_engine(url)
        migrate(engine)
        accounts_csv, contacts_csv = write_demo_csvs(folder, contacts=args.contacts)
        settings = get_settings()
        import_file("accounts", accounts_csv, engine, settings)
        first = contacts_import_in_fresh_process(url, contacts_csv)
        started = time.perf_counter()
        again = import_file("contacts", contacts_csv, engine, settings)
        reimport_seconds = time.perf_counter() - started
        assert (again.imported, again.updated) == (0, 0), "re-import changed rows"
        raw = raw_bulk_inserts_per_s(engine, contacts_csv, args.contacts)

        naive_engine = get_engine(f"sqlite:///{folder / 'naive.db'}")
        migrate(naive_engine)
        import_file("accounts", accounts_csv, naive_engine, settings)
        started = time.perf_counter()
        naive_rows = naive_import(naive_engine, contacts_csv, args.naive_rows)
        naive_seconds = time.perf_counter() - started

    result = {
        "contacts": args.contacts,
        "database": engine.dialect.name,
        "imported": first["imported"],
        "rejected": first["rejected"],
        "import_seconds": round(first["seconds"], 2),
        "import_rows_per_s": round(args.contacts / first["seconds"]),
        "import_peak_rss_mb": round(first["peak_rss_mb"]),
        "reimport_seconds": round(reimport_seconds, 2),
        "naive_rows": naive_rows,
        "naive_rows_per_s": round(naive_rows / naive_seconds),
        "raw_bulk_inserts_per_s": round(raw),
    }
    result["speedup_vs_naive"] = round(result["import_rows_per_s"] / result["naive_rows_per_s"], 1)
    result["share_of_raw_inserts"] = round(result["import_rows_per_s"] / raw, 2)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()

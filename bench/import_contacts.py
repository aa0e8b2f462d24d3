"""Import throughput: `python -m bench.import_contacts [--contacts N] [--database-url URL]`.

Times the real import path (read, validate, classify titles, bulk upsert) for N demo
contacts, then a re-import of the same file (must change nothing), beside a naive
baseline measured in the same run: one ORM object per row with a lookup by email first,
which is how a first version of an importer is usually written."""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from sqlmodel import Session, select

from abm.demo_data import write_demo_csvs
from abm.settings import get_settings
from flows.import_csv import import_file
from flows.stakeholders import classify_title
from models.db import get_engine, migrate
from models.tables import Account, Contact


def naive_import(engine, path: Path, limit: int) -> int:  # type: ignore[no-untyped-def]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        engine = get_engine(url)
        migrate(engine)
        accounts_csv, contacts_csv = write_demo_csvs(folder, contacts=args.contacts)
        settings = get_settings()
        import_file("accounts", accounts_csv, engine, settings)

        started = time.perf_counter()
        first = import_file("contacts", contacts_csv, engine, settings)
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = import_file("contacts", contacts_csv, engine, settings)
        reimport_seconds = time.perf_counter() - started
        assert (again.imported, again.updated) == (0, 0), "re-import changed rows"

        naive_engine = get_engine(f"sqlite:///{folder / 'naive.db'}")
        migrate(naive_engine)
        import_file("accounts", accounts_csv, naive_engine, settings)
        started = time.perf_counter()
        naive_rows = naive_import(naive_engine, contacts_csv, args.naive_rows)
        naive_seconds = time.perf_counter() - started

    result = {
        "contacts": args.contacts,
        "database": engine.dialect.name,
        "imported": first.imported,
        "rejected": len(first.rejects),
        "import_seconds": round(import_seconds, 2),
        "import_rows_per_s": round(args.contacts / import_seconds),
        "reimport_seconds": round(reimport_seconds, 2),
        "naive_rows": naive_rows,
        "naive_rows_per_s": round(naive_rows / naive_seconds),
    }
    result["speedup_vs_naive"] = round(result["import_rows_per_s"] / result["naive_rows_per_s"], 1)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()

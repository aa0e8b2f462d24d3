"""Intent import throughput: `python -m bench.import_intent [--rows N] [--accounts N]
[--unknown-share F] [--topics-weighted] [--database-url URL] [--json]`.

Times `abm import intent` (read, validate, store as events, roll up the accounts touched)
of a Bombora-style export of N rows (`Domain, Topic Name, Composite Score, Week`: 50
topics over the last 8 weeks) against a database of imported accounts, in a fresh process
(for its peak memory), then a re-import of the same file, which must store nothing; a
share of rows names domains that are not accounts, which are rejected as the real import
rejects them. `--topics-weighted` gives every topic a weight, so that the rollup after the
import has scores to compute (without it the shipped rules weigh no topic)."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from core.settings import DEFAULTS_DIR, get_settings
from models.db import get_engine, migrate
from models.tables import utcnow
from stages.importing import import_file

TOPICS = [f"Topic {n:02d} Data Integration" for n in range(25)] + [
    f"Topic {n:02d} Office Supplies" for n in range(25)
]


def write_files(folder: Path, rows: int, accounts: int, unknown_share: float) -> tuple[Path, Path]:
    """accounts.csv and intent.csv, the same for the same arguments."""
    chance = random.Random(42)
    accounts_csv = folder / "accounts.csv"
    with accounts_csv.open("w", encoding="utf-8") as handle:
        handle.write("domain,name\n")
        for n in range(accounts):
            handle.write(f"company{n}.example,Company {n}\n")
    today = utcnow().date()
    weeks = [today - timedelta(days=today.weekday() + 7 * k) for k in range(8)]
    intent_csv = folder / "intent.csv"
    seen: set[tuple[int, int, int]] = set()
    with intent_csv.open("w", encoding="utf-8") as handle:
        handle.write("Company Name,Domain,Category,Topic Name,Composite Score,Week\n")
        written = 0
        while written < rows:
            account = chance.randrange(accounts)
            topic, week = chance.randrange(len(TOPICS)), chance.randrange(len(weeks))
            if (account, topic, week) in seen:
                continue
            seen.add((account, topic, week))
            domain = (
                f"other{account}.example"
                if chance.random() < unknown_share
                else f"company{account}.example"
            )
            handle.write(
                f"Company {account},{domain},Technology,{TOPICS[topic]},"
                f"{chance.randint(20, 100)},{weeks[week].isoformat()}\n"
            )
            written += 1
    return accounts_csv, intent_csv


def _only_import(url: str, path: Path) -> dict[str, float]:
    started = time.perf_counter()
    report = import_file("intent", path, get_engine(url), get_settings())
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "imported": report.imported,
        "updated": report.updated,
        "rejected": len(report.rejects),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--unknown-share", type=float, default=0.1)
    parser.add_argument("--topics-weighted", action="store_true")
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
        accounts_csv, intent_csv = write_files(folder, args.rows, args.accounts, args.unknown_share)
        env = dict(os.environ)
        if args.topics_weighted:
            rules = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
            weighted = "topics:\n  default_weight: 0\n  weights:\n"
            weighted += '    - topic: "*data integration"\n      weight: 10\n'
            path = folder / "rules.yaml"
            path.write_text(
                rules.replace("topics:\n  default_weight: 0\n  weights: []\n", weighted),
                encoding="utf-8",
            )
            env["ABM_ENGAGEMENT_RULES"] = str(path)
            os.environ["ABM_ENGAGEMENT_RULES"] = str(path)
        import_file("accounts", accounts_csv, engine, get_settings())
        command = [sys.executable, "-m", "bench.import_intent", "--only-import", str(intent_csv)]
        child = subprocess.run(
            [*command, "--database-url", url], check=True, capture_output=True, text=True, env=env
        )
        first = json.loads(child.stdout)
        started = time.perf_counter()
        again = import_file("intent", intent_csv, engine, get_settings())
        reimport = time.perf_counter() - started
        assert (again.imported, again.updated) == (0, 0), "re-import changed rows"
    result = {
        "rows": args.rows,
        "accounts": args.accounts,
        "import_s": round(first["seconds"], 2),
        "rows_per_s": round(args.rows / first["seconds"]),
        "imported": first["imported"],
        "rejected": first["rejected"],
        "peak_rss_mb": round(first["peak_rss_mb"]),
        "reimport_s": round(reimport, 2),
        "reimport_rows_per_s": round(args.rows / reimport),
        "topics_weighted": args.topics_weighted,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()

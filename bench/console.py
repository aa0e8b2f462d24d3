"""The console's pages at the product's scale: `python -m bench.console [--repeat N]
[--database-url URL] [--json]`. Goal: every page answers within 300 ms on this machine.

It seeds 30,000 accounts (tiers, stages, ICP scores, engagement by source), 100,000 people
(committee roles, a few unsubscribed) and one campaign with a ledger row for each of them
(sent, planned, skipped, failed, due times) straight into a fresh database in bulk, writes
an operator to the users file, signs in through the real sign-in form, then times GET
requests through the whole app (`abm serve`'s, in this process through httpx's
ASGITransport: middleware, session check, queries, templates): the accounts list's first
page, filtered each way, sorted, a deep page, an account, the campaign's people, filtered by
state and by account, a deep page. N times each; median and p95 in ms beside the goal.

SQLite by default (a file in a temporary folder); with --database-url (or ABM_DATABASE_URL)
naming a PostgreSQL server, a fresh database on it, dropped afterwards. `python -m bench`
runs it once in a child of its own (`--console-repeat`, 0 to skip)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import SECRET_KEY, fresh_database, write_result

GOAL_MS = 300.0
ACCOUNTS = 30_000
CONTACTS = 100_000
CAMPAIGN_KEY = "bench-console"
OPERATOR, PASSWORD = "bench-operator", "a long bench pass phrase"
STAGES = ("target", "aware", "engaged", "mqa", "opportunity", "customer")
ROLES = ("decision_maker", "approver", "specifier", "reviewer", "influencer", "user", None)
# the ledger's states, one row in ten each (sent: six in ten)
STATES = ("sent",) * 6 + ("planned", "skipped", "failed", "deferred")
BASE = "https://console.bench"  # https: the session cookie is Secure
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _campaign_file(folder: Path) -> Path:
    path = folder / "console-campaign.yaml"
    path.write_text(
        f"key: {CAMPAIGN_KEY}\nname: Console benchmark\naudience:\n  tiers: [1, 2, 3]\n"
        "consent_required: false\nsteps:\n  - id: intro\n    template: intro\n"
        "  - id: follow-up\n    template: intro\n    wait_days: 3\n",
        encoding="utf-8",
    )
    return path


def seed(database_url: str, folder: Path, accounts: int, contacts: int) -> dict[str, Any]:
    """The accounts, people and campaign ledger, in bulk inserts; what the timed URLs
    need (a busy account's domain, the campaign key) and how long seeding took."""
    from sqlalchemy import select

    from models.db import get_engine, migrate
    from models.tables import Account, Campaign, Contact, Delivery, EngagementEvent, utcnow

    started = time.perf_counter()
    engine = get_engine(database_url)
    migrate(engine)
    now = utcnow()
    stamps = {"created_at": now, "updated_at": now}
    sources = ("email", "linkedin", "web", "intent", "other")
    with engine.begin() as connection:
        connection.execute(
            Account.__table__.insert(),
            [
                {
                    "domain": f"account{i}.example",
                    "name": f"Account {i}",
                    "industry": ("Software", "Manufacturing", "Retail", "Finance")[i % 4],
                    "technologies": [],
                    "attributes": {},
                    "icp_score": (i * 37) % 101,
                    "icp_reasons": [f"+{(i * 37) % 101} bench"],
                    "tier": None if i % 10 == 9 else 1 + i % 3,
                    "stage": STAGES[(i // 3) % len(STAGES)],
                    "engagement_score": float((i * 7919) % 1000) / 10,
                    "engagement_sources": None
                    if i % 4 == 3
                    else {
                        **{s: float((i + n) % 5 == 0) * 3.5 for n, s in enumerate(sources)},
                        "breadth": 1.0,
                        "as_of": now.isoformat(),
                    },
                    **stamps,
                }
                for i in range(accounts)
            ],
        )
        ids = list(connection.execute(select(Account.id).order_by(Account.id)).scalars())
        connection.execute(
            Contact.__table__.insert(),
            [
                {
                    "email": f"person{i}@account{i % accounts}.example",
                    "account_id": ids[i % accounts],
                    "first_name": f"First{i}",
                    "last_name": f"Last{i}",
                    "title": "Director",
                    "status": "unsubscribed" if i % 50 == 49 else "active",
                    "role": ROLES[(i // accounts) % len(ROLES)] if i % 11 else None,
                    "attributes": {},
                    **stamps,
                }
                for i in range(contacts)
            ],
        )
        people = connection.execute(
            select(Contact.id, Contact.account_id).order_by(Contact.id)
        ).all()
        campaign_id = connection.execute(
            Campaign.__table__.insert().values(
                key=CAMPAIGN_KEY,
                name="Console benchmark",
                source_path=str(_campaign_file(folder)),
                status="active",
                **stamps,
            )
        ).inserted_primary_key[0]
        connection.execute(
            Delivery.__table__.insert(),
            [
                {
                    "campaign_id": campaign_id,
                    "step": "intro",
                    "contact_id": contact,
                    "account_id": account,
                    "channel": "email",
                    "variant": "ab"[n % 2],
                    "state": STATES[n % len(STATES)],
                    "due_at": now + timedelta(minutes=n % 5000 - 2500),
                    "sent_at": now - timedelta(minutes=n % 5000)
                    if STATES[n % len(STATES)] == "sent"
                    else None,
                    "skip_reason": "capped" if STATES[n % len(STATES)] == "skipped" else None,
                    "message_id": f"<bench-{n}@console.example>"
                    if STATES[n % len(STATES)] == "sent"
                    else None,
                    "attempts": 1,
                    **stamps,
                }
                for n, (contact, account) in enumerate(people)
            ],
        )
        # responses to half the messages sent: an open each, a click every third, a reply
        # every tenth (the funnel joins them to the ledger by message id)
        connection.execute(
            EngagementEvent.__table__.insert(),
            [
                {
                    "provider": "bench",
                    "provider_event_id": f"{kind}-{n}",
                    "type": kind,
                    "channel": "email",
                    "occurred_at": now,
                    "account_id": account,
                    "contact_id": contact,
                    "campaign_id": campaign_id,
                    "message_id": f"<bench-{n}@console.example>",
                    "data": {},
                    "created_at": now,
                }
                for n, (contact, account) in enumerate(people)
                if STATES[n % len(STATES)] == "sent" and n % 2 == 0
                for kind in ("open", "click", "reply")
                if kind == "open" or (kind == "click" and n % 3 == 0) or n % 10 == 0
            ],
        )
    from stages.delivery.people import campaign_people

    middle = next(campaign_people(engine, campaign_id, ["intro"], limit=1, offset=len(people) // 2))
    engine.dispose()
    return {
        "seed_s": round(time.perf_counter() - started, 1),
        "busy_domain": "account7.example",
        "deep_after": (middle["delivery_id"], len(people) // 2 + 1),
    }


def urls(busy_domain: str, deep_after: tuple[int, int]) -> list[tuple[str, str]]:
    """(label, path) of every timed page: the lists' first pages, each filter, a sort, a
    deep page, one account."""
    deep_accounts = ACCOUNTS // 50 * 4 // 5
    campaign = f"/console/campaigns/{CAMPAIGN_KEY}"
    return [
        ("accounts, first page", "/console/accounts"),
        ("accounts, tier 1", "/console/accounts?tier=1"),
        ("accounts, stage engaged", "/console/accounts?stage=engaged"),
        ("accounts, missing a decision maker", "/console/accounts?coverage=missing:decision_maker"),
        ("accounts, engaged by email", "/console/accounts?source=email"),
        ("accounts, by engagement", "/console/accounts?sort=engagement"),
        (f"accounts, page {deep_accounts}", f"/console/accounts?page={deep_accounts}"),
        ("an account", f"/console/accounts/{busy_domain}"),
        ("campaign people, first page", campaign),
        ("campaign people, failed", f"{campaign}?state=failed"),
        ("campaign people, one account", f"{campaign}?account={busy_domain}"),
        (
            f"campaign people, rows from {deep_after[1]:,}",
            f"{campaign}?after={deep_after[0]}&start={deep_after[1]}",
        ),
    ]


async def _sign_in(client: Any) -> None:
    """Through the sign-in form, as a browser does: its CSRF token, then the POST."""
    form = await client.get("/console/login")
    token = _CSRF.search(form.text)
    fields = {"name": OPERATOR, "password": PASSWORD}
    if token:
        fields["csrf_token"] = token.group(1)
    answer = await client.post("/console/login", data=fields)
    if answer.status_code not in (302, 303) or "/login" in answer.headers.get("location", ""):
        raise SystemExit(f"could not sign in: {answer.status_code} {answer.text[:300]}")


async def _time(app: Any, targets: list[tuple[str, str]], repeat: int) -> list[dict[str, Any]]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        await _sign_in(client)
        rows = []
        for label, path in targets:
            answer = await client.get(path)  # once untimed: templates compiled, caches warm
            if answer.status_code != 200:
                raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            rows.append(
                {
                    "page": label,
                    "path": path,
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(p95, 1),
                    "bytes": len(answer.content),
                }
            )
        return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed a fresh database, add the operator, time every page."""
    folder = Path(args.state_dir)
    os.environ.update(
        ABM_DATABASE_URL=args.database_url,
        ABM_STATE_DIR=str(folder),
        ABM_SECRET_KEY=SECRET_KEY,
    )
    from abm.console.users import add_user, users_path
    from abm.webhooks import create_app
    from core.settings import get_settings, reset_settings

    reset_settings()
    seeded = seed(args.database_url, folder, args.accounts, args.contacts)
    add_user(users_path(get_settings()), OPERATOR, "operator", PASSWORD, replace=True)
    app = create_app(get_settings())
    rows = asyncio.run(_time(app, urls(seeded["busy_domain"], seeded["deep_after"]), args.repeat))
    from sqlalchemy.engine import make_url

    return {
        "database": make_url(args.database_url).get_backend_name(),
        "accounts": args.accounts,
        "contacts": args.contacts,
        "ledger_rows": args.contacts,
        "repeat": args.repeat,
        "seed_s": seeded["seed_s"],
        "goal_ms": GOAL_MS,
        "pages": rows,
        "slowest_p95_ms": max(row["p95_ms"] for row in rows),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def table(result: dict[str, Any]) -> str:
    """The pages as a table, each p95 beside the goal."""
    lines = [
        f"console pages on {result['database']}: {result['accounts']:,} accounts, "
        f"{result['contacts']:,} people, {result['ledger_rows']:,} ledger rows; "
        f"{result['repeat']} requests a page (seeded in {result['seed_s']} s)",
        f"{'page':<38} {'median ms':>10} {'p95 ms':>8}  goal {GOAL_MS:.0f} ms",
    ]
    for row in result["pages"]:
        verdict = "under" if row["p95_ms"] <= GOAL_MS else "OVER"
        lines.append(f"{row['page']:<38} {row['median_ms']:>10} {row['p95_ms']:>8}  {verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--repeat", type=int, default=20, metavar="N", help="requests a page")
    parser.add_argument("--accounts", type=int, default=ACCOUNTS, help=argparse.SUPPRESS)
    parser.add_argument("--contacts", type=int, default=CONTACTS, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default=None, help="a fresh folder (default: temporary)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ABM_DATABASE_URL"),
        help="PostgreSQL server to make a fresh database on (default: a SQLite file); "
        "an empty database when `python -m bench` passes it with --state-dir",
    )
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    parser.add_argument("--json", action="store_true", help="print JSON, not the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="abm-bench-console-") as tmp:
        state = Path(args.state_dir or tmp)
        state.mkdir(parents=True, exist_ok=True)
        server = args.database_url
        if args.out and server:  # from the harness: the database it made is fresh already
            result = run(argparse.Namespace(**{**vars(args), "state_dir": str(state)}))
        else:
            with fresh_database(server, state / "db", "console") as url:
                result = run(
                    argparse.Namespace(
                        **{**vars(args), "state_dir": str(state), "database_url": url}
                    )
                )
    if args.out:
        write_result(Path(args.out), result)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

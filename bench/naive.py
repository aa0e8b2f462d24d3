"""The naive Prefect way, measured on a sample: `python -m bench.naive ...`.

How a first version of this pipeline is usually written with Prefect: one task per contact
(`task.map` over the contacts, on Prefect's default thread-pool task runner), each rendering
its message, sending it over a NEW SMTP connection (as prefect-email's
`email_send_message` does: `smtplib.SMTP(host, port)`, `send_message`, `QUIT`) or writing
its `.eml` file, and writing its ledger row through the ORM with a commit of its own.

It is given the same head start as the real flow: the contacts are imported, scored and
classified beforehand, loaded in one query, and every task shares one `Composer`, so the
message bytes are the real ones and what is measured is the orchestration, the
transport and the row-at-a-time writes. The result goes to `--out` as JSON."""

from __future__ import annotations

import argparse
import os
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import CAMPAIGN, SECRET_KEY, PeakMemory, bench_icp_rules, write_result


@dataclass(frozen=True)
class Target:
    """Where a naive task puts its message: an SMTP server, or an outbox folder."""

    campaign_key: str
    smtp_url: str | None = None
    outbox: str | None = None


_composers: dict[str, Any] = {}


def _composer(campaign_key: str) -> Any:
    from core.campaign_file import load_campaign
    from core.settings import get_settings
    from stages.content.compose import Composer

    if campaign_key not in _composers:
        _, campaign = load_campaign(CAMPAIGN)
        _composers[campaign_key] = Composer(
            get_settings(), campaign_key, 1, campaign, campaign.steps[0]
        )
    return _composers[campaign_key]


def send_one(row: dict[str, Any], target: Target, database_url: str, campaign_id: int) -> str:
    """One contact: render, send on a new connection (or write the file), one ORM row."""
    from sqlmodel import Session

    from connectors.email.outbox import eml_name
    from models.db import get_engine
    from models.tables import Delivery, utcnow

    composer = _composer(target.campaign_key)
    message = composer.email(row)
    if target.smtp_url:
        url = urlsplit(target.smtp_url)
        with smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 25) as server:
            server.send_message(message)
    else:
        assert target.outbox is not None
        path = Path(target.outbox) / eml_name(message["Message-ID"])
        path.write_bytes(message.as_bytes())
    with Session(get_engine(database_url)) as session:
        session.add(
            Delivery(
                campaign_id=campaign_id,
                step=composer.step.id,
                contact_id=row["contact_id"],
                account_id=row["account_id"],
                state="sent",
                message_id=message["Message-ID"],
                attempts=1,
                sent_at=utcnow(),
            )
        )
        session.commit()
    return str(message["Message-ID"])


def _rows(database_url: str, limit: int) -> list[dict[str, Any]]:
    """The sample's people with everything rendering needs, in one query."""
    from sqlalchemy import select

    from models.db import get_engine
    from models.tables import Account, Contact
    from stages.delivery.send import PERSON_COLUMNS

    query = (
        select(*PERSON_COLUMNS)
        .join(Account, Account.id == Contact.account_id)
        .order_by(Contact.id)
        .limit(limit)
    )
    with get_engine(database_url).connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    for row in rows:
        row.update(delivery_id=row["contact_id"], step="intro", attempts=0, variant=None)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    os.environ.update(
        ABM_STATE_DIR=str(state),
        ABM_DATABASE_URL=args.database_url,
        ABM_ICP_RULES=str(bench_icp_rules(state)),
        ABM_SECRET_KEY=SECRET_KEY,
    )
    from abm.demo_data import write_demo_csvs
    from abm.prefect_runtime import prepare_environment
    from core.settings import get_settings, reset_settings

    reset_settings()
    prepare_environment()
    from prefect import flow, task, unmapped
    from prefect.cache_policies import NO_CACHE

    from bench.import_contacts import timed_import
    from models.db import get_engine, migrate
    from stages.delivery.ledger import register_campaign
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    memory = PeakMemory()
    settings = get_settings()
    engine = get_engine(args.database_url)
    migrate(engine)
    accounts_csv, contacts_csv = write_demo_csvs(state / "data", contacts=args.sample)
    timed_import(engine, settings, accounts_csv, contacts_csv)
    rescore_accounts_in_db(engine, load_icp_rules(settings.icp_rules))
    rows = _rows(args.database_url, args.sample)

    naive_send = task(name="naive-send", cache_policy=NO_CACHE, persist_result=False)(send_one)

    @flow(name="naive-campaign", log_prints=False)
    def naive_campaign(target: Target, campaign_id: int) -> int:
        """One task per contact, as a first version would map them."""
        futures = naive_send.map(
            rows,
            target=unmapped(target),
            database_url=unmapped(args.database_url),
            campaign_id=unmapped(campaign_id),
        )
        return sum(1 for future in futures if future.result())

    from core.campaign_file import load_campaign

    _, campaign = load_campaign(CAMPAIGN)
    result: dict[str, Any] = {"sample": len(rows), "database": engine.dialect.name}
    targets = [("outbox", Target("naive-outbox", outbox=str(state / "outbox")))]
    if args.smtp_url:
        targets.insert(0, ("smtp", Target("naive-smtp", smtp_url=args.smtp_url)))
    targets = [(name, target) for name, target in targets if args.only in (None, name)]
    for name, target in targets:
        if target.outbox:
            Path(target.outbox).mkdir(parents=True, exist_ok=True)
        campaign_id = register_campaign(engine, target.campaign_key, campaign, CAMPAIGN)
        _composer(target.campaign_key)  # built once, outside the timing, like the real flow's
        started = time.perf_counter()
        done = naive_campaign(target, campaign_id)
        seconds = time.perf_counter() - started
        result[name] = {
            "contacts": done,
            "seconds": round(seconds, 2),
            "contacts_per_s": round(done / seconds, 1),
        }
    memory.end_stage("naive")
    result["peak_rss_mb"] = memory.peak_mb
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=500, help="contacts to send to")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--smtp-url", default=None, help="without it, only the outbox variant")
    parser.add_argument(
        "--only",
        choices=("smtp", "outbox"),
        default=None,
        help="one variant (`python -m bench` runs each in a process of its own, so neither "
        "starts while the Prefect server still digests the other's task runs)",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    write_result(Path(args.out), run(args))


if __name__ == "__main__":
    main()

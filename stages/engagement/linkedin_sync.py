"""Engagement pulled from providers: LinkedIn ad analytics by company (per account and
day) and lead-gen form responses (new contacts and `lead_form` events). Incremental: a
stored cursor per source, and every row has a stable provider id, so a re-run never double
counts. LinkedIn revises company figures for a few days, so analytics are re-read from two
days before the cursor and upserted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from connectors.linkedin import LinkedInConnector, get_connector, simulated_organizations
from core.settings import Settings
from models.db import session_scope
from models.store import contacts_by_email, dialect_insert, upsert_contacts
from models.tables import Account, EngagementEvent, SyncCursor, utcnow
from stages.committee.titles import classify_title, load_title_table
from stages.engagement.rollup import store_events

ANALYTICS = "linkedin:ad_analytics"
LEADS = "linkedin:lead_forms"
FIRST_SYNC_DAYS = 30
REVISION_DAYS = 2


@dataclass
class SyncReport:
    analytics_rows: int = 0
    analytics_events: int = 0
    leads: int = 0
    lead_contacts: int = 0
    lead_events: int = 0
    unmatched: int = 0


def read_cursor(engine: Engine, source: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            select(SyncCursor.cursor).where(SyncCursor.source == source)
        ).scalar()


def write_cursor(engine: Engine, source: str, cursor: str) -> None:
    with session_scope(engine) as session:
        statement = dialect_insert(engine, SyncCursor.__table__).values(
            source=source, cursor=cursor, updated_at=utcnow()
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["source"],
                set_={"cursor": cursor, "updated_at": utcnow()},
            )
        )


def organization_map(engine: Engine, mode: str) -> dict[str, str]:
    """LinkedIn organization URN -> account domain: from the accounts' `linkedin_organization`
    column (import it with accounts.csv), or simulated in sandbox mode."""
    with engine.connect() as connection:
        rows = connection.execute(select(Account.domain, Account.attributes)).all()
    found = {
        str(attributes["linkedin_organization"]): domain
        for domain, attributes in rows
        if attributes and attributes.get("linkedin_organization")
    }
    if mode == "sandbox":
        found = {**simulated_organizations(domain for domain, _ in rows), **found}
    return found


def analytics_events(rows: list[dict], account_ids: dict[str, int]) -> list[dict[str, Any]]:
    """One `ad_impression` and one `ad_click` event per account and day, with the count."""
    events = []
    for row in rows:
        account_id = account_ids.get(row.get("domain") or "")
        if account_id is None:
            continue
        day = row["date"] if isinstance(row["date"], date) else date.fromisoformat(row["date"])
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        for kind, count in (("ad_impression", row["impressions"]), ("ad_click", row["clicks"])):
            if count:
                events.append(
                    {
                        "provider": "linkedin",
                        "provider_event_id": f"{row['provider_event_id']}:{kind}",
                        "type": kind,
                        "channel": "linkedin",
                        "occurred_at": at,
                        "account_id": account_id,
                        "contact_id": None,
                        "data": {"count": int(count)},
                    }
                )
    return events


def _upsert_counted_events(engine: Engine, events: list[dict[str, Any]]) -> int:
    """Analytics events: insert, or refresh the count LinkedIn revised."""
    if not events:
        return 0
    with session_scope(engine) as session:
        for event in events:
            statement = dialect_insert(engine, EngagementEvent.__table__).values(
                created_at=utcnow(), **event
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["provider", "provider_event_id"],
                    set_={"data": event["data"]},
                )
            )
    return len(events)


def _account_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(select(Account.domain, Account.id)).all())


def sync_linkedin(engine: Engine, settings: Settings, today: date | None = None) -> SyncReport:
    """Pull analytics and leads since the stored cursors; store events; move the cursors."""
    report = SyncReport()
    accounts = _account_ids(engine)
    with get_connector(settings) as connector:
        _sync_analytics(engine, connector, settings, accounts, today or utcnow().date(), report)
        _sync_leads(engine, connector, settings, accounts, report)
    return report


def _sync_analytics(
    engine: Engine,
    connector: LinkedInConnector,
    settings: Settings,
    accounts: dict[str, int],
    today: date,
    report: SyncReport,
) -> None:
    cursor = read_cursor(engine, ANALYTICS)
    start = (
        date.fromisoformat(cursor) - timedelta(days=REVISION_DAYS)
        if cursor
        else today - timedelta(days=FIRST_SYNC_DAYS)
    )
    end = today - timedelta(days=1)
    if start > end:
        return
    organizations = organization_map(engine, settings.linkedin_mode)
    rows = connector.ad_analytics_by_company(start, end, organizations)
    report.analytics_rows = len(rows)
    report.unmatched += sum(1 for row in rows if row.get("domain") not in accounts)
    report.analytics_events = _upsert_counted_events(engine, analytics_events(rows, accounts))
    write_cursor(engine, ANALYTICS, end.isoformat())


def _sync_leads(
    engine: Engine,
    connector: LinkedInConnector,
    settings: Settings,
    accounts: dict[str, int],
    report: SyncReport,
) -> None:
    cursor = read_cursor(engine, LEADS)
    since = datetime.fromisoformat(cursor) if cursor else utcnow() - timedelta(days=FIRST_SYNC_DAYS)
    until = utcnow()
    leads = connector.lead_form_responses(since, until, domains=sorted(accounts))
    report.leads = len(leads)
    known = [lead for lead in leads if lead.get("company_domain") in accounts and lead["email"]]
    report.unmatched += len(leads) - len(known)
    titles = load_title_table(settings.title_rules)
    records = []
    for lead in known:
        found = classify_title(lead.get("title"), titles)
        records.append(
            {
                "email": lead["email"].strip().lower(),
                "first_name": lead.get("first_name"),
                "last_name": lead.get("last_name"),
                "title": lead.get("title"),
                "account_domain": lead["company_domain"],
                "seniority": found.seniority,
                "function": found.function,
                "role": found.role,
                "attributes": {"source": "linkedin_lead_form"},
            }
        )
    unique = list({record["email"]: record for record in records}.values())
    counts = upsert_contacts(engine, unique) if unique else None
    report.lead_contacts = counts.imported if counts else 0
    people = contacts_by_email(engine, [record["email"] for record in unique])
    events = [
        {
            "provider": "linkedin",
            "provider_event_id": lead["provider_event_id"],
            "type": "lead_form",
            "channel": "linkedin",
            "occurred_at": lead["submitted_at"],
            "account_id": accounts[lead["company_domain"]],
            "contact_id": people.get(lead["email"].strip().lower(), (None,))[0],
            "data": {"form": lead.get("form")},
        }
        for lead in known
    ]
    report.lead_events = store_events(engine, events)
    write_cursor(engine, LEADS, until.isoformat())

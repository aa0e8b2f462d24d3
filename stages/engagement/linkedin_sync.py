"""Engagement pulled from providers: LinkedIn ad analytics by company (per account and
day) and lead-gen form responses (new contacts and `lead_form` events). Incremental: a
stored cursor per source, and every row has a stable provider id, so a re-run never double
counts. LinkedIn revises company figures for a few days, so analytics are re-read from two
days before the cursor and upserted.

In sandbox mode (the default) only the files in the sandbox folder are pulled, with cursors
of their own so that trying the sandbox never moves the real API's; with no files there the
sync changes nothing and says so, because invented engagement would move real accounts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from connectors.linkedin import (
    ANALYTICS_FILE,
    LEADS_FILE,
    SANDBOX_FILES,
    LinkedInConnector,
    get_connector,
    present_files,
    sandbox_files_dir,
)
from core.settings import Settings
from models.cursors import read_cursor, write_cursor
from models.db import session_scope
from models.store import contacts_by_email, dialect_insert, upsert_contacts
from models.tables import Account, EngagementEvent, utcnow
from stages.committee.titles import classify_title, load_title_table
from stages.engagement.rollup import store_events

ANALYTICS = "linkedin:ad_analytics"
LEADS = "linkedin:lead_forms"
FIRST_SYNC_DAYS = 30
REVISION_DAYS = 2
UNKNOWN_ORGANIZATIONS_SHOWN = 5


@dataclass
class SyncReport:
    """What one sync pulled and stored; `notes` in plain words, `problems` as file:line."""

    analytics_rows: int = 0
    analytics_events: int = 0
    leads: int = 0
    lead_contacts: int = 0
    lead_events: int = 0
    unmatched: int = 0
    mode: str = "sandbox"
    sandbox_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """Rows written to the database: zero means there is nothing to roll up."""
        return self.analytics_events + self.lead_contacts + self.lead_events


def cursor_source(source: str, mode: str) -> str:
    """The cursor a source keeps in this mode: sandbox files have their own."""
    return source if mode == "api" else f"{source}:sandbox"


def no_files_note(folder: Path) -> str:
    """What a sandbox sync with an empty folder tells the user."""
    return (
        f"LinkedIn sandbox: no files in {folder}, nothing pulled; set ABM_LINKEDIN_MODE=api "
        "(with ABM_LINKEDIN_ACCESS_TOKEN and ABM_LINKEDIN_AD_ACCOUNT) to pull from LinkedIn, "
        f"or put {' or '.join(SANDBOX_FILES)} there (see README, LinkedIn sandbox files)"
    )


def organization_map(engine: Engine) -> dict[str, str]:
    """LinkedIn organization URN -> account domain, from the accounts' `linkedin_organization`
    column (import it with accounts.csv); the same in both modes."""
    with engine.connect() as connection:
        rows = connection.execute(select(Account.domain, Account.attributes)).all()
    return {
        str(attributes["linkedin_organization"]).strip(): domain
        for domain, attributes in rows
        if attributes and attributes.get("linkedin_organization")
    }


def map_organizations(rows: list[dict], organizations: dict[str, str]) -> list[str]:
    """Set each analytics row's domain from the map; returns the organizations not in it."""
    unknown = set()
    for row in rows:
        row["domain"] = organizations.get(row["organization"])
        if row["domain"] is None:
            unknown.add(row["organization"])
    return sorted(unknown)


def unknown_organizations_note(rows: int, unknown: list[str]) -> str:
    """Rows LinkedIn reported for companies we cannot place: say which, and how to fix it."""
    shown = ", ".join(unknown[:UNKNOWN_ORGANIZATIONS_SHOWN])
    more = (
        f" and {len(unknown) - UNKNOWN_ORGANIZATIONS_SHOWN} more"
        if len(unknown) > UNKNOWN_ORGANIZATIONS_SHOWN
        else ""
    )
    return (
        f"{rows} ad analytics row{'' if rows == 1 else 's'} for LinkedIn organizations no "
        f"account is linked to ({shown}{more}): not stored; give those accounts their "
        "organization URN in a linkedin_organization column of accounts.csv"
    )


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
    """Pull analytics and leads since the stored cursors; store events; move the cursors.

    In sandbox mode only the sources with a file in the sandbox folder are pulled, and a
    source whose file had bad lines keeps its cursor, so the fixed lines are read again."""
    mode = settings.linkedin_mode
    report = SyncReport(mode=mode)
    sources = set(SANDBOX_FILES)
    if mode == "sandbox":
        folder = sandbox_files_dir(settings)
        report.sandbox_dir = str(folder)
        sources = {path.name for path in present_files(folder)}
        if not sources:
            report.notes.append(no_files_note(folder))
            return report
        report.notes += [
            f"LinkedIn sandbox: no {name} in {folder}: none pulled"
            for name in SANDBOX_FILES
            if name not in sources
        ]
    accounts = _account_ids(engine)
    with get_connector(settings) as connector:
        if ANALYTICS_FILE in sources:
            _sync_analytics(engine, connector, mode, accounts, today or utcnow().date(), report)
        if LEADS_FILE in sources:
            _sync_leads(engine, connector, settings, accounts, report)
        report.notes += connector.sandbox_notes
        report.problems += connector.sandbox_problems
    if report.problems:
        report.notes.append(
            f"{len(report.problems)} line(s) of the sandbox files could not be used (listed "
            "with file and line); the other lines were pulled. Fix them and sync again: the "
            "cursor of a file with bad lines stays put, so they are read again"
        )
    return report


def _sync_analytics(
    engine: Engine,
    connector: LinkedInConnector,
    mode: str,
    accounts: dict[str, int],
    today: date,
    report: SyncReport,
) -> None:
    source = cursor_source(ANALYTICS, mode)
    cursor = read_cursor(engine, source)
    start = (
        date.fromisoformat(cursor) - timedelta(days=REVISION_DAYS)
        if cursor
        else today - timedelta(days=FIRST_SYNC_DAYS)
    )
    end = today - timedelta(days=1)
    if start > end:
        return
    problems = len(connector.sandbox_problems)
    rows = connector.ad_analytics_by_company(start, end)
    unknown = map_organizations(rows, organization_map(engine))
    if unknown:
        unmapped = sum(1 for row in rows if row["domain"] is None)
        report.notes.append(unknown_organizations_note(unmapped, unknown))
    report.analytics_rows = len(rows)
    report.unmatched += sum(1 for row in rows if row.get("domain") not in accounts)
    report.analytics_events = _upsert_counted_events(engine, analytics_events(rows, accounts))
    if len(connector.sandbox_problems) == problems:
        write_cursor(engine, source, end.isoformat())


def _sync_leads(
    engine: Engine,
    connector: LinkedInConnector,
    settings: Settings,
    accounts: dict[str, int],
    report: SyncReport,
) -> None:
    source = cursor_source(LEADS, settings.linkedin_mode)
    cursor = read_cursor(engine, source)
    since = datetime.fromisoformat(cursor) if cursor else utcnow() - timedelta(days=FIRST_SYNC_DAYS)
    until = utcnow()
    problems = len(connector.sandbox_problems)
    leads = connector.lead_form_responses(since, until)
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
    if len(connector.sandbox_problems) == problems:
        write_cursor(engine, source, until.isoformat())

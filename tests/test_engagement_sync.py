"""LinkedIn engagement sync (sandbox): analytics and leads in, incremental, never double."""

from datetime import date

from sqlalchemy import func, select

from abm.demo_data import write_demo_csvs
from core.settings import get_settings
from models.tables import Account, Contact, EngagementEvent
from stages.engagement.linkedin_sync import ANALYTICS, LEADS, read_cursor, sync_linkedin
from stages.engagement.rollup import load_engagement_rules, rollup_accounts
from stages.importing import import_file

TODAY = date(2026, 11, 25)


def _events(engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                EngagementEvent.type, func.count(), func.count(EngagementEvent.contact_id)
            ).group_by(EngagementEvent.type)
        ).all()
    return {kind: (count, with_contact) for kind, count, with_contact in rows}


def test_a_second_sync_counts_nothing_twice(engine, tmp_path):
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=400)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())

    first = sync_linkedin(engine, get_settings(), today=TODAY)
    events = _events(engine)
    assert first.analytics_events > 0 and events["ad_impression"][1] == 0
    assert read_cursor(engine, ANALYTICS) == "2026-11-24"
    assert read_cursor(engine, LEADS) is not None

    second = sync_linkedin(engine, get_settings(), today=TODAY)
    assert second.leads == 0
    assert _events(engine) == events

    with engine.connect() as connection:
        account_ids = list(connection.execute(select(Account.id)).scalars())
    rollup_accounts(engine, account_ids, load_engagement_rules())
    with engine.connect() as connection:
        engaged = connection.execute(
            select(func.count()).where(Account.engagement_score > 0)
        ).scalar_one()
    assert engaged > 0


def test_lead_form_responses_become_classified_contacts_and_events(engine, tmp_path):
    accounts, _ = write_demo_csvs(tmp_path / "data", contacts=2000)
    import_file("accounts", accounts, engine, get_settings())
    report = sync_linkedin(engine, get_settings(), today=TODAY)
    assert report.leads > 0
    events = _events(engine)
    assert events["lead_form"] == (report.lead_events, report.lead_events)
    with engine.connect() as connection:
        leads = connection.execute(
            select(Contact.role, Contact.attributes).where(Contact.role.is_not(None))
        ).all()
    assert len(leads) == report.lead_contacts > 0
    assert all(attributes == {"source": "linkedin_lead_form"} for _, attributes in leads)


def test_the_sandbox_never_writes_a_plain_email(engine, tmp_path):
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=200)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    sync_linkedin(engine, get_settings(), today=TODAY)
    written = " ".join(
        path.read_text() for path in (get_settings().state_dir / "linkedin").rglob("*.json")
    )
    with engine.connect() as connection:
        emails = connection.execute(select(Contact.email)).scalars().all()
    assert written and not [email for email in emails if email in written]

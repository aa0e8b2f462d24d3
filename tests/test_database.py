import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from models.db import (
    DatabaseError,
    current_revision,
    get_engine,
    head_revision,
    migrate,
    require_current_schema,
    session_scope,
)
from models.store import add_suppressions, upsert_accounts, upsert_contacts
from models.tables import Campaign, Delivery, EngagementEvent, utcnow


def test_migrations_create_every_table_the_models_declare(engine):
    tables = set(inspect(engine).get_table_names())
    assert {
        "account",
        "contact",
        "campaign",
        "delivery",
        "engagementevent",
        "stagechange",
        "suppression",
    } <= tables
    assert current_revision(engine) == head_revision(engine)


def test_the_models_and_the_migrations_agree(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_migrating_twice_changes_nothing(engine):
    assert migrate(engine) == (head_revision(engine), head_revision(engine))


def test_an_unmigrated_database_asks_for_abm_init(tmp_path):
    with pytest.raises(DatabaseError, match="abm init"):
        require_current_schema(get_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def _account_and_contact(engine):
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [{"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}}],
    )
    with session_scope(engine) as session:
        campaign = Campaign(key="c", name="C")
        session.add(campaign)
        session.flush()
        return campaign.id


def test_the_ledger_holds_one_row_per_campaign_step_and_contact(engine):
    campaign_id = _account_and_contact(engine)
    row = {"campaign_id": campaign_id, "step": "intro", "contact_id": 1, "account_id": 1}
    with session_scope(engine) as session:
        session.add(Delivery(**row))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Delivery(**row))
    with session_scope(engine) as session:
        session.add(Delivery(**{**row, "step": "follow-up"}))


def test_an_engagement_event_is_unique_per_provider_event_id(engine):
    _account_and_contact(engine)
    event = {
        "provider": "sendgrid",
        "provider_event_id": "e1",
        "type": "open",
        "channel": "email",
        "occurred_at": utcnow(),
        "account_id": 1,
        "contact_id": 1,
    }
    with session_scope(engine) as session:
        session.add(EngagementEvent(**event))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(EngagementEvent(**event))


def test_timestamps_come_back_as_aware_utc(engine):
    _account_and_contact(engine)
    with session_scope(engine) as session:
        campaign = session.get(Campaign, 1)
        assert campaign.created_at.tzinfo is not None
        assert campaign.created_at.utcoffset().total_seconds() == 0


def test_suppressing_a_domain_marks_its_contacts_suppressed(engine):
    _account_and_contact(engine)
    added = add_suppressions(engine, [{"kind": "domain", "value": "acme.example"}])
    again = add_suppressions(engine, [{"kind": "domain", "value": "acme.example"}])
    assert (added, again) == (1, 0)
    from models.queries import list_contacts

    assert [c["status"] for c in list_contacts(engine)] == ["suppressed"]

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import String, bindparam, cast, inspect, select, update
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
from models.store import (
    DriverStatement,
    account_ids_by_domain,
    add_suppressions,
    rows_of_accounts,
    upsert_accounts,
    upsert_contacts,
)
from models.tables import Campaign, Contact, Delivery, EngagementEvent, utcnow


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


def test_a_driver_statement_writes_what_sqlalchemy_writes(engine):
    """The per-message ledger statements skip SQLAlchemy's execution layer: the stored
    values (timestamps as text on SQLite), the literal bound at build time and the row count
    must be the ones SQLAlchemy itself gives."""
    campaign_id = _account_and_contact(engine)
    table = Delivery.__table__
    with session_scope(engine) as session:
        for step in ("a", "b"):
            session.add(Delivery(campaign_id=campaign_id, step=step, contact_id=1, account_id=1))
    moment = datetime(2026, 11, 25, 23, 5, 7, tzinfo=UTC)  # microsecond 0: the odd case
    statement = (
        update(table)
        .where(table.c.id == bindparam("row_id"), table.c.state == "planned")
        .values(state=bindparam("state"), sent_at=bindparam("sent_at"), last_error=None)
    )
    values = {"state": "sent", "sent_at": moment}
    with engine.connect() as connection, connection.begin():
        assert connection.execute(statement, {**values, "row_id": 1}).rowcount == 1
        driver = DriverStatement(statement, engine.dialect)
        assert driver.execute(connection, {**values, "row_id": 2}) == 1
        assert driver.execute(connection, {**values, "row_id": 2}) == 0  # no longer planned
    stored = select(table.c.state, cast(table.c.sent_at, String), table.c.last_error)
    with engine.connect() as connection:
        via_sqlalchemy, via_driver = connection.execute(stored.order_by(table.c.id)).all()
    assert via_driver == via_sqlalchemy


def test_a_driver_statement_refuses_an_in_list(engine):
    table = Delivery.__table__
    statement = (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)))
        .values(state="sending")
    )
    with pytest.raises(ValueError, match="IN lists"):
        DriverStatement(statement, engine.dialect)


def test_a_driver_statement_insert_writes_what_sqlalchemy_writes_with_column_defaults(engine):
    """Bulk imports insert through a DriverStatement: a column left out gets its fixed
    default (status `active`), JSON and timestamps are stored as SQLAlchemy stores them."""
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    table = Contact.__table__
    moment = datetime(2026, 11, 25, 23, 5, 7, tzinfo=UTC)
    rows = [
        {"email": f"{who}@acme.example", "account_id": 1, "attributes": {"n": "Ñ"}}
        | {"created_at": moment, "updated_at": moment}
        for who in ("ana", "bo")
    ]
    with engine.connect() as connection, connection.begin():
        connection.execute(table.insert(), rows[:1])
        insert = table.insert().values({name: bindparam(name) for name in rows[1]})
        DriverStatement(insert, engine.dialect).execute_many(connection, rows[1:])
    stored = select(
        table.c.status, table.c.attributes, cast(table.c.created_at, String), table.c.seniority
    ).order_by(table.c.email)
    with engine.connect() as connection:
        via_sqlalchemy, via_driver = connection.execute(stored).all()
    assert via_driver == via_sqlalchemy
    assert via_driver[0] == "active"


def test_a_driver_statement_refuses_a_default_computed_per_row(engine):
    insert = Contact.__table__.insert().values(email=bindparam("email"))
    with pytest.raises(ValueError, match="created_at"):
        DriverStatement(insert, engine.dialect)


@pytest.mark.parametrize("wanted", [[2], [1, 2, 4], [1, 2, 3, 4, 5]])
def test_rows_of_accounts_finds_the_same_rows_by_index_or_in_one_pass(engine, wanted):
    """Below a fifth of all accounts the rows come by index, above it from one pass over
    the table: only the wanted accounts' rows, whichever way."""
    domains = [f"a{n}.example" for n in range(1, 11)]
    upsert_accounts(engine, [{"domain": d, "attributes": {}, "technologies": []} for d in domains])
    upsert_contacts(
        engine,
        [
            {"email": f"p{i}@{d}", "account_domain": d, "attributes": {}}
            for d in domains
            for i in range(3)
        ],
    )
    ids = account_ids_by_domain(engine, domains)
    accounts = [ids[domains[n - 1]] for n in wanted]
    query = select(Contact.account_id, Contact.email)
    with engine.connect() as connection:
        found = sorted(tuple(row) for row in rows_of_accounts(connection, query, accounts))
    by_id = {account_id: domain for domain, account_id in ids.items()}
    assert found == sorted(
        (account_id, f"p{i}@{by_id[account_id]}") for account_id in accounts for i in range(3)
    )

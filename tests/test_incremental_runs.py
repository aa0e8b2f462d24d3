"""Work follows what changed: scoring and title classification only for rows changed since
they were last worked out (all of them when the rules change), planning for people not yet
planned, and `advance-sequences` running only campaigns with anything due or new. Nothing
that should be scored, classified, planned or sent is missed."""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update

from core.settings import DEFAULTS_DIR, get_settings, reset_settings
from models.db import session_scope
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, Delivery, utcnow
from stages.committee.coverage import classify_contacts
from stages.committee.titles import classify_title
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

ACCOUNTS = [
    {"domain": f"a{i}.example", "industry": "Manufacturing", "employees": 500 + i}
    | {"attributes": {}, "technologies": []}
    for i in range(5)
]


def _scored(engine) -> dict[str, tuple]:
    with engine.connect() as connection:
        rows = connection.execute(select(Account.domain, Account.icp_score, Account.scored_at))
        return {domain: (score, at) for domain, score, at in rows}


def _rules_file(tmp_path: Path, weight: int) -> Path:
    rules = yaml.safe_load((DEFAULTS_DIR / "icp.yaml").read_text(encoding="utf-8"))
    rules["rules"] = [{"field": "industry", "in": ["Manufacturing"], "weight": weight}]
    path = tmp_path / f"icp-{weight}.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return path


def test_only_an_edited_account_is_rescored(engine, tmp_path):
    upsert_accounts(engine, ACCOUNTS)
    rules = load_icp_rules(_rules_file(tmp_path, 60))
    per_tier = rescore_accounts_in_db(engine, rules)
    assert sum(per_tier.values()) == 5
    first = _scored(engine)
    assert {score for score, _ in first.values()} == {60}

    upsert_accounts(engine, [ACCOUNTS[1] | {"industry": "Retail"}])  # an import edits one
    assert sum(rescore_accounts_in_db(engine, rules).values()) == 5  # still counts them all
    second = _scored(engine)
    assert second["a1.example"][0] == 0 and second["a1.example"][1] > first["a1.example"][1]
    assert {d: v for d, v in second.items() if d != "a1.example"} == {
        d: v for d, v in first.items() if d != "a1.example"
    }  # the others were not even written
    assert _scored(engine) == second and rescore_accounts_in_db(engine, rules)
    assert _scored(engine) == second  # nothing changed: nothing scored


def test_a_changed_rules_file_rescores_every_account(engine, tmp_path):
    upsert_accounts(engine, ACCOUNTS)
    rescore_accounts_in_db(engine, load_icp_rules(_rules_file(tmp_path, 60)))
    before = _scored(engine)
    rescore_accounts_in_db(engine, load_icp_rules(_rules_file(tmp_path, 30)))
    after = _scored(engine)
    assert {score for score, _ in after.values()} == {30}
    assert all(after[d][1] > before[d][1] for d in before)


def test_an_account_edited_while_it_was_scored_is_scored_again(engine, tmp_path, monkeypatch):
    """A score is stored only for the account as it was read: an edit committed in between
    (its `updated_at` moved) leaves the account to be scored again next time."""
    import stages.targeting.scoring as scoring

    upsert_accounts(engine, ACCOUNTS[:1])
    rules = load_icp_rules(_rules_file(tmp_path, 60))
    real = scoring.score_account

    def edited_meanwhile(account, rules):
        with engine.begin() as connection:  # another writer, between our read and write
            connection.execute(update(Account).values(industry="Retail", updated_at=utcnow()))
        return real(account, rules)

    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: the edit cannot come in between")
    monkeypatch.setattr(scoring, "score_account", edited_meanwhile)
    rescore_accounts_in_db(engine, rules)
    monkeypatch.setattr(scoring, "score_account", real)
    assert _scored(engine)["a0.example"][1] is None  # not stamped with the stale score
    rescore_accounts_in_db(engine, rules)
    assert _scored(engine)["a0.example"][0] == 0  # Retail: the rule does not fire


def _classes(engine) -> dict[str, tuple]:
    with engine.connect() as connection:
        rows = connection.execute(select(Contact.email, Contact.role, Contact.classified_at))
        return {email: (role, at) for email, role, at in rows}


def test_titles_are_classified_where_contacts_changed_and_everywhere_when_the_table_did(
    engine, tmp_path
):
    upsert_accounts(engine, ACCOUNTS[:1])
    people = [("cfo", "CFO"), ("cto", "CTO"), ("intern", "Marketing Intern")]
    records = [
        {"email": f"{name}@a0.example", "account_domain": "a0.example", "title": title}
        | {"attributes": {}}
        for name, title in people
    ]
    upsert_contacts(engine, records)
    assert classify_contacts(engine, None) == 3
    first = _classes(engine)
    assert classify_contacts(engine, None) == 0 and _classes(engine) == first

    upsert_contacts(engine, [records[2] | {"title": "Chief Financial Officer"}])  # promoted
    assert classify_contacts(engine, None) == 1
    second = _classes(engine)
    assert second["intern@a0.example"][0] == classify_title("CFO").role
    assert second["intern@a0.example"][1] > first["intern@a0.example"][1]
    assert second["cfo@a0.example"] == first["cfo@a0.example"]  # untouched

    own = tmp_path / "titles.yaml"
    own.write_text("roles:\n  - {functions: [finance], role: user}\n", encoding="utf-8")
    classify_contacts(engine, own)
    third = _classes(engine)
    assert third["cfo@a0.example"][0] == "user"
    assert all(third[email][1] > second[email][1] for email in second)  # every contact


# The flow and advance-sequences on the demo data, on a temporary Prefect server.


@pytest.fixture
def demo_db(database_url, tmp_path, monkeypatch, prefect_server):
    from abm.demo_data import write_demo_csvs
    from models.db import get_engine
    from stages.importing import import_file

    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    engine = get_engine(database_url)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=60)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    return engine


def _campaign(tmp_path: Path, key: str) -> str:
    path = tmp_path / f"{key}.yaml"
    path.write_text(
        f"key: {key}\nname: {key}\nlinks: {{guide: 'https://demo.example/g'}}\n"
        "consent_required: false\n"
        "caps: {per_contact: {max: 50, days: 7}, per_account: {max: 500, days: 7}}\n"
        "steps:\n  - id: first\n    template: intro\n",
        encoding="utf-8",
    )
    return str(path)


def test_a_newly_imported_contact_is_planned_and_sent_by_the_next_run(demo_db, tmp_path):
    from flows.campaign import run_campaign

    path = _campaign(tmp_path, "one")
    first = run_campaign(campaign_file=path)
    with demo_db.connect() as connection:
        domain = connection.execute(
            select(Account.domain).join(Delivery, Delivery.account_id == Account.id).limit(1)
        ).scalar_one()
    record = {"email": f"new.person@{domain}", "account_domain": domain, "title": "CTO"}
    upsert_contacts(demo_db, [record | {"attributes": {}}])
    second = run_campaign(campaign_file=path)
    assert second["planned"] == first["planned"] + 1
    with demo_db.connect() as connection:
        state = connection.execute(
            select(Delivery.state)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(Contact.email == record["email"])
        ).scalar_one()
    assert state in ("sent", "skipped") and second["sent"] + second["skipped"] > (
        first["sent"] + first["skipped"]
    )


def test_advance_sequences_runs_only_the_campaign_with_something_due(
    demo_db, tmp_path, monkeypatch
):
    import stages.delivery.ledger
    from flows.campaign import run_campaign
    from flows.scheduled import advance_sequences

    # in production a run vouches for changes up to 10 minutes before it started (a late
    # commit); here everything happens within seconds
    monkeypatch.setattr(stages.delivery.ledger, "PLANNED_MARGIN", timedelta(0))

    busy, quiet = _campaign(tmp_path, "busy"), _campaign(tmp_path, "quiet")
    sent = run_campaign(campaign_file=busy)["sent"]
    run_campaign(campaign_file=quiet)
    # the runs' write-back touched accounts after they started: one tick settles that
    advance_sequences()
    ticks = advance_sequences()
    assert set(ticks) == {"busy", "quiet"} and all("idle" in t for t in ticks.values())

    with session_scope(demo_db) as session:  # one message failed earlier, to retry now
        row = session.execute(
            select(Delivery.id).where(Delivery.state == "sent").order_by(Delivery.id).limit(1)
        ).scalar_one()
        session.execute(
            update(Delivery)
            .where(Delivery.id == row)
            .values(state="failed", sent_at=None, due_at=utcnow() - timedelta(minutes=1))
        )
    tick = advance_sequences()
    assert "idle" in tick["quiet"]  # nothing due there: not run
    assert tick["busy"]["sent"] == sent and tick["busy"]["failed"] == 0
    with demo_db.connect() as connection:
        state = connection.execute(select(Delivery.state).where(Delivery.id == row)).scalar()
    assert state == "sent"

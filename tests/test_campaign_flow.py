"""The `run_campaign` flow end to end on a real (temporary) Prefect server, on SQLite and
PostgreSQL: target, map, render, deliver to the outbox, write back; never twice."""

from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy import select, update

from abm.demo_data import write_demo_csvs
from core.settings import get_settings, reset_settings
from flows.campaign import run_campaign
from models.tables import Account, Contact, Delivery, StageChange, utcnow
from stages.delivery.pacing import WEEKDAYS
from stages.importing import import_file

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


@pytest.fixture
def demo_db(database_url, tmp_path, monkeypatch, prefect_server):
    """A database holding a small demo dataset, configured as the flow's database."""
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    from models.db import get_engine

    engine = get_engine(database_url)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=120)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    return engine


def _outbox() -> list[Path]:
    return sorted(get_settings().outbox_dir.glob("*.eml"))


def test_a_campaign_run_sends_each_reachable_contact_one_email(demo_db):
    summary = run_campaign(campaign_file=str(CAMPAIGN))
    files = _outbox()
    assert summary["sent"] == len(files) > 50
    assert summary["planned"] == summary["sent"] + summary["skipped"] + summary["pending"]
    assert summary["pending"] == summary["deferred"]
    with demo_db.connect() as connection:
        rows = connection.execute(
            select(Delivery.message_id, Delivery.state, Contact.email).join(Contact)
        ).all()
    sent = {message_id: email for message_id, state, email in rows if state == "sent"}
    message_ids = set()
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=default)
        message_ids.add(message["Message-ID"])
        assert sent[message["Message-ID"]] == message["To"].addresses[0].addr_spec
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(message_ids) == len(files)


def test_chunks_on_worker_processes_send_each_contact_one_email(demo_db, monkeypatch):
    monkeypatch.setenv("ABM_CHUNK_RUNNER", "processes")
    monkeypatch.setenv("ABM_CHUNK_WORKERS", "2")
    monkeypatch.setenv("ABM_CHUNK_SIZE", "20")
    reset_settings()
    summary = run_campaign(campaign_file=str(CAMPAIGN))
    with demo_db.connect() as connection:
        sent = connection.execute(
            select(Delivery.message_id, Delivery.attempts).where(Delivery.state == "sent")
        ).all()
    names = {path.name.removesuffix(".eml") for path in _outbox()}
    assert summary["sent"] == len(sent) == len(names) > 50
    assert {message_id.strip("<>") for message_id, _ in sent} == names
    assert {attempts for _, attempts in sent} == {1}


def test_running_the_same_campaign_twice_sends_nothing_the_second_time(demo_db):
    first = run_campaign(campaign_file=str(CAMPAIGN))
    files = {path.name: path.stat().st_mtime_ns for path in _outbox()}
    second = run_campaign(campaign_file=str(CAMPAIGN))
    assert second == first
    assert {path.name: path.stat().st_mtime_ns for path in _outbox()} == files


def test_suppressed_and_unsubscribed_contacts_are_skipped_with_their_reason(demo_db):
    with demo_db.begin() as connection:
        ids = connection.execute(select(Contact.id).order_by(Contact.id).limit(3)).scalars().all()
        connection.execute(
            update(Contact).where(Contact.id == ids[0]).values(status="unsubscribed")
        )
        connection.execute(update(Contact).where(Contact.id == ids[1]).values(status="suppressed"))
        connection.execute(update(Contact).where(Contact.id == ids[2]).values(status="bounced"))
    summary = run_campaign(campaign_file=str(CAMPAIGN))
    assert summary["skipped_by_reason"] == {"bounced": 1, "suppressed": 1, "unsubscribed": 1}
    with demo_db.connect() as connection:
        states = connection.execute(
            select(Delivery.state).where(Delivery.contact_id.in_(ids))
        ).scalars()
        assert set(states) <= {"skipped"}


def test_simulated_engagement_moves_accounts_along_the_journey_with_reasons(demo_db):
    run_campaign(campaign_file=str(CAMPAIGN), simulate=True)
    with demo_db.connect() as connection:
        stages = connection.execute(select(Account.stage)).scalars().all()
        changes = connection.execute(select(StageChange.to_stage, StageChange.reason)).all()
    assert any(stage != "target" for stage in stages)
    assert len(changes) == sum(1 for stage in stages if stage != "target")
    assert all(reason for _, reason in changes)


def test_messages_left_sending_by_a_crash_are_sent_once_on_the_next_run(demo_db):
    run_campaign(campaign_file=str(CAMPAIGN), limit=10)
    files_before = {path.name for path in _outbox()}
    with demo_db.begin() as connection:
        # a crash after the outbox wrote the file but before the ledger recorded it
        connection.execute(
            update(Delivery).values(state="sending", lease_until=Delivery.created_at)
        )
    summary = run_campaign(campaign_file=str(CAMPAIGN), limit=10)
    assert summary["sent"] == 10
    assert {path.name for path in _outbox()} == files_before


def _campaign(tmp_path, extra: str) -> str:
    path = tmp_path / "capped.yaml"
    path.write_text(
        "name: Capped\nlinks: {guide: 'https://demo.example/g'}\n"
        + extra
        + "steps:\n  - id: intro\n    template: intro\n"
    )
    return str(path)


def test_a_per_account_cap_defers_the_rest_until_a_slot_frees_up(demo_db, tmp_path):
    campaign = _campaign(
        tmp_path, "caps:\n  per_contact: {max: 2, days: 7}\n  per_account: {max: 1, days: 7}\n"
    )
    first = run_campaign(campaign_file=campaign)
    with demo_db.connect() as connection:
        per_account = (
            connection.execute(select(Delivery.account_id).where(Delivery.state == "sent"))
            .scalars()
            .all()
        )
        due = connection.execute(
            select(Delivery.due_at, Delivery.last_error).where(Delivery.state == "planned")
        ).all()
    assert len(per_account) == len(set(per_account)) == first["sent"]
    assert first["deferred"] == len(due) > 0
    assert all(error == "deferred: frequency cap per account" for _, error in due)
    assert min(at for at, _ in due) > utcnow() + timedelta(days=6)
    second = run_campaign(campaign_file=campaign)
    assert (second["sent"], second["deferred"]) == (first["sent"], first["deferred"])


def test_outside_the_sending_window_nothing_leaves(demo_db, tmp_path):
    # Today somewhere on Earth (UTC-12 to UTC+14 spans up to three dates): none of those days.
    now = utcnow()
    today_somewhere = {WEEKDAYS[(now + timedelta(hours=h)).weekday()] for h in range(-12, 15)}
    others = [day for day in WEEKDAYS if day not in today_somewhere]
    campaign = _campaign(
        tmp_path, f"sending_window:\n  days: [{', '.join(others)}]\n  timezone: UTC\n"
    )
    summary = run_campaign(campaign_file=campaign)
    assert summary["sent"] == 0
    assert summary["deferred"] == summary["planned"] - summary["skipped"] > 0


def test_prefect_artifacts_hold_no_personal_data(demo_db):
    from prefect.client.orchestration import get_client

    run_campaign(campaign_file=str(CAMPAIGN), simulate=True)
    with demo_db.connect() as connection:
        emails = set(connection.execute(select(Contact.email)).scalars())
        names = {n for n in connection.execute(select(Contact.last_name)).scalars() if n}
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert {a.key for a in artifacts} >= {"demo-intro-targets", "demo-intro-summary"}
    text = " ".join(str(a.data) for a in artifacts)
    assert "@" not in text
    assert not [name for name in names if len(name) > 3 and name in text]
    assert not emails & set(text.split())


def test_a_dry_run_sends_nothing_and_predicts_the_real_run(demo_db):
    rehearsal = run_campaign(campaign_file=str(CAMPAIGN), dry_run=True)
    assert rehearsal["dry_run"] is True and rehearsal["sent"] > 0
    assert _outbox() == []
    with demo_db.connect() as connection:
        left_behind = connection.execute(select(Delivery.id)).all()
    assert left_behind == []  # a later run plans afresh, from the file as it is then
    real = run_campaign(campaign_file=str(CAMPAIGN))
    assert (real["sent"], real["skipped"], real["deferred"]) == (
        rehearsal["sent"],
        rehearsal["skipped"],
        rehearsal["deferred"],
    )


def test_a_paused_campaign_sends_nothing_until_resumed(demo_db):
    from core.campaign_file import load_campaign
    from stages.delivery.ledger import register_campaign, set_campaign_status

    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(demo_db, key, campaign, CAMPAIGN)
    set_campaign_status(demo_db, campaign_id, "paused")
    paused = run_campaign(campaign_file=str(CAMPAIGN))
    assert paused["paused"] is True and _outbox() == []
    set_campaign_status(demo_db, campaign_id, "active")
    assert run_campaign(campaign_file=str(CAMPAIGN))["sent"] == len(_outbox()) > 0


def _time_passes(engine, model, column: str, delta: timedelta) -> None:
    """Move recorded times back by `delta` (in Python: SQLite has no datetime arithmetic)."""
    table = model.__table__
    with engine.begin() as connection:
        rows = connection.execute(select(table.c.id, table.c[column])).all()
        for row_id, at in rows:
            if at is not None:
                connection.execute(
                    update(table).where(table.c.id == row_id).values({column: at - delta})
                )


def test_advance_sequences_sends_later_steps_once_their_wait_is_over(demo_db, tmp_path):
    from flows.scheduled import advance_sequences

    path = tmp_path / "two-steps.yaml"
    path.write_text(
        "name: Two steps\nlinks: {guide: 'https://demo.example/g'}\n"
        "caps: {per_contact: {max: 5, days: 7}, per_account: {max: 50, days: 7}}\n"
        "steps:\n  - id: first\n    template: intro\n"
        "  - id: second\n    template: intro\n    wait: 2d\n"
    )
    first = run_campaign(campaign_file=str(path))
    assert first["sent"] > 0
    assert advance_sequences()["two-steps"]["sent"] == first["sent"]
    _time_passes(demo_db, Delivery, "sent_at", timedelta(days=2, minutes=1))
    later = advance_sequences()["two-steps"]
    with demo_db.connect() as connection:
        second = (
            connection.execute(select(Delivery.state).where(Delivery.step == "second"))
            .scalars()
            .all()
        )
    assert second and set(second) <= {"sent", "skipped"}
    assert later["sent"] == first["sent"] + second.count("sent")


def test_rescoring_applies_decay_without_new_events(demo_db):
    from flows.scheduled import rescore_accounts

    run_campaign(campaign_file=str(CAMPAIGN), simulate=True)
    with demo_db.connect() as connection:
        before = sum(connection.execute(select(Account.engagement_score)).scalars())
    from models.tables import EngagementEvent

    _time_passes(demo_db, EngagementEvent, "occurred_at", timedelta(days=60))
    result = rescore_accounts()
    with demo_db.connect() as connection:
        after = sum(connection.execute(select(Account.engagement_score)).scalars())
    assert result["accounts"] > 0
    assert 0 < after < before


def test_auto_runs_large_steps_on_processes_and_small_ones_on_threads():
    from flows.campaign import PROCESSES_FROM_CHUNKS, chunk_runner_kind

    assert chunk_runner_kind("auto", PROCESSES_FROM_CHUNKS, cores=2) == "processes"
    assert chunk_runner_kind("auto", PROCESSES_FROM_CHUNKS - 1, cores=2) == "threads"
    assert chunk_runner_kind("auto", 1000, cores=1) == "threads"
    assert chunk_runner_kind("threads", 1000, cores=8) == "threads"
    assert chunk_runner_kind("processes", 1, cores=1) == "processes"


def test_on_processes_chunks_grow_so_each_process_gets_a_few(monkeypatch):
    from flows.campaign import CHUNKS_PER_PROCESS, MAX_PROCESS_CHUNK, chunk_plan

    reset_settings()
    settings = get_settings()
    small = chunk_plan(settings, 3_000, cores=2)
    large = chunk_plan(settings, 60_000, cores=2)
    huge = chunk_plan(settings, 1_000_000, cores=2)
    assert (small.kind, small.workers, small.size) == ("threads", 4, settings.chunk_size)
    assert (large.kind, large.workers) == ("processes", 2)
    assert large.size == 60_000 // (2 * CHUNKS_PER_PROCESS)
    assert huge.size == MAX_PROCESS_CHUNK
    monkeypatch.setenv("ABM_CHUNK_RUNNER", "threads")
    reset_settings()
    assert chunk_plan(get_settings(), 1_000_000, cores=2).size == settings.chunk_size


def test_a_campaign_narrowed_after_a_dry_run_emails_only_its_new_audience(demo_db, tmp_path):
    wide = tmp_path / "launch.yaml"
    text = CAMPAIGN.read_text().replace("tiers: [1, 2, 3]", "tiers: [1, 2]")
    wide.write_text(text)
    rehearsal = run_campaign(campaign_file=str(wide), dry_run=True)
    assert rehearsal["sent"] > 0
    wide.write_text(text.replace("tiers: [1, 2]", "tiers: [1]"))  # same file, same key

    run_campaign(campaign_file=str(wide))

    with demo_db.connect() as connection:
        tiers = dict(connection.execute(select(Contact.email, Account.tier).join(Account)).all())
    emailed = {
        message_from_bytes(path.read_bytes(), policy=default)["To"].addresses[0].addr_spec
        for path in _outbox()
    }
    assert emailed and {tiers[address] for address in emailed} == {1}


def test_stop_at_stage_skips_an_account_imported_as_an_opportunity(demo_db, tmp_path):
    from sqlalchemy import func

    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    rescore_accounts_in_db(demo_db, load_icp_rules())
    with demo_db.connect() as connection:
        domain, account_id, people = connection.execute(
            select(Account.domain, Account.id, func.count(Contact.id))
            .join(Contact, Contact.account_id == Account.id)
            .where(Account.tier.is_not(None), Contact.status == "active")
            .group_by(Account.domain, Account.id)
            .order_by(func.count(Contact.id).desc(), Account.domain)
        ).first()
    stages = tmp_path / "stages.csv"
    stages.write_text(f"domain,stage\n{domain},Opportunity\n", encoding="utf-8")
    assert import_file("accounts", stages, demo_db, get_settings()).rejects == []
    path = tmp_path / "until-opportunity.yaml"
    path.write_text(
        "name: Until opportunity\nlinks: {guide: 'https://demo.example/g'}\n"
        "audience:\n  stages: [target, aware, engaged, mqa, opportunity, customer]\n"
        "caps: {per_contact: {max: 5, days: 7}, per_account: {max: 50, days: 7}}\n"
        "account_rules: {stop_at_stage: opportunity}\n"
        "steps:\n  - id: intro\n    template: intro\n"
    )
    summary = run_campaign(campaign_file=str(path))
    with demo_db.connect() as connection:
        theirs = connection.execute(
            select(Delivery.state, Delivery.skip_reason).where(Delivery.account_id == account_id)
        ).all()
    assert theirs and people > 0
    assert {tuple(row) for row in theirs} == {("skipped", "account_stage_opportunity")}
    assert summary["skipped_by_reason"]["account_stage_opportunity"] == len(theirs)
    assert summary["sent"] > 0

"""What the sender's relay and reputation allow: a daily limit, the warm-up of a new
sending domain and a messages-per-second rate shared by every chunk process, and the
circuit breaker that pauses a campaign whose recent emails draw complaints or bounces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from abm.demo_data import write_demo_csvs
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.db import session_scope
from models.store import insert_new_events
from models.tables import Delivery, utcnow
from stages.delivery.ledger import (
    DeliveryContext,
    due_delivery_ids,
    ledger_summary,
    plan_step,
    register_campaign,
    set_campaign_status,
)
from stages.delivery.pacing import (
    DEFAULT_WARMUP_RAMP,
    book_slots,
    warmup_day,
    warmup_quota,
)
from stages.delivery.rates import send_limits
from stages.delivery.reputation import Reputation, Thresholds, breach
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

ROOT = Path(__file__).resolve().parents[1]
# No frequency caps and no sending window: only the limits under test hold messages back.
CAMPAIGN = """\
key: pacing
name: Pacing
links: {guide: 'https://demo.example/g'}
caps: {per_contact: null, per_account: null}
steps:
  - id: intro
    template: intro
"""


def _configure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"ABM_{name.upper()}", value)
    reset_settings()


def _planned(engine, tmp_path: Path, contacts: int = 60) -> tuple[Path, DeliveryContext]:
    """Demo contacts imported and scored, the pacing campaign's one step planned."""
    accounts, people = write_demo_csvs(tmp_path / "data", contacts=contacts)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", people, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    path = tmp_path / "pacing.yaml"
    path.write_text(CAMPAIGN, encoding="utf-8")
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    url = engine.url.render_as_string(hide_password=False)
    return path, DeliveryContext(url, campaign, campaign_id, key, "intro")


def _deliver_due(engine, context: DeliveryContext, outbox: Path):
    ids = due_delivery_ids(engine, context.campaign_id, context.step)
    return deliver(engine, get_settings(), context, ids, OutboxBackend(outbox))


def _time_passes(engine, column: str, delta: timedelta) -> None:
    """Move the ledger's recorded times back by `delta` (in Python: SQLite has no datetime
    arithmetic)."""
    table = Delivery.__table__
    with engine.begin() as connection:
        for row_id, at in connection.execute(select(table.c.id, table.c[column])).all():
            if at is not None:
                connection.execute(
                    update(table).where(table.c.id == row_id).values({column: at - delta})
                )


def _deferred(engine) -> list[tuple[str | None, datetime]]:
    with engine.connect() as connection:
        return connection.execute(
            select(Delivery.last_error, Delivery.due_at).where(
                Delivery.state == "planned", Delivery.last_error.like("deferred:%")
            )
        ).all()


def _key(at: datetime | None) -> datetime:
    return at or datetime.max.replace(tzinfo=UTC)


def _sent(engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(Delivery.id).where(Delivery.state == "sent")).all())


def test_a_daily_limit_defers_the_rest_with_the_reason_and_they_go_the_next_day(
    engine, tmp_path, monkeypatch
):
    _configure(monkeypatch, send_max_per_day="10")
    _, context = _planned(engine, tmp_path)

    first = _deliver_due(engine, context, tmp_path / "outbox")

    assert first.sent == 10
    held = _deferred(engine)
    assert first.deferred == len(held) > 10
    assert {why for why, _ in held} == {"deferred: daily sending limit reached (10 per day)"}
    tomorrow = utcnow() + timedelta(hours=23)
    assert all(due > tomorrow for _, due in held)
    summary = ledger_summary(engine, context.campaign_id)
    assert summary["deferred"] == len(held)
    assert summary["deferred_by_reason"] == {"daily sending limit reached (10 per day)": len(held)}
    assert due_delivery_ids(engine, context.campaign_id, "intro") == []
    # asked again the same day (a run that forced them due), they wait for the oldest email
    # of the day to be 24 hours old
    with engine.begin() as connection:
        connection.execute(
            update(Delivery).where(Delivery.state == "planned").values(due_at=utcnow())
        )
    with engine.connect() as connection:
        oldest = min(connection.execute(select(Delivery.sent_at)).scalars().all(), key=_key)
    assert _deliver_due(engine, context, tmp_path / "outbox").sent == 0
    assert {due for _, due in _deferred(engine)} == {oldest + timedelta(days=1)}

    _time_passes(engine, "sent_at", timedelta(days=1, minutes=1))
    _time_passes(engine, "due_at", timedelta(days=1, minutes=1))
    second = _deliver_due(engine, context, tmp_path / "outbox")

    assert second.sent == 10
    assert _sent(engine) == 20
    assert len(list((tmp_path / "outbox").iterdir())) == 20


def test_warm_up_allows_each_day_its_quota_counted_from_the_domains_first_email(
    engine, tmp_path, monkeypatch
):
    ramp = tmp_path / "ramp.yaml"
    ramp.write_text("# day: emails that day\n1: 5\n3: 12\n10: 500\n", encoding="utf-8")
    _configure(monkeypatch, warmup=str(ramp))
    _, context = _planned(engine, tmp_path)

    day_one = _deliver_due(engine, context, tmp_path / "outbox")

    assert day_one.sent == 5
    reasons = {why for why, _ in _deferred(engine)}
    assert reasons == {"deferred: warm-up: day 1 of demo.example allows 5 a day"}

    _time_passes(engine, "sent_at", timedelta(days=2))
    _time_passes(engine, "due_at", timedelta(days=2))
    day_three = _deliver_due(engine, context, tmp_path / "outbox")

    assert day_three.sent == 12
    assert {why for why, _ in _deferred(engine)} == {
        "deferred: warm-up: day 3 of demo.example allows 12 a day"
    }


def test_the_default_warm_up_ramp_starts_at_fifty_and_doubles_then_ends():

    assert [warmup_quota(DEFAULT_WARMUP_RAMP, day) for day in (1, 2, 3, 4)] == [50, 100, 200, 400]
    last = max(DEFAULT_WARMUP_RAMP)
    assert warmup_quota(DEFAULT_WARMUP_RAMP, last) == 50 * 2 ** (last - 1)
    assert warmup_quota(DEFAULT_WARMUP_RAMP, last + 1) is None  # warmed up: no limit
    assert warmup_quota({1: 5, 3: 12}, 2) == 5  # a day not listed keeps the day before's


def test_warm_up_days_count_utc_calendar_days_from_the_first_email():

    now = datetime(2026, 11, 25, 0, 30, tzinfo=UTC)
    assert warmup_day(None, now) == 1
    assert warmup_day(datetime(2026, 11, 25, 0, 1, tzinfo=UTC), now) == 1
    assert warmup_day(datetime(2026, 11, 24, 23, 59, tzinfo=UTC), now) == 2
    assert warmup_day(datetime(2026, 11, 23, 9, 0, tzinfo=UTC), now) == 3


def test_a_bad_ramp_file_is_a_configuration_error_naming_the_setting(tmp_path, monkeypatch):

    ramp = tmp_path / "ramp.yaml"
    ramp.write_text("2: 100\n", encoding="utf-8")
    _configure(monkeypatch, warmup=str(ramp))
    with pytest.raises(ConfigError, match="ABM_WARMUP"):
        send_limits(get_settings())
    ramp.write_text("1: -5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ABM_WARMUP: .*ramp.yaml:1"):
        send_limits(get_settings())


def test_booked_slots_let_one_seconds_worth_go_at_once_then_pace_the_rest():

    now = 1000.0
    booked = book_slots(tat=0.0, now=now, rate=10.0, wanted=25, horizon=300.0)
    assert booked.count == 25
    assert booked.not_before[:10] == [pytest.approx(now)] * 10
    assert booked.not_before[24] == pytest.approx(now + 1.5)
    later = book_slots(tat=booked.tat, now=now, rate=10.0, wanted=5, horizon=300.0)
    assert later.not_before[0] == pytest.approx(now + 1.6)
    # no more than fits before the horizon: the rest wait for a later run
    assert book_slots(tat=0.0, now=now, rate=10.0, wanted=100, horizon=2.0).count == 30


def _split_delivery(engine, context, outboxes: list[Path]) -> float:
    """Deliver the due rows as two chunks on two threads at once; seconds it took."""
    ids = due_delivery_ids(engine, context.campaign_id, context.step)
    halves = [ids[::2], ids[1::2]]
    results: list = []

    def run(chunk: list[int], outbox: Path) -> None:
        results.append(deliver(engine, get_settings(), context, chunk, OutboxBackend(outbox)))

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(halves, outboxes, strict=True)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert sum(outcome.sent for outcome in results) == len(ids)
    return elapsed


def test_the_rate_per_second_holds_across_two_chunks_sending_at_once(engine, tmp_path, monkeypatch):
    rate = 20
    _configure(monkeypatch, send_rate_per_second=str(rate))
    _, context = _planned(engine, tmp_path, contacts=80)
    messages = len(due_delivery_ids(engine, context.campaign_id, context.step))
    assert messages >= 2 * rate

    elapsed = _split_delivery(engine, context, [tmp_path / "a", tmp_path / "b"])

    # a burst of one second's worth, then one message every 1/rate seconds
    assert elapsed >= (messages - rate) / rate


def test_the_rate_per_second_holds_across_two_processes(sqlite_url, tmp_path, monkeypatch):
    from models.db import get_engine

    rate = 20
    engine = get_engine(sqlite_url)
    _configure(monkeypatch, send_rate_per_second=str(rate), database_url=sqlite_url)
    path, context = _planned(engine, tmp_path, contacts=80)
    ids = due_delivery_ids(engine, context.campaign_id, context.step)
    assert len(ids) >= 2 * rate
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "send_rate_worker.py"), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for worker, chunk in zip(workers, (ids[::2], ids[1::2]), strict=True):
            assert worker.stdout.readline().strip() == "ready"
            worker.stdin.write(json.dumps(chunk) + "\n")
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.stdout.readline()) for worker in workers]
    finally:
        for worker in workers:
            worker.stdin.close()
            worker.wait(timeout=60)

    assert sum(report["sent"] for report in reports) == len(ids)
    elapsed = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    assert elapsed >= (len(ids) - rate) / rate


def _complaints(engine, context: DeliveryContext, how_many: int) -> None:
    """Spam reports from people the campaign emailed, as a provider's webhook stores them."""
    with engine.connect() as connection:
        sent = connection.execute(
            select(Delivery.contact_id, Delivery.account_id, Delivery.message_id)
            .where(Delivery.state == "sent")
            .order_by(Delivery.id)
            .limit(how_many)
        ).all()
    events = [
        {
            "provider": "sendgrid",
            "provider_event_id": f"spam-{contact_id}",
            "type": "spam_report",
            "channel": "email",
            "occurred_at": utcnow(),
            "account_id": account_id,
            "contact_id": contact_id,
            "campaign_id": context.campaign_id,
            "message_id": message_id,
        }
        for contact_id, account_id, message_id in sent
    ]
    with session_scope(engine) as session:
        assert insert_new_events(session, engine, events, utcnow()) == how_many


def test_complaints_past_the_threshold_pause_the_campaign_until_a_person_resumes_it(
    engine, tmp_path, monkeypatch
):
    _configure(monkeypatch, reputation_min_sent="20")
    _, context = _planned(engine, tmp_path)
    ids = due_delivery_ids(engine, context.campaign_id, context.step)
    first = deliver(engine, get_settings(), context, ids[:30], OutboxBackend(tmp_path / "o"))
    assert first.sent >= 20
    _complaints(engine, context, 3)

    paused = _deliver_due(engine, context, tmp_path / "o")

    assert paused.sent == 0
    because = ledger_summary(engine, context.campaign_id)["paused_because"]
    assert because == (
        f"paused: 3 spam complaints in the last {first.sent} emails "
        f"({300 / first.sent:.1f} %), at or above 0.3 %; "
        "check the list and content, then `abm campaign resume`"
    )
    again = _deliver_due(engine, context, tmp_path / "o")
    assert again.sent == 0  # it stays paused: only a person resumes it
    assert ledger_summary(engine, context.campaign_id)["paused_because"] == because

    set_campaign_status(engine, context.campaign_id, "active")
    resumed = _deliver_due(engine, context, tmp_path / "o")

    # the complaints that paused it are not counted again: the rest goes out
    assert resumed.sent > 0
    assert resumed.sent + resumed.skipped == len(ids) - 30
    assert ledger_summary(engine, context.campaign_id)["paused_because"] is None


def test_the_breaker_needs_a_minimum_sample_and_names_bounces_too():

    limits = Thresholds(complaint_percent=0.3, bounce_percent=5.0, window=1000, min_sent=500)
    assert breach(Reputation(sent=499, bounces=100, complaints=50), limits) is None
    assert breach(Reputation(sent=1000, bounces=49, complaints=2), limits) is None
    assert breach(Reputation(sent=1000, bounces=60, complaints=2), limits) == (
        "paused: 60 hard bounces in the last 1,000 emails (6.0 %), at or above 5 %; "
        "check the list (old or bought addresses bounce), then `abm campaign resume`"
    )
    assert breach(Reputation(sent=1000, bounces=0, complaints=7), limits).startswith(
        "paused: 7 spam complaints in the last 1,000 emails (0.7 %), at or above 0.3 %"
    )


def test_a_run_checks_the_breaker_before_it_delivers(
    database_url, tmp_path, monkeypatch, prefect_server
):
    from flows.campaign import run_campaign
    from models.db import get_engine

    engine = get_engine(database_url)
    _configure(monkeypatch, database_url=database_url, reputation_min_sent="20")
    path, context = _planned(engine, tmp_path)
    first = run_campaign(campaign_file=str(path))
    assert first["sent"] >= 20 and first["paused_because"] is None
    _complaints(engine, context, 3)

    second = run_campaign(campaign_file=str(path))

    assert second["paused"] is True
    assert second["paused_because"].startswith(
        f"paused: 3 spam complaints in the last {first['sent']} emails"
    )

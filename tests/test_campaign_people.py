"""Who is where in a campaign, and why: `abm campaign people` and the timeline of
`abm accounts show`, run as a user runs them (through `abm.cli.main`)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from tests_support import write_file

from abm.cli.common import out
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, utcnow
from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step, register_campaign
from stages.delivery.pacing import WEEKDAYS
from stages.delivery.send import deliver
from stages.engagement.journey import set_stage
from stages.engagement.rollup import store_events
from stages.targeting.audience import target_account_ids

PEOPLE = {
    "ana@acme.example": ("acme.example", "Ana", "Lee"),
    "bo@acme.example": ("acme.example", "Bo", "Park"),
    "cy@beta.example": ("beta.example", "Cy", None),
    "dee@gamma.example": ("gamma.example", "Dee", None),
}


def run_abm(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """`abm ARGS` in this process: exit code, stdout, stderr."""
    from abm.cli import main

    monkeypatch.setattr(sys, "argv", ["abm", *args])
    monkeypatch.setattr(out, "width", 250)
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def _campaign_file(tmp_path: Path, extra: str = "") -> Path:
    return write_file(
        tmp_path / "people.yaml",
        "key: people-check\nname: People check\naudience:\n  tiers: [1]\n"
        "consent_required: false\n"
        "caps:\n  per_contact: {max: 5, days: 7}\n  per_account: {max: 1, days: 7}\n"
        "links:\n  guide: https://demo.example/guide\n"
        f"{extra}steps:\n  - id: intro\n    template: intro\n",
    )


def _run_first_step(engine, tmp_path: Path, path: Path, moved_out: str | None = None) -> None:
    """Four people at three tier-1 accounts, the campaign's first step planned for them, then
    (optionally) one account moved to tier 2, then delivered to the outbox."""
    upsert_accounts(
        engine,
        [
            {"domain": domain, "name": domain.split(".")[0].title(), "attributes": {}}
            for domain in sorted({domain for domain, _, _ in PEOPLE.values()})
        ],
    )
    upsert_contacts(
        engine,
        [
            {
                "email": email,
                "account_domain": domain,
                "first_name": first,
                "last_name": last,
                "attributes": {},
            }
            for email, (domain, first, last) in PEOPLE.items()
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Account).values(tier=1))
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    if moved_out:
        with engine.begin() as connection:
            connection.execute(update(Account).where(Account.domain == moved_out).values(tier=2))
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, "intro"
    )
    ids = due_delivery_ids(engine, campaign_id, "intro")
    deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))


@pytest.fixture
def use_database(database_url, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    return database_url


def _people(capsys, monkeypatch, path: Path, *options: str) -> list[dict]:
    code, stdout, stderr = run_abm(capsys, monkeypatch, "campaign", "people", str(path), *options)
    assert code == 0, stderr
    return json.loads(stdout)


def test_people_shows_each_person_with_state_and_reason(
    engine, use_database, tmp_path, capsys, monkeypatch
):
    path = _campaign_file(tmp_path)
    _run_first_step(engine, tmp_path, path, moved_out="gamma.example")

    people = {row["email"]: row for row in _people(capsys, monkeypatch, path, "--json")}

    assert set(people) == set(PEOPLE)
    at_acme = [people["ana@acme.example"], people["bo@acme.example"]]
    assert sorted(row["state"] for row in at_acme) == ["deferred", "sent"]
    deferred = next(row for row in at_acme if row["state"] == "deferred")
    assert deferred["reason"] == "frequency cap per account"
    assert deferred["due_at"] and deferred["account_domain"] == "acme.example"
    assert deferred["step"] == "intro"
    sent = next(row for row in at_acme if row["state"] == "sent")
    assert sent["sent_at"] and sent["due_at"] is None and sent["reason"] is None
    assert people["ana@acme.example"]["name"] == "Ana Lee"
    left = people["dee@gamma.example"]
    assert (left["state"], left["skip_reason"]) == ("skipped", "left_audience")
    assert "no longer in the campaign's audience" in left["reason"]
    assert "tier 2 is not among the audience's tiers [1]" in left["reason"]
    assert people["cy@beta.example"]["state"] == "sent"
    # sorted by account, then person, then step
    assert [row["email"] for row in _people(capsys, monkeypatch, path, "--json")] == sorted(
        PEOPLE, key=lambda email: (PEOPLE[email][0], email)
    )

    code, human, _ = run_abm(capsys, monkeypatch, "campaign", "people", str(path))
    assert code == 0
    assert "frequency cap per account" in human
    assert deferred["email"] in human and "Ana Lee" in human
    assert "tier 2 is not among the audience's tiers [1]" in human
    code, _, hint = run_abm(capsys, monkeypatch, "campaign", "status", str(path))
    assert f"abm campaign people {path} --state deferred" in hint


def test_people_filters_by_state_and_account_and_caps_the_human_list(
    engine, use_database, tmp_path, capsys, monkeypatch
):
    path = _campaign_file(tmp_path)
    _run_first_step(engine, tmp_path, path, moved_out="gamma.example")

    only_deferred = _people(capsys, monkeypatch, path, "--state", "deferred", "--json")
    assert [row["state"] for row in only_deferred] == ["deferred"]
    assert only_deferred[0]["account_domain"] == "acme.example"
    at_beta = _people(capsys, monkeypatch, path, "--account", "Beta.Example", "--json")
    assert [row["email"] for row in at_beta] == ["cy@beta.example"]
    both = _people(
        capsys, monkeypatch, path, "--state", "sent", "--account", "acme.example", "--json"
    )
    assert len(both) == 1 and both[0]["account_domain"] == "acme.example"
    assert _people(capsys, monkeypatch, path, "--state", "uncertain", "--json") == []

    code, human, stderr = run_abm(
        capsys, monkeypatch, "campaign", "people", str(path), "--limit", "2"
    )
    assert code == 0
    assert "2 more" in stderr
    assert sum(email in human for email in PEOPLE) == 2


def test_an_unknown_state_is_a_usage_error_listing_the_states(
    engine, use_database, tmp_path, capsys, monkeypatch
):
    path = _campaign_file(tmp_path)
    _run_first_step(engine, tmp_path, path)

    code, _, stderr = run_abm(
        capsys, monkeypatch, "campaign", "people", str(path), "--state", "lost"
    )

    assert code == 2
    for state in ("planned", "deferred", "sent", "skipped", "failed", "dead", "uncertain"):
        assert state in stderr
    assert "Traceback" not in stderr


def test_a_deferral_by_sending_window_names_the_time_zone(
    engine, use_database, tmp_path, capsys, monkeypatch
):
    later = WEEKDAYS[(utcnow() + timedelta(days=3)).weekday()]
    window = (
        f"sending_window:\n  days: [{later}]\n  start: '09:00'\n  end: '17:00'\n"
        "  timezone: America/Chicago\n"
    )
    path = _campaign_file(tmp_path, window)
    _run_first_step(engine, tmp_path, path)

    deferred = _people(capsys, monkeypatch, path, "--state", "deferred", "--json")

    assert {row["email"] for row in deferred} == set(PEOPLE)
    assert {row["reason"] for row in deferred} == {"outside sending window (America/Chicago)"}
    assert all(row["due_at"] for row in deferred)


def test_accounts_show_has_a_timeline_in_time_order(
    engine, use_database, tmp_path, capsys, monkeypatch
):
    path = _campaign_file(tmp_path)
    _run_first_step(engine, tmp_path, path)
    with engine.connect() as connection:
        acme = connection.execute(
            select(Account.id).where(Account.domain == "acme.example")
        ).scalar_one()
    store_events(
        engine,
        [
            {
                "provider": "sendgrid",
                "provider_event_id": "ev-1",
                "type": "open",
                "channel": "email",
                "occurred_at": utcnow() - timedelta(hours=2),
                "account_id": acme,
                "contact_id": None,
            }
        ],
    )
    set_stage(engine, "acme.example", "engaged", "called the CIO")

    code, stdout, stderr = run_abm(
        capsys, monkeypatch, "accounts", "show", "acme.example", "--json"
    )

    assert code == 0, stderr
    timeline = json.loads(stdout)["timeline"]
    assert [entry["kind"] for entry in timeline] == ["event", "email", "stage"]
    assert all({"at", "kind", "what"} <= set(entry) for entry in timeline)
    assert [entry["at"] for entry in timeline] == sorted(entry["at"] for entry in timeline)
    event, email, stage = timeline
    assert event["source"] == "sendgrid" and "open" in event["what"]
    assert email["campaign"] == "people-check" and email["step"] == "intro"
    assert email["contact"] in ("ana@acme.example", "bo@acme.example")
    assert email["message_id"]
    assert (stage["source"], stage["reason"]) == ("person", "called the CIO")
    assert "target -> engaged" in stage["what"]

    code, human, _ = run_abm(capsys, monkeypatch, "accounts", "show", "acme.example")
    assert code == 0
    assert "Timeline" in human and "called the CIO" in human and "people-check" in human

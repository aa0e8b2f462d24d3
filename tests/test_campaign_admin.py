"""`abm campaign list` and scheduling campaign files on the `run-campaign` deployment from the
command line, against a real (temporary) Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from cli_support import run_abm
from sqlalchemy import Engine

from core.campaign_file import load_campaign
from models.db import session_scope
from models.store import upsert_accounts, upsert_contacts
from models.tables import Delivery
from stages.delivery.ledger import register_campaign, set_campaign_status

CAMPAIGNS = Path(__file__).resolve().parents[1] / "campaigns"


def _ledger(engine: Engine, campaign_id: int, states: list[str]) -> None:
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [
            {"email": f"p{i}@acme.example", "account_domain": "acme.example", "attributes": {}}
            for i in range(len(states))
        ],
    )
    with session_scope(engine) as session:
        session.add_all(
            Delivery(
                campaign_id=campaign_id,
                step="exec-intro",
                contact_id=i + 1,
                account_id=1,
                state=state,
            )
            for i, state in enumerate(states)
        )


def test_campaign_list_shows_key_status_steps_and_progress(db, tmp_path, capsys, monkeypatch):
    kept = shutil.copy(CAMPAIGNS / "tier1-executive-programme.yaml", tmp_path / "tier1.yaml")
    gone = shutil.copy(CAMPAIGNS / "tier3-nurture.yaml", tmp_path / "tier3.yaml")
    tier1 = register_campaign(db, *load_campaign(Path(kept)), Path(kept))
    tier3 = register_campaign(db, *load_campaign(Path(gone)), Path(gone))
    set_campaign_status(db, tier3, "paused")
    Path(gone).unlink()
    _ledger(db, tier1, ["sent", "sent", "planned"])

    code, out, err = run_abm(capsys, monkeypatch, "campaign", "list", "--json")
    assert code == 0, err
    rows = {row["key"]: row for row in json.loads(out)}
    assert list(rows) == ["tier1-executive-programme", "tier3-nurture"]
    one, three = rows["tier1-executive-programme"], rows["tier3-nurture"]
    assert one["status"] == "active" and three["status"] == "paused"
    assert one["name"].startswith("Tier 1 executive programme")
    assert [(s["id"], s["channel"]) for s in one["steps"]] == [
        ("exec-intro", "email"),
        ("rep-connect", "linkedin_task"),
        ("exec-follow-up", "email"),
    ]
    assert one["progress"] == {"sent": 2, "planned": 3}
    assert one["file_problem"] is None
    assert three["steps"] is None and three["progress"] == {"sent": 0, "planned": 0}
    assert "missing" in three["file_problem"] and "tier3.yaml" in three["file_problem"]

    code, out, err = run_abm(capsys, monkeypatch, "campaign", "list")
    assert code == 0, err
    assert "tier3-nurture" in out and "missing" in out and "2/3" in out


def test_campaign_list_with_no_campaigns_says_so(db, capsys, monkeypatch):
    code, out, err = run_abm(capsys, monkeypatch, "campaign", "list", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out, err = run_abm(capsys, monkeypatch, "campaign", "list")
    assert code == 0 and "abm campaign run" in err


@pytest.fixture
def deployment(prefect_server) -> Iterator[UUID]:
    """A `run-campaign/run-campaign` deployment as `prefect deploy --all` makes it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("run-campaign")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="run-campaign",
            parameters={"campaign_file": "campaigns/demo.yaml"},
            entrypoint="flows/campaign.py:run_campaign",
        )
    yield deployment_id
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def _schedules(deployment_id: UUID) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_schedules(deployment_id)


def test_schedule_a_campaign_file_list_and_unschedule_it(deployment, tmp_path, capsys, monkeypatch):
    shutil.copy(CAMPAIGNS / "tier1-executive-programme.yaml", tmp_path / "tier1.yaml")
    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("campaign", "schedule", "tier1.yaml", "--cron", "0 9 * * 1-5"),
        *("--timezone", "Europe/Berlin"),
    )
    assert code == 0, err
    (schedule,) = _schedules(deployment)
    assert schedule.schedule.cron == "0 9 * * 1-5"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.active is True
    assert schedule.parameters == {"campaign_file": "tier1.yaml"}

    # scheduling the same campaign again replaces its schedule; the time zone defaults to
    # the campaign's sending window
    code, _, err = run_abm(
        capsys, monkeypatch, "campaign", "schedule", "tier1.yaml", "--cron", "30 7 * * 2"
    )
    assert code == 0, err
    (schedule,) = _schedules(deployment)
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 7 * * 2", "Europe/London")

    code, out, err = run_abm(capsys, monkeypatch, "campaign", "schedules", "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    assert listed["deployment"] == "run-campaign/run-campaign"
    assert listed["campaign_file"] == "tier1.yaml"
    assert listed["campaign"] == "tier1-executive-programme"
    assert (listed["cron"], listed["timezone"], listed["active"]) == (
        "30 7 * * 2",
        "Europe/London",
        True,
    )
    code, out, err = run_abm(capsys, monkeypatch, "campaign", "schedules")
    assert code == 0 and "30 7 * * 2" in out

    code, _, err = run_abm(capsys, monkeypatch, "campaign", "unschedule", "tier1.yaml")
    assert code == 0, err
    assert _schedules(deployment) == []
    code, _, err = run_abm(capsys, monkeypatch, "campaign", "unschedule", "tier1.yaml")
    assert code == 2 and "not scheduled" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cron", "every morning"), "--cron"),
        (("--cron", "0 9 * * *", "--timezone", "Mars/Olympus"), "Mars/Olympus"),
    ],
)
def test_a_bad_cron_or_time_zone_is_a_usage_error(
    deployment, tmp_path, capsys, monkeypatch, args, message
):
    shutil.copy(CAMPAIGNS / "tier3-nurture.yaml", tmp_path / "tier3.yaml")
    code, _, err = run_abm(capsys, monkeypatch, "campaign", "schedule", "tier3.yaml", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert _schedules(deployment) == []


def test_scheduling_without_the_deployment_says_to_deploy(
    prefect_server, tmp_path, capsys, monkeypatch
):
    shutil.copy(CAMPAIGNS / "tier3-nurture.yaml", tmp_path / "tier3.yaml")
    code, _, err = run_abm(
        capsys, monkeypatch, "campaign", "schedule", "tier3.yaml", "--cron", "0 6 * * *"
    )
    assert code == 2 and "prefect deploy --all" in err and "Traceback" not in err


def test_scheduling_without_a_prefect_server_says_how_to_get_one(tmp_path):
    shutil.copy(CAMPAIGNS / "tier3-nurture.yaml", tmp_path / "tier3.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    for args in (
        ["campaign", "schedule", "tier3.yaml", "--cron", "0 6 * * *"],
        ["campaign", "schedules"],
        ["campaign", "unschedule", "tier3.yaml"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "abm", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert "prefect server start" in result.stderr
        assert "PREFECT_API_URL" in result.stderr
        assert "Traceback" not in result.stderr

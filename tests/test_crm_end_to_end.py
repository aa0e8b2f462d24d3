"""Issue 21's end-to-end test: a sequence is running at an account with several people; the
account's deal moves to closed-won in the CRM; `abm crm pull` makes the account `customer`;
the sequence's next step then sends to nobody there, and `abm campaign people` says why.

The CRM is the sandbox (files in ABM_CRM_SANDBOX_DIR) in the first test and HubSpot mocked
at the wire in the second, both on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import respx
import yaml
from cli_support import run_abm
from hubspot_contract import check_calls
from hubspot_fake import Clock, FakeHubSpot
from sqlalchemy import Engine, select, update
from tests_support import write_file

from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, Delivery
from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step, register_campaign
from stages.delivery.send import deliver
from stages.targeting.audience import target_account_ids

REPO = Path(__file__).resolve().parents[1]
PEOPLE = {
    "ana@acme.example": "acme.example",
    "bo@acme.example": "acme.example",
    "cy@acme.example": "acme.example",
    "dee@beta.example": "beta.example",
}


def _campaign(
    tmp_path: Path, stop_if: str = '[replied, unsubscribed, bounced, "stage >= opportunity"]'
) -> Path:
    return write_file(
        tmp_path / "sequence.yaml",
        "key: crm-e2e\nname: CRM end to end\naudience:\n  tiers: [1]\n"
        "consent_required: false\n"
        "caps:\n  per_contact: {max: 5, days: 7}\n  per_account: {max: 10, days: 7}\n"
        "links:\n  guide: https://demo.example/guide\n"
        "steps:\n"
        "  - id: intro\n    template: intro\n"
        "  - id: follow\n    template: intro\n    wait: 0d\n"
        f"    stop_if: {stop_if}\n",
    )


def _plan(engine: Engine, path: Path, index: int) -> None:
    """Plan step `index` for the campaign's audience as it is now."""
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    accounts = target_account_ids(engine, campaign.audience)
    plan_step(engine, campaign_id, key, campaign.steps, index, accounts)


def _deliver(engine: Engine, tmp_path: Path, path: Path, index: int) -> None:
    """Send what is due of step `index` through the outbox, with the send-time rules."""
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    step = campaign.steps[index].id
    context = DeliveryContext(engine.url.render_as_string(False), campaign, campaign_id, key, step)
    ids = due_delivery_ids(engine, campaign_id, step)
    deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))


def _states(engine: Engine, step: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as connection:
        return {
            email: (state, reason)
            for email, state, reason in connection.execute(
                select(Contact.email, Delivery.state, Delivery.skip_reason)
                .join(Contact, Contact.id == Delivery.contact_id)
                .where(Delivery.step == step)
            )
        }


@pytest.fixture
def sandbox(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_CRM", "sandbox")
    monkeypatch.setenv("ABM_CRM_SANDBOX_DIR", str(tmp_path / "crm"))
    reset_settings()
    return tmp_path / "crm"


def _running_sequence(engine: Engine, tmp_path: Path, **campaign: str) -> Path:
    """Four people at two tier-1 accounts; everyone got the first step, the second is due."""
    upsert_accounts(
        engine,
        [
            {"domain": d, "name": d.split(".")[0].title(), "attributes": {}}
            for d in set(PEOPLE.values())
        ],
    )
    upsert_contacts(
        engine,
        [
            {"email": email, "account_domain": domain, "first_name": email[:3], "attributes": {}}
            for email, domain in PEOPLE.items()
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Account).values(tier=1))
    path = _campaign(tmp_path, **campaign)
    _plan(engine, path, 0)
    _deliver(engine, tmp_path, path, 0)
    assert {state for state, _ in _states(engine, "intro").values()} == {"sent"}
    _plan(engine, path, 1)
    assert {state for state, _ in _states(engine, "follow").values()} == {"planned"}
    return path


def _stopped_at_acme(engine: Engine, tmp_path: Path, path: Path) -> None:
    """The next step goes out: nobody at Acme gets it, Beta's person does."""
    _deliver(engine, tmp_path, path, 1)
    assert _states(engine, "follow") == {
        "ana@acme.example": ("skipped", "stopped_stage_customer"),
        "bo@acme.example": ("skipped", "stopped_stage_customer"),
        "cy@acme.example": ("skipped", "stopped_stage_customer"),
        "dee@beta.example": ("sent", None),
    }
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 5  # four intros, one follow-up


def test_a_deal_won_in_the_crm_stops_the_sequence_for_everyone_at_the_account(
    engine: Engine, sandbox: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    path = _running_sequence(engine, tmp_path)

    # sales wins the deal in the CRM: an open deal, then closed-won
    write_file(
        sandbox / "deals.csv",
        "id,domain,name,stage,closed,won,amount,modified_at\n"
        "901,acme.example,Acme platform,contractsent,false,false,48000,2026-03-01T10:00:00Z\n",
    )
    code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull")
    assert code == 0, stderr
    write_file(
        sandbox / "deals.csv",
        "id,domain,name,stage,closed,won,amount,modified_at\n"
        "901,acme.example,Acme platform,closedwon,true,true,48000,2026-03-09T16:30:00Z\n",
    )
    code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--json")
    assert code == 0, stderr
    pulled = json.loads(stdout)
    assert pulled["stages_moved"] == 1
    assert pulled["moves"] == [
        "acme.example: opportunity -> customer (Sandbox CRM deal 'Acme platform' is closedwon)"
    ]

    code, stdout, _ = run_abm(capsys, monkeypatch, "accounts", "show", "acme.example", "--json")
    shown = json.loads(stdout)
    assert shown["stage"] == "customer"
    assert [(c["to_stage"], c["source"]) for c in shown["stage_history"]] == [
        ("opportunity", "crm"),
        ("customer", "crm"),
    ]
    assert [(d["crm_stage"], d["maps_to"]) for d in shown["crm"]["deals"]] == [
        ("closedwon", "customer")
    ]

    _stopped_at_acme(engine, tmp_path, path)

    code, stdout, stderr = run_abm(
        capsys, monkeypatch, "campaign", "people", str(path), "--account", "acme.example", "--json"
    )
    assert code == 0, stderr
    people = [row for row in json.loads(stdout) if row["step"] == "follow"]
    assert {row["email"] for row in people} == {e for e, d in PEOPLE.items() if d == "acme.example"}
    assert {row["reason"] for row in people} == {"sequence stopped: the account reached customer"}


def test_a_deal_won_in_hubspot_at_the_wire_stops_the_sequence_too(
    engine: Engine, database_url: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The same story with HubSpot mocked at the wire: `abm crm pull` searches the deals
    modified since its cursor, reads their companies' domains, and moves the account."""
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_CRM", "hubspot")
    monkeypatch.setenv("ABM_HUBSPOT_ACCESS_TOKEN", "pat-na1-e2e-0000-token")
    reset_settings()
    path = _running_sequence(engine, tmp_path)
    won = datetime(2026, 3, 9, 16, 30, tzinfo=UTC)
    with respx.mock(base_url="https://api.hubapi.com", assert_all_called=False) as router:
        hubspot = FakeHubSpot(router, Clock())
        hubspot.add("companies", "501", won - timedelta(days=30), domain="acme.example")
        hubspot.add(
            "deals",
            "9001",
            won,
            dealname="Acme platform",
            dealstage="closedwon",
            pipeline="default",
            amount="48000",
            hs_is_closed="true",
            hs_is_closed_won="true",
        )
        hubspot.link("deals", "companies", "9001", "501")
        code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--json")
        check_calls(router.calls)
    assert code == 0, stderr
    assert json.loads(stdout)["moves"] == [
        "acme.example: target -> customer (HubSpot deal 'Acme platform' is closedwon)"
    ]
    _stopped_at_acme(engine, tmp_path, path)


def test_a_meeting_from_before_the_campaign_stops_nothing(
    engine: Engine, sandbox: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Found in review: a first pull reads the CRM's whole meeting history, and a meeting
    from 2023 stopped today's sequence. Only meetings from the campaign's start count."""
    path = _running_sequence(engine, tmp_path, stop_if="[meeting]")
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_file(
        sandbox / "meetings.csv",
        "id,domain,attendee_emails,title,start_at,outcome,modified_at\n"
        "m1,acme.example,ana@acme.example,Old call,2023-05-02T10:00:00Z,COMPLETED,"
        "2023-05-02T11:00:00Z\n"
        f"m2,beta.example,dee@beta.example,Demo,{soon},SCHEDULED,2026-03-09T16:30:00Z\n",
    )
    code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--json")
    assert code == 0 and json.loads(stdout)["meetings_stored"] == 2, stderr

    _deliver(engine, tmp_path, path, 1)
    # Ana's 2023 call neither stops her nor holds her colleagues; Dee's demo stops her
    assert _states(engine, "follow") == {
        "ana@acme.example": ("sent", None),
        "bo@acme.example": ("sent", None),
        "cy@acme.example": ("sent", None),
        "dee@beta.example": ("skipped", "stopped_meeting"),
    }


def test_the_sync_crm_deployment_is_there_and_off_by_default() -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    sync = next(d for d in deployments if d["name"] == "sync-crm")
    assert sync["entrypoint"] == "flows/scheduled.py:sync_crm"
    assert [(s.get("interval"), s["active"]) for s in sync["schedules"]] == [(1800, False)]

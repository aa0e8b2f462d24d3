"""When the provider refuses us rather than a recipient (a wrong key, an unverified sender),
nothing is lost: the messages stay planned, the campaign pauses with the reason, and a resume
after the fix sends them all. When a request may have been processed (a 500 after it was
sent), the messages are `uncertain`, never sent again blindly. SendGrid is mocked at the
wire; the ledger, the send loop and the backend are the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from sqlalchemy import select

from abm.demo_data import write_demo_csvs
from connectors.email.sendgrid import SendGridBackend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.tables import Delivery
from stages.delivery.ledger import (
    DeliveryContext,
    due_delivery_ids,
    ledger_summary,
    plan_step,
    register_campaign,
    set_campaign_status,
)
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
BASE = "https://api.sendgrid.com"
KEY = "SG.wrong-key.abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def planned(engine, tmp_path):
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=40)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    key, campaign = load_campaign(CAMPAIGN)
    campaign = campaign.model_copy(
        update={"caps": campaign.caps.model_copy(update={"per_contact": None, "per_account": None})}
    )
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, "intro"
    )
    return campaign_id, context


def _deliver(engine, context, router):
    backend = SendGridBackend(
        KEY, transport=httpx.MockTransport(router.handler), sleep=lambda _: None
    )
    return deliver(
        engine,
        get_settings(),
        context,
        due_delivery_ids(engine, context.campaign_id, "intro"),
        backend,
    )


def _states(engine) -> dict[str, int]:
    with engine.connect() as connection:
        states: dict[str, int] = {}
        for state, attempts in connection.execute(select(Delivery.state, Delivery.attempts)):
            states[state] = states.get(state, 0) + 1
            if state == "planned":
                assert attempts == 0  # the refused attempt was given back
        return states


@pytest.mark.parametrize(
    ("status", "message", "names"),
    [
        (
            401,
            "The provided authorization grant is invalid, expired, or revoked",
            "ABM_SENDGRID_API_KEY",
        ),
        (403, "The from address does not match a verified Sender Identity.", "ABM_SENDER"),
    ],
)
def test_a_refused_key_or_sender_pauses_the_campaign_and_loses_nothing(
    engine, planned, status, message, names
):
    campaign_id, context = planned
    field = "from" if status == 403 else None
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/mail/send").mock(
            return_value=httpx.Response(
                status, json={"errors": [{"field": field, "message": message}]}
            )
        )
        outcome = _deliver(engine, context, router)
    assert route.call_count == 1  # the first refusal stops the run
    assert outcome.sent == 0
    states = _states(engine)
    assert "dead" not in states and "failed" not in states
    reason = ledger_summary(engine, campaign_id)["paused_because"]
    assert reason and names in reason and KEY not in reason

    set_campaign_status(engine, campaign_id, "active")  # the person fixed it and resumed
    with respx.mock(base_url=BASE) as router:
        router.post("/v3/mail/send").mock(
            return_value=httpx.Response(202, headers={"X-Message-Id": "m"})
        )
        again = _deliver(engine, context, router)
        body = json.loads(router.calls[0].request.content)
    summary = ledger_summary(engine, campaign_id)
    assert again.sent == summary["sent"] > 0 and summary["paused_because"] is None
    # campaign and step travel with every message, so its events find their step
    assert {p["custom_args"]["abm_step"] for p in body["personalizations"]} == {"intro"}
    assert body["tracking_settings"]["subscription_tracking"] == {"enable": False}
    assert "planned" not in _states(engine)


def test_a_500_after_the_request_left_makes_the_messages_uncertain_not_resent(engine, planned):
    campaign_id, context = planned
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/mail/send").mock(return_value=httpx.Response(500))
        _deliver(engine, context, router)
    assert route.call_count == 1  # never sent twice by a retry
    assert ledger_summary(engine, campaign_id)["uncertain"] > 0
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        route = router.post("/v3/mail/send").mock(return_value=httpx.Response(202))
        _deliver(engine, context, router)
    assert route.call_count == 0

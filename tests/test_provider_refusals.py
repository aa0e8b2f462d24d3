"""When the provider refuses us rather than a recipient (a wrong key, an unverified sender),
nothing is lost: the messages stay planned, the campaign pauses with the reason, and a resume
after the fix sends them all. When a request may have been processed (a 500 after it was
sent), the messages are `uncertain`, never sent again blindly. SendGrid is mocked at the
wire; the ledger, the send loop and the backend are the real ones."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from sendgrid_delivery import BASE, KEY, deliver_through
from sqlalchemy import select

from models.tables import Delivery
from stages.delivery.ledger import (
    ledger_summary,
    set_campaign_status,
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
        outcome = deliver_through(engine, context, router)
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
        again = deliver_through(engine, context, router)
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
        deliver_through(engine, context, router)
    assert route.call_count == 1  # never sent twice by a retry
    assert ledger_summary(engine, campaign_id)["uncertain"] > 0
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        route = router.post("/v3/mail/send").mock(return_value=httpx.Response(202))
        deliver_through(engine, context, router)
    assert route.call_count == 0

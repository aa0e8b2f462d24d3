"""The demo campaign's first step planned for a few demo people, and delivered through the
real SendGrid backend against a respx router: for the tests of what the ledger does when the
provider refuses, fails or answers after a crash."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx
from sqlalchemy import Engine

from abm.demo_data import write_demo_csvs
from connectors.email.sendgrid import SendGridBackend
from core.campaign_file import load_campaign
from core.settings import get_settings
from stages.delivery.ledger import (
    ChunkOutcome,
    DeliveryContext,
    due_delivery_ids,
    plan_step,
    register_campaign,
)
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
BASE = "https://api.sendgrid.com"
KEY = "SG.wrong-key.abcdefghijklmnopqrstuvwxyz0123456789"


def plan_intro(engine: Engine, tmp_path: Path, contacts: int = 40) -> tuple[int, DeliveryContext]:
    """(campaign id, delivery context) with the intro step planned for `contacts` demo
    people, caps lifted."""
    accounts, contacts_csv = write_demo_csvs(tmp_path / "data", contacts=contacts)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts_csv, engine, get_settings())
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


def deliver_through(
    engine: Engine, context: DeliveryContext, router: respx.MockRouter
) -> ChunkOutcome:
    """Every due row of the step, sent through SendGrid as `router` answers."""
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

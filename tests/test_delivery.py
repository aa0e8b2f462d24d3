"""The delivery engine without Prefect: pausing mid-chunk, exactly-once bookkeeping."""

from pathlib import Path

import pytest
from sqlalchemy import select

from abm.demo_data import write_demo_csvs
from connectors.email.outbox import OutboxBackend
from core.campaign_file import Audience, load_campaign
from core.settings import get_settings
from models.tables import Contact, Delivery
from stages.content.rendering import choose_variant
from stages.delivery.ledger import (
    DeliveryContext,
    due_delivery_ids,
    plan_step,
    register_campaign,
    set_campaign_status,
)
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


class PausingOutbox(OutboxBackend):
    """A real outbox whose operator presses pause after the first batch."""

    batch_size = 5

    def __init__(self, directory: Path, engine, campaign_id: int) -> None:
        super().__init__(directory)
        self.engine, self.campaign_id = engine, campaign_id

    def send_messages(self, messages):
        results = super().send_messages(messages)
        set_campaign_status(self.engine, self.campaign_id, "paused")
        return results


def _planned_intro(engine, tmp_path: Path) -> tuple[int, list[int], DeliveryContext]:
    """60 demo contacts imported and scored, the demo campaign's first step planned."""
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=60)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    ids = due_delivery_ids(engine, campaign_id, "intro")
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, "intro"
    )
    return campaign_id, ids, context


def test_pausing_mid_chunk_stops_before_the_next_batch_and_loses_nothing(engine, tmp_path):
    campaign_id, ids, context = _planned_intro(engine, tmp_path)
    backend = PausingOutbox(tmp_path / "outbox", engine, campaign_id)

    outcome = deliver(engine, get_settings(), context, ids, backend)

    assert outcome.sent == 5
    with engine.connect() as connection:
        rest = connection.execute(
            select(Delivery.state, Delivery.attempts).where(Delivery.state != "sent")
        ).all()
    assert {state for state, _ in rest} <= {"planned", "skipped"}
    assert any(state == "planned" for state, _ in rest)
    # the attempt each claim took is given back to the rows that were not sent
    assert all(attempts == 0 for state, attempts in rest if state == "planned")
    assert len(list((tmp_path / "outbox").iterdir())) == 5
    set_campaign_status(engine, campaign_id, "active")
    rest = deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))
    assert outcome.sent + rest.sent == len(list((tmp_path / "outbox").iterdir()))


class CrashingOutbox(OutboxBackend):
    """A real outbox whose process hits a bug in the middle of its second batch."""

    batch_size = 5

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.batches = 0

    def send_messages(self, messages):
        self.batches += 1
        if self.batches == 2:
            raise RuntimeError("bug in the middle of a batch")
        return super().send_messages(messages)


def test_a_failing_chunk_gives_back_what_it_never_handed_over(engine, tmp_path):
    _, ids, context = _planned_intro(engine, tmp_path)

    with pytest.raises(RuntimeError, match="bug"):
        deliver(engine, get_settings(), context, ids, CrashingOutbox(tmp_path / "outbox"))

    with engine.connect() as connection:
        states = connection.execute(
            select(Delivery.state, Delivery.claimed_by, Delivery.attempts)
        ).all()
    by_state: dict[str, int] = {}
    for state, _, _ in states:
        by_state[state] = by_state.get(state, 0) + 1
    assert by_state["sent"] == 5  # the first batch, recorded
    assert by_state["sending"] == 5  # the batch in the provider's hands: for the lease
    assert "rendered" not in by_state  # nothing claimed is left waiting for a lease
    assert all(
        claimed is None and attempts == 0 for s, claimed, attempts in states if s == "planned"
    )
    again = deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))
    assert again.sent == by_state["planned"]


def _two_people_one_replied(engine):
    from datetime import timedelta

    from models.store import upsert_accounts, upsert_contacts
    from models.tables import utcnow
    from stages.engagement.rollup import store_events

    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [
            {"email": f"{name}@acme.example", "account_domain": "acme.example", "attributes": {}}
            for name in ("ana", "bo")
        ],
    )
    replied_at = utcnow() - timedelta(days=1)
    store_events(
        engine,
        [
            {
                "provider": "t",
                "provider_event_id": "r1",
                "type": "reply",
                "channel": "email",
                "occurred_at": replied_at,
                "account_id": 1,
                "contact_id": 1,
            }
        ],
    )
    rows = [{"contact_id": c, "account_id": 1, "stage": "engaged"} for c in (1, 2)]
    return rows, replied_at


def test_a_reply_delays_everyone_else_at_the_account(engine):
    from datetime import timedelta

    from core.campaign_file import AccountRules
    from models.tables import utcnow
    from stages.delivery.send_rules import account_holds

    rows, replied_at = _two_people_one_replied(engine)
    skip, defer = account_holds(engine, AccountRules(on_reply="delay", delay="14d"), rows, utcnow())
    assert skip == {}
    assert set(defer) == {2}
    assert abs((defer[2] - (replied_at + timedelta(days=14))).total_seconds()) < 1


def test_a_reply_can_stop_everyone_else_and_a_stage_stops_the_whole_account(engine):
    from core.campaign_file import AccountRules
    from models.tables import utcnow
    from stages.delivery.send_rules import account_holds

    rows, _ = _two_people_one_replied(engine)
    skip, defer = account_holds(engine, AccountRules(on_reply="stop"), rows, utcnow())
    assert (skip, defer) == ({2: "account_replied"}, {})
    at_opportunity = [{**row, "stage": "opportunity"} for row in rows]
    skip, _ = account_holds(engine, AccountRules(), at_opportunity, utcnow())
    assert skip == {1: "account_stage_opportunity", 2: "account_stage_opportunity"}


def test_a_reply_pauses_the_others_until_a_person_releases_the_account(engine):
    from datetime import timedelta

    from core.campaign_file import AccountRules
    from models.db import session_scope
    from models.tables import Campaign, utcnow
    from stages.delivery.send_rules import account_holds, release_account
    from stages.engagement.rollup import store_events

    rows, _ = _two_people_one_replied(engine)
    with session_scope(engine) as session:
        session.add(Campaign(key="c", name="C"))
    pause = AccountRules(on_reply="pause")
    skip, defer = account_holds(engine, pause, rows, utcnow(), campaign_id=1)
    assert skip == {} and set(defer) == {2}

    release_account(engine, 1, "acme.example")
    assert account_holds(engine, pause, rows, utcnow(), campaign_id=1) == ({}, {})

    store_events(
        engine,
        [
            {
                "provider": "t",
                "provider_event_id": "r2",
                "type": "reply",
                "channel": "email",
                "occurred_at": utcnow() + timedelta(seconds=1),
                "account_id": 1,
                "contact_id": 1,
            }
        ],
    )
    _, defer = account_holds(engine, pause, rows, utcnow(), campaign_id=1)
    assert set(defer) == {2}


def test_variants_are_drawn_once_per_person_into_the_ledger_and_never_redrawn(engine, tmp_path):
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=200)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    path = CAMPAIGN.with_name("tier1-executive-programme.yaml")
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    with_variants = campaign.steps
    without = [with_variants[0].model_copy(update={"variants": []}), *with_variants[1:]]
    targets = target_account_ids(engine, Audience(tiers=[1, 2, 3], stages=[]))
    early, late = targets[: len(targets) // 2], targets[len(targets) // 2 :]

    plan_step(engine, campaign_id, key, without, 0, early)
    planned = plan_step(engine, campaign_id, key, with_variants, 0, targets)
    again = plan_step(engine, campaign_id, key, with_variants, 0, targets)

    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.account_id, Delivery.variant, Contact.email).join(
                Contact, Contact.id == Delivery.contact_id
            )
        ).all()
    weights = [(v.id, v.weight) for v in with_variants[0].variants]
    assert planned == sum(1 for row in rows if row.account_id in set(late)) > 20
    assert again == 0
    assert all(row.variant is None for row in rows if row.account_id in set(early))
    drawn = [row for row in rows if row.account_id in set(late)]
    assert {row.variant for row in drawn} == {"a", "b"}
    assert all(
        row.variant == choose_variant(weights, f"{key}:exec-intro:{row.email}") for row in drawn
    )


def test_a_limit_caps_the_rows_planned_across_account_batches(engine, tmp_path):
    campaign_id, ids, _ = _planned_intro(engine, tmp_path)
    key, campaign = load_campaign(CAMPAIGN)
    targets = target_account_ids(engine, campaign.audience)
    follow_up = [campaign.steps[0].model_copy(update={"id": "second-look"})]

    first = plan_step(engine, campaign_id, key, follow_up, 0, targets, limit=7)
    more = plan_step(engine, campaign_id, key, follow_up, 0, targets, limit=7)
    raised = plan_step(engine, campaign_id, key, follow_up, 0, targets, limit=10)

    assert (first, more, raised) == (7, 0, 3)
    assert len(ids) > 10

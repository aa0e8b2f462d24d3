"""The delivery engine without Prefect: pausing mid-chunk, exactly-once bookkeeping."""

from pathlib import Path

from sqlalchemy import select

from abm.campaign_file import load_campaign
from abm.demo_data import write_demo_csvs
from abm.settings import get_settings
from connectors.email.outbox import OutboxBackend
from flows.delivery import (
    DeliveryContext,
    deliver,
    due_delivery_ids,
    plan_step,
    register_campaign,
    set_campaign_status,
)
from flows.import_csv import import_file
from flows.targeting import load_icp_rules, rescore_accounts_in_db, target_account_ids
from models.tables import Delivery

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


def test_pausing_mid_chunk_stops_before_the_next_batch_and_loses_nothing(engine, tmp_path):
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=60)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    plan_step(engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, [1, 2, 3]))
    ids = due_delivery_ids(engine, campaign_id, "intro")
    context = DeliveryContext(
        engine.url.render_as_string(False), str(CAMPAIGN), campaign_id, key, "intro"
    )
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

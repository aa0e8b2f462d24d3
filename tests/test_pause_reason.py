"""Who paused a campaign is said wherever the pause is reported (the run summary, `campaign
status`, the console): a rule's own reason, else the person, the door and the time from the
audit log."""

from __future__ import annotations

from datetime import UTC, datetime

from models.audit import record_action
from models.db import session_scope
from models.tables import Campaign
from stages.delivery.ledger import pause_reason, set_campaign_status


def _campaign(engine) -> int:
    with session_scope(engine) as session:
        campaign = Campaign(key="spring", name="Spring")
        session.add(campaign)
        session.flush()
        return campaign.id


def test_a_pause_names_who_paused_it_where_and_when(engine):
    campaign_id = _campaign(engine)
    assert pause_reason(engine, campaign_id) is None
    set_campaign_status(engine, campaign_id, "paused")
    assert "in the console or with `abm campaign pause`" in pause_reason(engine, campaign_id)
    record_action(
        engine, "olga", "campaign.pause", "spring", at=datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    )
    assert pause_reason(engine, campaign_id) == (
        "paused by olga in the console on 2026-12-04 09:30 UTC"
    )
    record_action(
        engine,
        "root",
        "campaign.pause",
        "spring",
        via="cli",
        at=datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
    )
    record_action(
        engine, "olga", "campaign.pause", "autumn", at=datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    )
    assert pause_reason(engine, campaign_id) == (
        "paused by root with `abm campaign pause` on 2026-12-04 10:00 UTC"
    )


def test_a_rules_reason_is_kept_as_it_was_given(engine):
    campaign_id = _campaign(engine)
    record_action(engine, "olga", "campaign.pause", "spring")
    set_campaign_status(engine, campaign_id, "paused", "the bounce rate passed 5 %")
    assert pause_reason(engine, campaign_id) == "the bounce rate passed 5 %"

"""The audience is asked again when a message leaves: a narrowed campaign file, an account
that moved tier or stage, a role no longer wanted. And a suppression's channel is kept: an
email-only suppression does not take a company out of a LinkedIn audience."""

from collections import Counter
from pathlib import Path

from sqlalchemy import select, update

from abm.demo_data import write_demo_csvs
from connectors.email.outbox import OutboxBackend
from core.campaign_file import CampaignFile, load_campaign
from core.settings import get_settings
from models.store import apply_suppressions
from models.tables import Account, Contact, Delivery, Suppression
from stages.content.compose import Composer
from stages.delivery.ledger import (
    DeliveryContext,
    due_delivery_ids,
    pending_outside_audience,
    plan_step,
    register_campaign,
)
from stages.delivery.send import _load_rows, deliver
from stages.delivery.send_rules import check_chunk
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


def _planned(engine, tmp_path: Path, campaign: CampaignFile) -> tuple[str, int]:
    """Demo data scored, the campaign's first step planned for its audience as it is now."""
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=120)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    key = "launch"
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    targets = target_account_ids(engine, campaign.audience)
    plan_step(engine, campaign_id, key, campaign.steps, 0, targets)
    return key, campaign_id


def _deliver(engine, tmp_path, campaign: CampaignFile, key: str, campaign_id: int):
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, campaign.steps[0].id
    )
    ids = due_delivery_ids(engine, campaign_id, campaign.steps[0].id)
    return deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))


def _states(engine) -> dict[str, tuple[str, str | None, str | None, int]]:
    with engine.connect() as connection:
        return {
            email: (state, reason, detail, tier)
            for email, state, reason, detail, tier in connection.execute(
                select(
                    Contact.email,
                    Delivery.state,
                    Delivery.skip_reason,
                    Delivery.last_error,
                    Account.tier,
                )
                .join(Contact, Contact.id == Delivery.contact_id)
                .join(Account, Account.id == Delivery.account_id)
            )
        }


def _narrowed(campaign: CampaignFile, **audience) -> CampaignFile:
    return campaign.model_copy(update={"audience": campaign.audience.model_copy(update=audience)})


def test_rows_planned_for_a_wider_audience_are_skipped_when_the_file_is_narrowed(engine, tmp_path):
    _, wide = load_campaign(CAMPAIGN)
    wide = _narrowed(wide, tiers=[1, 2])
    key, campaign_id = _planned(engine, tmp_path, wide)
    narrow = _narrowed(wide, tiers=[1])
    targets = target_account_ids(engine, narrow.audience)
    waiting = pending_outside_audience(engine, campaign_id, narrow.audience, targets)

    outcome = _deliver(engine, tmp_path, narrow, key, campaign_id)

    states = _states(engine)
    tier2 = {email: row for email, row in states.items() if row[3] == 2}
    assert tier2 and waiting == len(tier2)
    assert {row[0] for row in tier2.values()} == {"skipped"}
    assert {row[1] for row in tier2.values()} == {"left_audience"}
    assert all("tier 2" in row[2] for row in tier2.values())
    assert outcome.skipped_by_reason["left_audience"] == len(tier2)
    sent = {email for email, row in states.items() if row[0] == "sent"}
    assert sent and all(states[email][3] == 1 for email in sent)
    assert outcome.sent == len(list((tmp_path / "outbox").iterdir()))


def test_widening_the_audience_again_plans_those_people_again(engine, tmp_path):
    _, wide = load_campaign(CAMPAIGN)
    key, campaign_id = _planned(engine, tmp_path, wide)
    narrow = _narrowed(wide, tiers=[1])
    _deliver(engine, tmp_path, narrow, key, campaign_id)
    left = Counter(row[1] for row in _states(engine).values())["left_audience"]
    assert left > 0

    replanned = plan_step(
        engine, campaign_id, key, wide.steps, 0, target_account_ids(engine, wide.audience)
    )
    outcome = _deliver(engine, tmp_path, wide, key, campaign_id)

    assert replanned == left
    assert "left_audience" not in outcome.skipped_by_reason
    assert Counter(row[1] for row in _states(engine).values())["left_audience"] == 0


def test_an_account_that_moved_to_a_stage_outside_the_audience_gets_nothing(engine, tmp_path):
    _, campaign = load_campaign(CAMPAIGN)
    campaign = _narrowed(campaign, stages=["target", "aware", "engaged"])
    key, campaign_id = _planned(engine, tmp_path, campaign)
    with engine.begin() as connection:
        moved = connection.execute(select(Delivery.account_id).limit(1)).scalar_one()
        connection.execute(update(Account).where(Account.id == moved).values(stage="mqa"))

    _deliver(engine, tmp_path, campaign, key, campaign_id)

    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.state, Delivery.skip_reason, Delivery.last_error).where(
                Delivery.account_id == moved
            )
        ).all()
    assert rows and {(state, reason) for state, reason, _ in rows} == {("skipped", "left_audience")}
    assert all("stage mqa" in detail for _, _, detail in rows)


def test_a_role_no_longer_wanted_is_skipped_at_send_time(engine, tmp_path):
    _, campaign = load_campaign(CAMPAIGN)
    key, campaign_id = _planned(engine, tmp_path, campaign)
    only = _narrowed(campaign, roles=["decision_maker"])

    _deliver(engine, tmp_path, only, key, campaign_id)

    with engine.connect() as connection:
        rows = connection.execute(
            select(Contact.role, Delivery.state, Delivery.skip_reason).join(
                Contact, Contact.id == Delivery.contact_id
            )
        ).all()
    assert {role for role, state, _ in rows if state == "sent"} == {"decision_maker"}
    others = [reason for role, _, reason in rows if role != "decision_maker"]
    assert others and set(others) <= {
        "left_audience",
        "unsubscribed",
        "bounced",
        "suppressed",
        "no_consent",
    }
    assert "left_audience" in others


def _linkedin_companies(campaign: CampaignFile) -> CampaignFile:
    step = {"id": "ads", "channel": "linkedin_audience", "matched_audience": "companies"}
    return CampaignFile.model_validate(
        campaign.model_dump(by_alias=True, exclude={"steps"}) | {"steps": [step]}
    )


def _checked(engine, campaign: CampaignFile, key: str, campaign_id: int):
    context = DeliveryContext(engine.url.render_as_string(False), campaign, campaign_id, key, "ads")
    step = campaign.steps[0]
    composer = Composer(get_settings(), key, campaign_id, campaign, step)
    rows = _load_rows(engine, due_delivery_ids(engine, campaign_id, "ads"))
    return rows, check_chunk(engine, context, campaign, step, composer, rows)


def test_an_email_only_domain_suppression_keeps_the_company_in_a_linkedin_audience(
    engine, tmp_path
):
    _, email_campaign = load_campaign(CAMPAIGN)
    campaign = _linkedin_companies(email_campaign)
    key, campaign_id = _planned(engine, tmp_path, campaign)
    with engine.begin() as connection:
        domain = connection.execute(
            select(Account.domain).join(Delivery, Delivery.account_id == Account.id).limit(1)
        ).scalar_one()
        connection.execute(
            Suppression.__table__.insert(),
            [{"kind": "domain", "value": domain, "channel": "email", "source": "import"}],
        )
    apply_suppressions(engine)  # marks the company's people `suppressed` for email

    rows, (to_send, skipped, _, _) = _checked(engine, campaign, key, campaign_id)

    at_domain = {row["contact_id"] for row in rows if row["domain"] == domain}
    assert at_domain
    assert at_domain <= {row["contact_id"] for row in to_send}
    assert not at_domain & {row["_id"] for row in skipped}


def test_a_linkedin_or_all_channel_suppression_takes_the_company_out(engine, tmp_path):
    _, email_campaign = load_campaign(CAMPAIGN)
    campaign = _linkedin_companies(email_campaign)
    key, campaign_id = _planned(engine, tmp_path, campaign)
    with engine.begin() as connection:
        first, second = connection.execute(
            select(Account.domain)
            .join(Delivery, Delivery.account_id == Account.id)
            .distinct()
            .limit(2)
        ).scalars()
        connection.execute(
            Suppression.__table__.insert(),
            [
                {"kind": "domain", "value": first, "channel": "linkedin", "source": "import"},
                {"kind": "domain", "value": second, "channel": "all", "source": "import"},
            ],
        )

    rows, (to_send, _, _, reasons) = _checked(engine, campaign, key, campaign_id)

    assert not {row["domain"] for row in to_send} & {first, second}
    assert reasons["suppressed"] >= sum(1 for row in rows if row["domain"] in (first, second))

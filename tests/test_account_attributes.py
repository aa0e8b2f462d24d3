"""Extra account columns (`owner`, `segment`, ...) kept in `Account.attributes` reach
templates as `account.attributes.<column>`, rep tasks as their `owner` column and campaign
audiences as `attributes.<column>` filters."""

from __future__ import annotations

import csv
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy import select, update
from tests_support import write_file

from connectors.channels import rep_tasks_path
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, Delivery
from stages.content.compose import Composer
from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step, register_campaign
from stages.delivery.preview import preview, validate_campaign
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids

ROOT = Path(__file__).resolve().parents[1]
OWNER_BODY = (
    "<p>Hi {{ contact.first_name }},</p>\n"
    "<p>Your account manager is {{ account.attributes.owner }}.</p>\n"
    "<p>{{ account.attributes.region | default('') }}</p>\n"
)
ROW = {
    "delivery_id": 5,
    "contact_id": 9,
    "email": "ana@acme.example",
    "first_name": "Ana",
    "last_name": "Lee",
    "title": "CFO",
    "seniority": "c_level",
    "function": "finance",
    "role": "approver",
    "domain": "acme.example",
    "account_name": "Acme GmbH",
    "industry": "Manufacturing",
    "tier": 1,
    "country": "DE",
    "employees": 900,
    "stage": "target",
    "variant": None,
}


@pytest.fixture
def owner_templates(tmp_path, monkeypatch) -> Path:
    """A templates folder with the repository's templates and an email naming the owner."""
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    write_file(
        templates / "email" / "owner-note" / "subject.j2", "From {{ account.attributes.owner }}"
    )
    write_file(templates / "email" / "owner-note" / "body.html.j2", OWNER_BODY)
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(templates))
    reset_settings()
    return templates


def _campaign(tmp_path: Path, steps: str, audience: str = "  tiers: [1]\n") -> Path:
    return write_file(
        tmp_path / "owners.yaml",
        f"key: owners\nname: Owners\naudience:\n{audience}consent_required: false\n"
        f"caps:\n  per_contact: {{max: 5, days: 7}}\n  per_account: {{max: 50, days: 7}}\n"
        f"steps:\n{steps}",
    )


def _text(message) -> str:
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    return parsed["Subject"] + "\n" + parsed.get_body(("html",)).get_content()


def test_a_template_reads_an_extra_account_column(owner_templates, tmp_path):
    key, campaign = load_campaign(_campaign(tmp_path, "  - id: s\n    template: owner-note\n"))
    composer = Composer(get_settings(), key, 1, campaign, campaign.steps[0])

    text = _text(composer.email({**ROW, "account_attributes": {"owner": "Dana Whitfield"}}))

    assert "From Dana Whitfield" in text
    assert "Your account manager is Dana Whitfield." in text


def test_a_missing_column_is_an_error_not_a_blank_and_default_gives_a_fallback(
    owner_templates, tmp_path
):
    key, campaign = load_campaign(_campaign(tmp_path, "  - id: s\n    template: owner-note\n"))
    composer = Composer(get_settings(), key, 1, campaign, campaign.steps[0])

    with pytest.raises(Exception, match="owner"):
        composer.email({**ROW, "account_attributes": {"region": "EMEA"}})
    text = _text(composer.email({**ROW, "account_attributes": {"owner": "Dana", "region": "EMEA"}}))
    assert "EMEA" in text


def test_validate_asks_for_a_fallback_for_extra_columns(owner_templates, tmp_path):
    path = _campaign(tmp_path, "  - id: s\n    template: owner-note\n")
    with pytest.raises(ConfigError) as error:
        validate_campaign(path, get_settings())
    assert "email/owner-note/" in str(error.value) and "'owner'" in str(error.value)
    assert "default('')" in str(error.value)

    write_file(
        owner_templates / "email" / "owner-note" / "subject.j2",
        "From {{ account.attributes.owner | default('us') }}",
    )
    write_file(
        owner_templates / "email" / "owner-note" / "body.html.j2",
        OWNER_BODY.replace("owner }}", "owner | default('your team') }}"),
    )
    from stages.content.rendering import template_environment, template_names

    template_environment.cache_clear()
    template_names.cache_clear()
    assert "is valid" in validate_campaign(path, get_settings())[0]


def _people(engine) -> None:
    upsert_accounts(
        engine,
        [
            {"domain": "acme.example", "name": "Acme", "attributes": {"owner": "Dana Whitfield"}},
            {"domain": "beta.example", "name": "Beta", "attributes": {}},
        ],
    )
    upsert_contacts(
        engine,
        [
            {"email": f"{name}@{domain}", "account_domain": domain, "first_name": name.title()}
            | {"attributes": {}}
            for name, domain in (("ana", "acme.example"), ("bo", "beta.example"))
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Account).values(tier=1))


def _deliver_step(engine, tmp_path: Path, path: Path) -> None:
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    step = campaign.steps[0]
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, step.id
    )
    ids = due_delivery_ids(engine, campaign_id, step.id)
    deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))


def test_a_sent_email_carries_the_owner_and_an_account_without_one_is_not_sent_blank(
    engine, owner_templates, tmp_path
):
    _people(engine)
    path = _campaign(tmp_path, "  - id: s\n    template: owner-note\n")

    _deliver_step(engine, tmp_path, path)

    sent = list((tmp_path / "outbox").iterdir())
    assert len(sent) == 1
    assert "Your account manager is Dana Whitfield." in sent[0].read_text(encoding="utf-8")
    with engine.connect() as connection:
        rows = dict(
            connection.execute(
                select(Contact.email, Delivery.last_error)
                .join(Contact, Contact.id == Delivery.contact_id)
                .where(Delivery.state == "failed")  # retried once the owner is filled in
            ).all()
        )
    assert list(rows) == ["bo@beta.example"] and "owner" in rows["bo@beta.example"]


def test_preview_renders_the_account_columns(engine, owner_templates, tmp_path):
    _people(engine)
    path = _campaign(tmp_path, "  - id: s\n    template: owner-note\n")

    _, _, message = preview(engine, get_settings(), path, "acme.example")

    assert "Your account manager is Dana Whitfield." in _text(message)


def test_rep_tasks_carry_the_account_owner(engine, tmp_path):
    _people(engine)
    steps = "  - id: connect\n    channel: linkedin_task\n    template: exec-connect\n"

    _deliver_step(engine, tmp_path, _campaign(tmp_path, steps))

    with rep_tasks_path(get_settings()).open(encoding="utf-8", newline="") as handle:
        tasks = {row["account_domain"]: row for row in csv.DictReader(handle)}
    assert tasks["acme.example"]["owner"] == "Dana Whitfield"
    assert tasks["beta.example"]["owner"] == ""


def test_an_audience_filter_on_an_extra_column_picks_only_those_accounts(engine, tmp_path):
    accounts = write_file(
        tmp_path / "accounts.csv",
        "domain,name,tier,Segment\n"
        "big.example,Big,1,Enterprise\n"
        "mid.example,Mid,1,mid-market\n"
        "none.example,None,1,\n",
    )
    import_file("accounts", accounts, engine, get_settings())
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    rescore_accounts_in_db(engine, load_icp_rules())
    audience = "  tiers: [1]\n  icp:\n    - field: attributes.segment\n      in: [enterprise]\n"
    _, campaign = load_campaign(_campaign(tmp_path, "  - id: s\n    template: intro\n", audience))

    targets = target_account_ids(engine, campaign.audience)

    with engine.connect() as connection:
        domains = connection.execute(
            select(Account.domain).where(Account.id.in_(targets))
        ).scalars()
        assert list(domains) == ["big.example"]

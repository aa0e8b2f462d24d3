"""Account owners (from `abm crm pull`, else the `owner` column of accounts.csv) in templates
(`account.owner`), in rep tasks (routed to the CRM owner's email) and as the sender of a
`send_as: owner` campaign: From the owner only when their address is at the sender's domain,
Reply-To them, otherwise from the campaign's sender with the reason counted in the summary."""

from __future__ import annotations

import csv
import shutil
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from tests_support import write_file

from connectors.channels import rep_tasks_path
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, Delivery
from stages.content.compose import (
    NO_OWNER,
    NO_OWNER_EMAIL,
    OWNER_ADDRESS_UNUSABLE,
    OWNER_ELSEWHERE,
    OWNER_LEFT,
    Composer,
    account_owner,
    owner_sender,
)
from stages.content.rendering import Sender
from stages.delivery.ledger import (
    ChunkOutcome,
    DeliveryContext,
    due_delivery_ids,
    plan_step,
    register_campaign,
)
from stages.delivery.send import default_sender_counts, default_sender_text, deliver, rehearse
from stages.targeting.audience import target_account_ids

ROOT = Path(__file__).resolve().parents[1]
SENDER = Sender.parse("Demo Co <marketing@demo.example>")
ROW = {
    "delivery_id": 5,
    "contact_id": 9,
    "account_id": 1,
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
    "owner_name": "Dana Whitfield",
    "owner_email": "dana@demo.example",
    "owner_crm": "hubspot",
    "account_attributes": {},
}
OWNER_BODY = (
    "<p>Hi {{ contact.first_name }},</p>\n"
    "<p>Your account manager is {{ account.owner.name | default('your team') }}"
    " ({{ account.owner.email | default('no address') }}).</p>\n"
)


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's templates and an email naming the account's owner."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    write_file(folder / "email" / "owner-note" / "subject.j2", "A note for {{ account.name }}")
    write_file(folder / "email" / "owner-note" / "body.html.j2", OWNER_BODY)
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(folder))
    reset_settings()
    return folder


def _campaign(tmp_path: Path, steps: str, extra: str = "") -> Path:
    return write_file(
        tmp_path / "owners.yaml",
        "key: owners\nname: Owners\naudience:\n  tiers: [1]\nconsent_required: false\n"
        "caps:\n  per_contact: {max: 5, days: 7}\n  per_account: {max: 50, days: 7}\n"
        f"{extra}steps:\n{steps}",
    )


EMAIL_STEP = "  - id: s\n    template: owner-note\n"


def _composer(tmp_path: Path, extra: str = "send_as: owner\n") -> Composer:
    key, campaign = load_campaign(_campaign(tmp_path, EMAIL_STEP, extra))
    return Composer(get_settings(), key, 1, campaign, campaign.steps[0])


def _parsed(message: Any) -> EmailMessage:
    return message_from_bytes(message.as_bytes(), policy=default)  # type: ignore[return-value]


def _html(message: Any) -> str:
    return _parsed(message).get_body(("html",)).get_content()


def test_templates_see_the_crm_owner_else_the_owner_column_else_their_fallback(
    templates, tmp_path
) -> None:
    composer = _composer(tmp_path, "")

    crm = _html(composer.email({**ROW, "account_attributes": {"owner": "Old Owner"}}))
    column = _html(
        composer.email(
            {**ROW, "owner_name": None, "owner_email": None}
            | {"account_attributes": {"owner": "Sam Ortiz <sam@demo.example>"}}
        )
    )
    name_only = _html(
        composer.email(
            {**ROW, "owner_name": None, "owner_email": None}
            | {"account_attributes": {"owner": "Sam Ortiz"}}
        )
    )
    nobody = _html(composer.email({**ROW, "owner_name": None, "owner_email": None}))

    assert "Your account manager is Dana Whitfield (dana@demo.example)." in crm
    assert "Your account manager is Sam Ortiz (sam@demo.example)." in column
    assert "Your account manager is Sam Ortiz (no address)." in name_only
    assert "Your account manager is your team (no address)." in nobody


def test_account_owner_leaves_out_what_is_not_known() -> None:
    assert account_owner(ROW) == {"name": "Dana Whitfield", "email": "dana@demo.example"}
    assert account_owner({"owner_email": "dana@demo.example"}) == {
        "name": "dana@demo.example",
        "email": "dana@demo.example",
    }
    assert account_owner({"account_attributes": {"owner": "sam@demo.example"}}) == {
        "name": "sam@demo.example",
        "email": "sam@demo.example",
    }
    assert account_owner({"account_attributes": {"owner": "  "}}) is None
    assert account_owner({}) is None


def test_an_owner_template_without_a_fallback_fails_rather_than_saying_none(
    templates, tmp_path
) -> None:
    write_file(
        templates / "email" / "owner-note" / "body.html.j2", "<p>{{ account.owner.email }}</p>"
    )
    composer = _composer(tmp_path, "")
    with pytest.raises(Exception, match="email"):
        composer.email({**ROW, "owner_email": None})


def test_send_as_owner_goes_from_the_owner_with_reply_to_and_the_same_message_id(
    templates, tmp_path
) -> None:
    as_owner = _parsed(_composer(tmp_path).email(ROW))
    as_sender = _parsed(_composer(tmp_path, "").email(ROW))

    assert as_owner["From"] == "Dana Whitfield <dana@demo.example>"
    assert as_owner["Reply-To"] == "Dana Whitfield <dana@demo.example>"
    assert as_owner["Sender"] == "Demo Co <marketing@demo.example>"  # the envelope's, bounces
    assert as_sender["From"] == "Demo Co <marketing@demo.example>" and "Reply-To" not in as_sender
    assert "Sender" not in as_sender
    assert as_owner["Message-ID"] == as_sender["Message-ID"]
    for header in ("To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert as_owner[header] == as_sender[header], header
    assert _html(as_owner) == _html(as_sender)


def test_with_a_monitored_mailbox_replies_also_reach_the_campaign_sender(
    templates, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ABM_IMAP_URL", "imaps://marketing:pw@imap.demo.example:993/INBOX")
    reset_settings()

    message = _parsed(_composer(tmp_path).email(ROW))

    assert message["From"] == "Dana Whitfield <dana@demo.example>"
    assert message["Reply-To"] == (
        "Dana Whitfield <dana@demo.example>, Demo Co <marketing@demo.example>"
    )


@pytest.mark.parametrize(
    ("owner", "reason"),
    [
        ({"owner_name": None, "owner_email": None}, NO_OWNER),
        ({"owner_email": None}, NO_OWNER_EMAIL),
        ({"owner_email": "dana@acme-sales.example"}, OWNER_ELSEWHERE),
        ({"owner_email": "dana@sub.demo.example"}, OWNER_ELSEWHERE),
        ({"owner_email": "dana@demo.example\r\nBcc: x@evil.example"}, OWNER_ADDRESS_UNUSABLE),
        ({"owner_email": "dána@demo.example"}, OWNER_ADDRESS_UNUSABLE),
        ({"owner_email": "Dana <dana@demo.example>"}, OWNER_ADDRESS_UNUSABLE),
        ({"owner_active": False}, OWNER_LEFT),  # archived in HubSpot, inactive in Salesforce
    ],
)
def test_the_campaign_sender_is_used_with_its_reason(owner, reason) -> None:
    assert owner_sender({**ROW, **owner}, SENDER) == (SENDER, reason)


def test_the_owner_domain_is_compared_without_case_and_a_name_cannot_add_a_header() -> None:
    sender, reason = owner_sender(
        {**ROW, "owner_email": "Dana@Demo.Example", "owner_name": "Dana\r\nBcc: x@evil.example"},
        SENDER,
    )
    assert reason is None
    assert (sender.email, sender.name, sender.company) == (
        "Dana@Demo.Example",
        "Dana Bcc: x@evil.example",
        "Demo Co",
    )


def _people(engine: Engine) -> dict[str, int]:
    """Three tier-1 accounts: Acme owned at our domain, Beta at another, Gamma unowned."""
    owners = {
        "acme.example": ("Dana Whitfield", "dana@demo.example"),
        "beta.example": ("Lee Park", "lee@partner.example"),
        "gamma.example": (None, None),
    }
    upsert_accounts(
        engine,
        [{"domain": d, "name": d.split(".")[0].title(), "attributes": {}} for d in owners],
    )
    upsert_contacts(
        engine,
        [
            {"email": f"{n}@{d}", "account_domain": d, "first_name": n.title(), "attributes": {}}
            for d in owners
            for n in ("ana", "bo")
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Account).values(tier=1))
        for domain, (name, email) in owners.items():
            connection.execute(
                update(Account)
                .where(Account.domain == domain)
                .values(owner_name=name, owner_email=email, owner_crm="hubspot" if name else None)
            )
        return dict(connection.execute(select(Account.domain, Account.id)).all())


def _plan(engine: Engine, path: Path) -> tuple[DeliveryContext, list[int]]:
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    step = campaign.steps[0]
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, step.id
    )
    return context, due_delivery_ids(engine, campaign_id, step.id)


def _sent(outbox: Path) -> dict[str, EmailMessage]:
    found = {}
    for path in outbox.iterdir():
        message = message_from_bytes(path.read_bytes(), policy=default)
        found[str(message["To"])] = message
    return found


def test_a_run_sends_as_each_owner_it_can_and_counts_the_others_by_reason(
    engine, templates, tmp_path
) -> None:
    ids = _people(engine)
    context, due = _plan(engine, _campaign(tmp_path, EMAIL_STEP, "send_as: owner\n"))
    with engine.begin() as connection:  # the owner changes after planning: sending decides
        connection.execute(
            update(Account)
            .where(Account.domain == "gamma.example")
            .values(owner_name="Kim Cho", owner_email="kim@partner.example", owner_crm="hubspot")
        )

    outcome = deliver(engine, get_settings(), context, due, OutboxBackend(tmp_path / "outbox"))

    sent = _sent(tmp_path / "outbox")
    assert outcome.sent == len(sent) == 6
    assert sent["Ana <ana@acme.example>"]["From"] == "Dana Whitfield <dana@demo.example>"
    assert sent["Ana <ana@acme.example>"]["Reply-To"] == "Dana Whitfield <dana@demo.example>"
    for to in ("Bo <bo@beta.example>", "Ana <ana@gamma.example>"):
        assert sent[to]["From"] == "Demo Co <marketing@demo.example>"
        assert "Reply-To" not in sent[to]
    assert outcome.default_sender == {OWNER_ELSEWHERE: {ids["beta.example"], ids["gamma.example"]}}
    counts = default_sender_counts([outcome, ChunkOutcome(default_sender={NO_OWNER: {99}})])
    assert counts == {NO_OWNER: 1, OWNER_ELSEWHERE: 2}
    assert default_sender_text(counts) == (
        "3 accounts sent from the default sender: no CRM owner (1), owner at another domain (2)"
    )
    assert default_sender_text({}) is None


def test_a_dry_run_counts_the_default_sender_too(engine, templates, tmp_path) -> None:
    ids = _people(engine)
    context, due = _plan(engine, _campaign(tmp_path, EMAIL_STEP, "send_as: owner\n"))

    outcome = rehearse(engine, get_settings(), context, due)

    assert outcome.sent == 6
    assert outcome.default_sender == {
        NO_OWNER: {ids["gamma.example"]},
        OWNER_ELSEWHERE: {ids["beta.example"]},
    }


def test_a_campaign_that_sends_as_its_sender_counts_nothing(engine, templates, tmp_path) -> None:
    _people(engine)
    context, due = _plan(engine, _campaign(tmp_path, EMAIL_STEP))

    outcome = deliver(engine, get_settings(), context, due, OutboxBackend(tmp_path / "outbox"))

    assert outcome.sent == 6 and outcome.default_sender == {}
    assert {str(m["From"]) for m in _sent(tmp_path / "outbox").values()} == {
        "Demo Co <marketing@demo.example>"
    }


def test_the_run_summary_says_which_accounts_went_from_the_default_sender() -> None:
    from flows.campaign import _dry_run_summary, _summary_markdown

    outcome = ChunkOutcome(sent=4, default_sender={NO_OWNER: {1, 2}, OWNER_ELSEWHERE: {3}})

    summary = _dry_run_summary([outcome])

    assert summary["sent_from_default_sender"] == {NO_OWNER: 2, OWNER_ELSEWHERE: 1}
    assert (
        "3 accounts sent from the default sender: no CRM owner (2), owner at another domain (1)"
        in _summary_markdown("owners", summary)
    )


def test_rep_tasks_go_to_the_crm_owner_else_the_owner_column(engine, tmp_path) -> None:
    _people(engine)
    with engine.begin() as connection:
        connection.execute(
            update(Account)
            .where(Account.domain.in_(["acme.example", "gamma.example"]))
            .values(attributes={"owner": "Column Owner"})
        )
    steps = "  - id: connect\n    channel: linkedin_task\n    template: exec-connect\n"
    context, due = _plan(engine, _campaign(tmp_path, steps))

    deliver(engine, get_settings(), context, due, OutboxBackend(tmp_path / "outbox"))

    with rep_tasks_path(get_settings()).open(encoding="utf-8", newline="") as handle:
        owners = {row["account_domain"]: row["owner"] for row in csv.DictReader(handle)}
    assert owners == {
        "acme.example": "dana@demo.example",
        "beta.example": "lee@partner.example",
        "gamma.example": "Column Owner",
    }
    with engine.connect() as connection:
        states = set(connection.execute(select(Delivery.state)).scalars())
    assert states == {"sent"}


def test_send_as_takes_sender_or_owner_and_names_the_line(tmp_path) -> None:
    path = _campaign(tmp_path, EMAIL_STEP, "send_as: boss\n")

    with pytest.raises(ConfigError) as error:
        load_campaign(path)

    message = str(error.value)
    assert "owners.yaml:9: send_as:" in message and "send_as" in message
    assert "`sender`" in message and "`owner`" in message
    assert load_campaign(_campaign(tmp_path, EMAIL_STEP))[1].send_as == "sender"


def test_contacts_of_an_owned_account_are_unaffected_in_the_ledger(engine, templates, tmp_path):
    _people(engine)
    context, due = _plan(engine, _campaign(tmp_path, EMAIL_STEP, "send_as: owner\n"))
    deliver(engine, get_settings(), context, due, OutboxBackend(tmp_path / "outbox"))

    with engine.connect() as connection:
        rows = connection.execute(
            select(Contact.email, Delivery.message_id).join(
                Contact, Contact.id == Delivery.contact_id
            )
        ).all()
    sent = {m["Message-ID"] for m in _sent(tmp_path / "outbox").values()}
    assert {message_id for _, message_id in rows} == sent
    assert all(message_id.endswith("@demo.example>") for message_id in sent)

"""Journey stages set by people and imports beside the engagement rollup, and the engagement
rules file the rollup reads (ABM_ENGAGEMENT_RULES)."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.errors import AbmError, ConfigError
from core.settings import DEFAULTS_DIR, Settings, get_settings, reset_settings
from core.vocabulary import parse_stage
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, utcnow
from stages.engagement.journey import set_stage, stage_history
from stages.engagement.rollup import (
    engagement_rules_from,
    load_engagement_rules,
    rollup_accounts,
    store_events,
)

RULES = load_engagement_rules()


def _acme(engine) -> tuple[int, int]:
    """(account id, Ana's contact id) of a fresh account with one person."""
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine, [{"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}}]
    )
    with engine.connect() as connection:
        return tuple(connection.execute(select(Contact.account_id, Contact.id)).one())


def _event(event_id: str, kind: str, account: int, contact: int, at) -> dict:
    return {
        "provider": "test",
        "provider_event_id": event_id,
        "type": kind,
        "channel": "email",
        "occurred_at": at,
        "account_id": account,
        "contact_id": contact,
    }


def _stage(engine, account: int) -> str:
    with engine.connect() as connection:
        return connection.execute(select(Account.stage).where(Account.id == account)).scalar()


@pytest.mark.parametrize(
    ("raw", "stage"),
    [("MQA", "mqa"), (" Opportunity ", "opportunity"), ("customer", "customer")],
)
def test_a_stage_is_read_whatever_its_case(raw: str, stage: str) -> None:
    assert parse_stage(raw) == stage


def test_an_unknown_stage_says_which_stages_there_are() -> None:
    with pytest.raises(ValueError, match="'won' is not a journey stage") as refused:
        parse_stage("won")
    assert "target, aware, engaged, mqa, opportunity, customer" in str(refused.value)


def test_a_stage_set_back_by_a_person_is_not_undone_by_the_old_events(engine) -> None:
    acme, ana = _acme(engine)
    two_days_ago = utcnow() - timedelta(days=2)
    store_events(
        engine,
        [
            _event("r1", "reply", acme, ana, two_days_ago),
            _event("m1", "meeting", acme, ana, two_days_ago),
        ],
    )
    rollup_accounts(engine, [acme], RULES)
    assert _stage(engine, acme) == "mqa"

    assert set_stage(engine, "acme.example", "engaged", "not sales-ready yet") == ("mqa", "engaged")
    rollup_accounts(engine, [acme], RULES)
    assert _stage(engine, acme) == "engaged"

    # engagement after the person's change may move it on again
    store_events(engine, [_event("m2", "meeting", acme, ana, utcnow() + timedelta(seconds=1))])
    rollup_accounts(engine, [acme], RULES)
    assert _stage(engine, acme) == "mqa"
    history = [(c["from_stage"], c["to_stage"], c["source"]) for c in stage_history(engine, acme)]
    assert history == [
        ("target", "mqa", "engagement"),
        ("mqa", "engaged", "person"),
        ("engaged", "mqa", "engagement"),
    ]
    assert stage_history(engine, acme)[1]["reason"] == "not sales-ready yet"


def test_setting_the_stage_an_account_is_at_records_nothing(engine) -> None:
    acme, _ = _acme(engine)
    assert set_stage(engine, "ACME.example", "Opportunity", "deal opened") == (
        "target",
        "opportunity",
    )
    assert set_stage(engine, "acme.example", "opportunity", "deal opened again") is None
    assert len(stage_history(engine, acme)) == 1


@pytest.mark.parametrize(
    ("domain", "stage", "message"),
    [
        ("nobody.example", "mqa", "no account with domain 'nobody.example'"),
        ("acme.example", "won", "'won' is not a journey stage"),
    ],
)
def test_an_unknown_account_or_stage_is_a_clear_error(engine, domain, stage, message) -> None:
    _acme(engine)
    with pytest.raises(AbmError, match=message):
        set_stage(engine, domain, stage, "because")


def test_the_rollup_stays_put_after_a_person_moves_an_account_forward(engine) -> None:
    acme, ana = _acme(engine)
    set_stage(engine, "acme.example", "opportunity", "deal opened")
    store_events(engine, [_event("c1", "click", acme, ana, utcnow() + timedelta(seconds=1))])
    assert rollup_accounts(engine, [acme], RULES) == 0
    assert _stage(engine, acme) == "opportunity"


def _rules_file(tmp_path: Path, click_weight: int) -> Path:
    text = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    path = tmp_path / "my-engagement.yaml"
    path.write_text(text.replace("  click: 5\n", f"  click: {click_weight}\n"), encoding="utf-8")
    return path


def test_engagement_rules_come_from_the_setting_else_the_default(tmp_path) -> None:
    assert engagement_rules_from(Settings()) == RULES
    custom = engagement_rules_from(Settings(engagement_rules=_rules_file(tmp_path, 50)))
    assert custom.weights["click"] == 50


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("weights: 3\n", "weights"), ("half_life_days: [\n", "not valid YAML")],
    ids=["missing", "invalid", "not-yaml"],
)
def test_a_bad_engagement_rules_file_names_the_setting_and_the_file(
    tmp_path, content, problem
) -> None:
    path = tmp_path / "rules.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        engagement_rules_from(Settings(engagement_rules=path))
    message = str(refused.value)
    assert "ABM_ENGAGEMENT_RULES" in message and str(path) in message and problem in message


def test_the_write_back_task_uses_the_configured_rules(engine, tmp_path, monkeypatch) -> None:
    from flows.tasks import write_back_engagement

    acme, ana = _acme(engine)
    store_events(engine, [_event("c1", "click", acme, ana, utcnow())])
    monkeypatch.setenv("ABM_ENGAGEMENT_RULES", str(_rules_file(tmp_path, 50)))
    reset_settings()
    url = engine.url.render_as_string(hide_password=False)
    assert get_settings().engagement_rules is not None
    write_back_engagement.fn(url, [acme])
    with engine.connect() as connection:
        score = connection.execute(select(Account.engagement_score)).scalar()
    assert score == pytest.approx(50, abs=0.1)

from pathlib import Path

import pytest
from sqlalchemy import select

from core.errors import ConfigError
from models.db import session_scope
from models.store import upsert_accounts
from models.tables import Account
from stages.targeting.scoring import IcpRules, load_icp_rules, rescore_accounts_in_db, score_account

RULES = IcpRules.model_validate(
    {
        "tiers": {1: 60, 2: 40, 3: 20},
        "rules": [
            {"field": "industry", "in": ["Manufacturing", "Software"], "weight": 25},
            {"field": "employees", "between": [200, 5000], "weight": 20},
            {"field": "employees", "below": 50, "weight": -10},
            {"field": "annual_revenue", "at_least": 10_000_000, "weight": 15},
            {"field": "technologies", "any_of": ["Salesforce", "HubSpot"], "weight": 10},
            {"field": "technologies", "none_of": ["Demandbase"], "weight": 5},
            {"field": "attributes.segment", "in": ["enterprise"], "weight": 5},
        ],
    }
)


def test_every_rule_that_fires_leaves_a_signed_reason():
    account = {
        "industry": "manufacturing",
        "employees": 1200,
        "annual_revenue": 50_000_000,
        "technologies": ["HubSpot", "AWS"],
        "attributes": {"segment": "Enterprise"},
    }
    result = score_account(account, RULES)
    assert result.score == 80
    assert result.reasons == [
        "+25 industry=manufacturing",
        "+20 employees 200-5,000 (1,200)",
        "+15 annual_revenue>=10,000,000 (50,000,000)",
        "+10 technologies has HubSpot",
        "+5 technologies has none of Demandbase",
        "+5 attributes.segment=Enterprise",
    ]
    assert result.tier == 1


def test_negative_rules_subtract_and_the_score_never_goes_below_zero():
    result = score_account({"employees": 12, "technologies": ["Demandbase"]}, RULES)
    assert "-10 employees<50 (12)" in result.reasons
    assert result.score == 0
    assert result.tier is None


def test_unknown_fields_are_reported_not_guessed():
    result = score_account({"industry": "Software"}, RULES)
    assert "0 employees unknown" in result.reasons
    assert "0 annual_revenue unknown" in result.reasons
    assert result.score == 25 + 5


@pytest.mark.parametrize(
    ("score", "tier"), [(60, 1), (59, 2), (40, 2), (39, 3), (20, 3), (19, None)]
)
def test_tiers_follow_the_thresholds(score, tier):
    from stages.targeting.scoring import tier_for

    assert tier_for(score, RULES) == tier


def test_a_manual_tier_overrides_the_score():
    result = score_account({"industry": "Retail", "tier_override": 1}, RULES)
    assert result.tier == 1
    assert result.reasons[-1] == "tier 1 set by hand"


def test_the_default_rules_file_loads_and_scores_a_strong_account_as_tier_one():
    rules = load_icp_rules()
    account = {
        "industry": "Software",
        "employees": 800,
        "annual_revenue": 90_000_000,
        "country": "DE",
        "technologies": ["Salesforce", "Snowflake"],
    }
    assert score_account(account, rules).tier == 1


def test_a_bad_rules_file_names_file_line_and_field(tmp_path: Path):
    path = tmp_path / "icp.yaml"
    path.write_text(
        "tiers: {1: 70, 2: 45, 3: 20}\n"
        "rules:\n"
        "  - field: industry\n"
        "    in: [Software]\n"
        "    weight: 25\n"
        "  - field: employees\n"
        "    weight: lots\n"
        "    below: 50\n"
    )
    with pytest.raises(ConfigError) as error:
        load_icp_rules(path)
    assert f"{path}:7: rules[1].weight:" in str(error.value)


def test_a_rule_with_two_tests_is_rejected(tmp_path: Path):
    path = tmp_path / "icp.yaml"
    path.write_text(
        "rules:\n  - field: employees\n    below: 50\n    at_least: 10\n    weight: 5\n"
    )
    with pytest.raises(ConfigError, match="exactly one test"):
        load_icp_rules(path)


def test_unknown_keys_in_the_rules_file_are_errors(tmp_path: Path):
    path = tmp_path / "icp.yaml"
    path.write_text("rules: []\nthreshold: 5\n")
    with pytest.raises(ConfigError, match=r"icp.yaml:2: threshold: Extra inputs"):
        load_icp_rules(path)


def test_rescoring_stores_score_reasons_and_tier(engine):
    upsert_accounts(
        engine,
        [
            {
                "domain": "fit.example",
                "industry": "Software",
                "employees": 900,
                "annual_revenue": 2e7,
                "technologies": ["Salesforce"],
                "attributes": {},
            },
            {"domain": "tiny.example", "employees": 10, "technologies": [], "attributes": {}},
        ],
    )
    per_tier = rescore_accounts_in_db(engine, RULES)
    assert per_tier == {1: 1, None: 1}
    with session_scope(engine) as session:
        fit = session.execute(select(Account).where(Account.domain == "fit.example")).scalar_one()
    assert fit.icp_score == 75
    assert fit.tier == 1
    assert "+25 industry=Software" in fit.icp_reasons
    assert fit.scored_at is not None


def test_target_accounts_are_the_tiers_stages_and_filters_asked_for(engine):
    from core.campaign_file import Audience
    from core.vocabulary import STAGES
    from stages.targeting.audience import target_account_ids

    accounts = [
        {"domain": "big.example", "industry": "Software", "employees": 900},
        {"domain": "small.example", "industry": "Software", "employees": 60},
        {"domain": "tagged.example", "employees": 900, "attributes": {"segment": "enterprise"}},
        {"domain": "unfit.example", "employees": 10},
    ]
    upsert_accounts(engine, [{"technologies": [], "attributes": {}} | a for a in accounts])
    rescore_accounts_in_db(engine, RULES)
    with session_scope(engine) as session:
        ids = dict(session.execute(select(Account.domain, Account.id)).all())
    audience = Audience.model_validate(
        {
            "tiers": [1, 2, 3],
            "icp": [
                {"field": "employees", "at_least": 200},
                {"field": "attributes.segment", "in": ["enterprise"]},
            ],
        }
    )
    every = Audience(tiers=[1, 2, 3], stages=list(STAGES))
    assert target_account_ids(engine, every) == sorted(
        ids[d] for d in ("big.example", "small.example", "tagged.example")
    )
    assert target_account_ids(engine, audience) == [ids["tagged.example"]]
    first_filter = audience.model_copy(update={"icp": audience.icp[:1]})
    assert target_account_ids(engine, first_filter) == sorted(
        [ids["big.example"], ids["tagged.example"]]
    )
    assert target_account_ids(engine, every.model_copy(update={"stages": ["engaged"]})) == []


def test_rescoring_in_small_batches_scores_every_account_once(engine, monkeypatch):
    import stages.targeting.scoring

    accounts = [
        {"domain": f"a{n}.example", "industry": "Software", "employees": 100 * n}
        | {"technologies": [], "attributes": {}}
        for n in range(1, 8)
    ]
    upsert_accounts(engine, accounts)
    whole = rescore_accounts_in_db(engine, RULES)
    with session_scope(engine) as session:
        before = session.execute(select(Account.domain, Account.icp_score, Account.tier)).all()
    monkeypatch.setattr(stages.targeting.scoring, "SCORE_BATCH", 2)  # four reads: 2, 2, 2, 1
    assert rescore_accounts_in_db(engine, RULES) == whole
    with session_scope(engine) as session:
        after = session.execute(select(Account.domain, Account.icp_score, Account.tier)).all()
    assert sorted(after) == sorted(before) and sum(whole.values()) == 7

"""Intent data (`abm import intent`): the column sets intent providers export, scores as
numbers or words, a surge flag alone; every unusable row rejected with its line and field;
re-importing stores nothing twice; intent events weighed by topic with decay, and usable in
stage rules and campaign audiences (at planning and again at send time)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import run_abm
from sqlalchemy import func, select, update

from core.errors import ConfigError
from core.settings import DEFAULTS_DIR, Settings, get_settings, reset_settings
from models.store import upsert_accounts
from models.tables import Account, EngagementEvent, utcnow
from stages.importing import ImportFileError, import_file, rejects_path, warnings_path

TODAY = utcnow().date()
D1 = (TODAY - timedelta(days=3)).isoformat()
D2 = (TODAY - timedelta(days=10)).isoformat()


def _accounts(engine, *domains: str) -> None:
    upsert_accounts(engine, [{"domain": d, "attributes": {}, "technologies": []} for d in domains])


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _signals(engine) -> list[tuple[str, str, str, float, date, dict]]:
    """(provider, domain, topic, score, date, data) of every intent event, sorted."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                EngagementEvent.provider,
                Account.domain,
                EngagementEvent.occurred_at,
                EngagementEvent.data,
                EngagementEvent.type,
                EngagementEvent.channel,
            ).join(Account, Account.id == EngagementEvent.account_id)
        ).all()
    assert {(kind, channel) for *_, kind, channel in rows} <= {("intent", "intent")}
    return sorted(
        (provider, domain, data["topic"], data["score"], at.date(), data)
        for provider, domain, at, data, _, _ in rows
    )


# The column names each provider's export commonly uses (see the README's table).
PROVIDERS = {
    "bombora": (
        "Company Name,Domain,Size,Industry,Category,Topic Name,Composite Score,Date\n"
        f"Acme,acme.example,1000-5000,Software,Technology,Data Integration,72,{D1}\n"
        f"Globex,www.globex.example,50-200,Retail,Technology,ETL,55,{D2}\n"
    ),
    "bombora-surge-week": (
        "Domain,Topic,Surge Score,Week\n"
        f"acme.example,Data Integration,72,{D1}\n"
        f"globex.example,ETL,55,{D2}\n"
    ),
    "g2": (
        "Company Name,Company Domain,Category,Intent Score,Date\n"
        f"Acme,acme.example,Data Integration,72,{D1}\n"
        f"Globex,globex.example,ETL,55,{D2}\n"
    ),
    "g2-activity": (
        "Company Domain,Signal,Activity Level,Date\n"
        f"acme.example,Data Integration,High,{D1}\n"
        f"globex.example,ETL,Low,{D2}\n"
    ),
    "6sense": (
        "Domain,Keyword,Intent Score,Buying Stage,Date\n"
        f"acme.example,Data Integration,72,Decision,{D1}\n"
        f"globex.example,ETL,55,Awareness,{D2}\n"
    ),
    "6sense-segment": (
        "Domain,Segment,Intent Score,Buying Stage,Date\n"
        f"acme.example,Data Integration,72,Decision,{D1}\n"
        f"globex.example,ETL,55,Awareness,{D2}\n"
    ),
    "demandbase": (
        "Domain,Keyword Set,Intent Strength,Date\n"
        f"acme.example,Data Integration,High,{D1}\n"
        f"globex.example,ETL,Low,{D2}\n"
    ),
    "demandbase-keyword": (
        "Domain,Intent Keyword,Intent Strength,Date\n"
        f"acme.example,Data Integration,High,{D1}\n"
        f"globex.example,ETL,Low,{D2}\n"
    ),
}
DETECTED = {
    "bombora": "bombora",
    "bombora-surge-week": "bombora",
    "g2": "g2",
    "g2-activity": "g2",
    "6sense": "6sense",
    "6sense-segment": "6sense",
    "demandbase": "demandbase",
    "demandbase-keyword": "demandbase",
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_providers_export_imports_as_it_comes(engine, tmp_path, provider):
    _accounts(engine, "acme.example", "globex.example")
    path = _write(tmp_path, f"{provider}.csv", PROVIDERS[provider])

    report = import_file("intent", path, engine, get_settings())

    assert (report.imported, report.updated, report.rejects, report.warned) == (2, 0, [], 0)
    signals = _signals(engine)
    assert [(s[0], s[1], s[2], s[4]) for s in signals] == [
        (DETECTED[provider], "acme.example", "Data Integration", date.fromisoformat(D1)),
        (DETECTED[provider], "globex.example", "ETL", date.fromisoformat(D2)),
    ]
    words = {"High": 90.0, "Low": 30.0}
    if "Activity Level" in PROVIDERS[provider] or "Intent Strength" in PROVIDERS[provider]:
        assert [s[3] for s in signals] == [words["High"], words["Low"]]
        assert [s[5]["level"] for s in signals] == ["High", "Low"]
    else:
        assert [s[3] for s in signals] == [72.0, 55.0]
    if "Buying Stage" in PROVIDERS[provider]:
        assert [s[5]["buying_stage"] for s in signals] == ["Decision", "Awareness"]
    assert any(DETECTED[provider] in note for note in report.notes)


def test_a_source_given_by_hand_wins_over_the_columns(engine, tmp_path):
    _accounts(engine, "acme.example", "globex.example")
    path = _write(tmp_path, "export.csv", PROVIDERS["bombora"])
    import_file("intent", path, engine, get_settings(), source="Bombora-EU")
    assert {s[0] for s in _signals(engine)} == {"bombora-eu"}
    with pytest.raises(ValueError, match="source"):
        import_file("intent", path, engine, get_settings(), source="no spaces please")


@pytest.mark.parametrize(
    ("word", "score"),
    [
        ("Very Low", 10.0),
        ("low", 30.0),
        ("Medium", 60.0),
        ("MED", 60.0),
        ("moderate", 60.0),
        ("High", 90.0),
        ("very high", 100.0),
    ],
)
def test_low_medium_high_are_mapped_by_the_documented_table_without_a_warning(
    engine, tmp_path, word, score
):
    _accounts(engine, "acme.example")
    path = _write(
        tmp_path,
        "db.csv",
        f"Domain,Intent Keyword,Intent Strength,Date\nacme.example,ETL,{word},{D1}\n",
    )
    report = import_file("intent", path, engine, get_settings())
    assert (report.imported, report.warned, report.rejects) == (1, 0, [])
    assert [s[3] for s in _signals(engine)] == [score]
    assert not warnings_path(path).exists()


def test_a_surge_flag_works_without_a_score(engine, tmp_path):
    _accounts(engine, "acme.example", "globex.example")
    path = _write(
        tmp_path,
        "surge.csv",
        f"domain,topic,surging,date\nacme.example,ETL,yes,{D1}\nglobex.example,ETL,0,{D1}\n",
    )
    report = import_file("intent", path, engine, get_settings())
    assert (report.imported, report.rejects, report.warned) == (2, [], 0)
    acme, globex = _signals(engine)
    assert (acme[3], acme[5]["surge"], acme[5]["level"]) == (60.0, True, "surge flag")
    assert (globex[3], globex[5]["surge"]) == (0.0, False)


def test_unusable_rows_are_rejected_with_line_and_field_and_the_rest_goes_in(engine, tmp_path):
    _accounts(engine, "acme.example", "globex.example")
    future = (TODAY + timedelta(days=30)).isoformat()
    path = _write(
        tmp_path,
        "intent.csv",
        "Domain,Topic Name,Composite Score,Date\n"
        f"acme.example,Data Integration,72,{D1}\n"  # 2: fine
        f"acme.example,ETL,lots,{D1}\n"  # 3: bad score
        "acme.example,ETL,55,last tuesday\n"  # 4: bad date
        f"unknown.example,ETL,55,{D1}\n"  # 5: not an imported account
        f"globex.example,,55,{D1}\n"  # 6: no topic
        f"globex.example,ETL,140,{D1}\n"  # 7: out of range
        "globex.example,ETL,55,03/04/2026\n"  # 8: 3 April or March 4?
        f"globex.example,ETL,55,{future}\n"  # 9: in the future
        ",ETL,55,2026-01-05\n"  # 10: no domain
        f"eu.globex.example,ETL,65,{D1}\n",  # 11: a subdomain of an account: kept, warned
    )

    report = import_file("intent", path, engine, get_settings())

    reasons = {reject.line: reject.reason for reject in report.rejects}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert reasons[3].startswith("score: ") and "lots" in reasons[3]
    assert reasons[4].startswith("date: ") and "last tuesday" in reasons[4]
    assert reasons[5] == (
        "domain: no account with this domain (unknown.example): import it with "
        "`abm import accounts` first"
    )
    assert reasons[6].startswith("topic: missing")
    assert reasons[7].startswith("score: ") and "between 0 and 100" in reasons[7]
    assert reasons[8].startswith("date: ") and "ambiguous" in reasons[8]
    assert reasons[9].startswith("date: ") and "future" in reasons[9]
    assert reasons[10].startswith("domain: missing")
    assert (report.imported, report.updated) == (2, 0)
    assert [(w.line, w.field, w.value) for w in report.warnings] == [
        (11, "domain", "eu.globex.example")
    ]
    assert "filed under globex.example" in report.warnings[0].action
    written = rejects_path(path).read_text(encoding="utf-8").splitlines()
    assert written[0] == "line,reason,Domain,Topic Name,Composite Score,Date"
    assert [line.split(",")[0] for line in written[1:]] == [str(n) for n in sorted(reasons)]
    warned = warnings_path(path).read_text(encoding="utf-8").splitlines()
    assert warned[0] == "line,field,value,action" and warned[1].startswith("11,domain,")
    assert sorted((s[1], s[2]) for s in _signals(engine)) == [
        ("acme.example", "Data Integration"),
        ("globex.example", "ETL"),
    ]


def test_a_bad_surge_flag_beside_a_good_score_is_a_warning_not_a_reject(engine, tmp_path):
    _accounts(engine, "acme.example")
    path = _write(
        tmp_path, "i.csv", f"domain,topic,score,surge,date\nacme.example,ETL,70,maybe,{D1}\n"
    )
    report = import_file("intent", path, engine, get_settings())
    assert (report.imported, report.rejects) == (1, [])
    assert [(w.line, w.field, w.value) for w in report.warnings] == [(2, "surge", "maybe")]
    strict = import_file("intent", path, engine, get_settings(), strict=True)
    assert [r.line for r in strict.rejects] == [2] and strict.rejects[0].reason.startswith("surge")


def test_reimporting_the_same_file_stores_nothing_new_and_a_changed_score_updates(engine, tmp_path):
    _accounts(engine, "acme.example", "globex.example")
    path = _write(tmp_path, "bombora.csv", PROVIDERS["bombora"])
    first = import_file("intent", path, engine, get_settings())
    again = import_file("intent", path, engine, get_settings())
    assert (first.imported, first.updated) == (2, 0)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 2)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(EngagementEvent)).scalar() == 2
    # the same domain, topic (in any case) and date from the same source is the same signal
    changed = _write(
        tmp_path,
        "bombora.csv",
        PROVIDERS["bombora"].replace("Data Integration,72", "DATA  integration,81"),
    )
    third = import_file("intent", changed, engine, get_settings())
    assert (third.imported, third.updated, third.unchanged) == (0, 1, 1)
    assert [s[3] for s in _signals(engine)] == [81.0, 55.0]


def test_duplicate_rows_in_one_file_merge(engine, tmp_path):
    _accounts(engine, "acme.example")
    path = _write(
        tmp_path,
        "dup.csv",
        f"domain,topic,score,date\nacme.example,ETL,50,{D1}\nacme.example,etl,70,{D1}\n",
    )
    report = import_file("intent", path, engine, get_settings())
    assert (report.imported, report.rejects) == (1, [])
    assert any("1 duplicate rows merged" in note for note in report.notes)
    assert [s[3] for s in _signals(engine)] == [70.0]


def test_a_file_without_a_date_column_needs_the_date_of_the_export(engine, tmp_path):
    _accounts(engine, "acme.example")
    path = _write(tmp_path, "snapshot.csv", "Domain,Keyword,Intent Score\nacme.example,ETL,80\n")
    with pytest.raises(ImportFileError, match="--date"):
        import_file("intent", path, engine, get_settings())
    report = import_file("intent", path, engine, get_settings(), as_of=date.fromisoformat(D2))
    assert report.imported == 1
    assert [s[4] for s in _signals(engine)] == [date.fromisoformat(D2)]
    dated = _write(tmp_path, "dated.csv", f"domain,topic,score,date\nacme.example,ETL,80,{D1}\n")
    report = import_file("intent", dated, engine, get_settings(), as_of=date.fromisoformat(D2))
    assert any("--date" in note and "not used" in note for note in report.notes)


def test_a_file_without_a_topic_column_is_refused_naming_the_names_it_knows(engine, tmp_path):
    path = _write(tmp_path, "x.csv", f"domain,score,date\nacme.example,80,{D1}\n")
    with pytest.raises(ImportFileError, match="Topic Name"):
        import_file("intent", path, engine, get_settings())


def test_week_numbers_and_other_date_forms_are_read(engine, tmp_path):
    _accounts(engine, "acme.example")
    monday = TODAY - timedelta(days=TODAY.weekday() + 7)
    year, week, _ = monday.isocalendar()
    day = TODAY - timedelta(days=20)
    late = next(
        TODAY - timedelta(days=n) for n in range(1, 40) if (TODAY - timedelta(days=n)).day > 12
    )
    path = _write(
        tmp_path,
        "dates.csv",
        "domain,topic,score,week\n"
        f"acme.example,A,70,{year}-W{week:02d}\n"
        f"acme.example,B,70,{day.day} {day:%b} {day.year}\n"
        f"acme.example,C,70,{day:%Y-%m-%d}T10:00:00Z\n"
        f"acme.example,D,70,{late.day}/{late.month}/{late.year}\n"  # day first: no doubt
        f"acme.example,E,70,{late.month}/{late.day}/{late.year}\n",  # month first: no doubt
    )
    report = import_file("intent", path, engine, get_settings())
    assert report.rejects == []
    dates = {s[2]: s[4] for s in _signals(engine)}
    assert dates == {"A": monday, "B": day, "C": day, "D": late, "E": late}


def test_the_command_prints_counts_last_and_exits_1_on_rejects(
    engine, database_url, tmp_path, capsys, monkeypatch
):
    _accounts(engine, "acme.example")
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    path = _write(
        tmp_path,
        "i.csv",
        f"domain,topic,score,date\nacme.example,ETL,70,{D1}\nnope.example,ETL,70,{D1}\n",
    )
    code, out, err = run_abm(capsys, monkeypatch, "import", "intent", str(path))
    assert code == 1
    assert out.strip().splitlines()[-1] == "imported=1 updated=0 rejected=1 warned=0"
    assert f"{path}:3: domain: no account with this domain" in err
    code, out, _ = run_abm(capsys, monkeypatch, "import", "intent", str(path), "--source", "g2")
    assert out.strip().splitlines()[-1] == "imported=1 updated=0 rejected=1 warned=0"
    code, out, _ = run_abm(capsys, monkeypatch, "import", "intent", str(path), "--source", "g2")
    assert out.strip().splitlines()[-1] == "imported=0 updated=0 rejected=1 warned=0"


# --- weighing intent: topics in the engagement rules, decay, stage rules ---------------


def _with_topics(topics: str) -> str:
    """The default engagement rules with `topics` in place of their (empty) topics section."""
    text = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    assert text.count(DEFAULT_TOPICS) == 1
    return text.replace(DEFAULT_TOPICS, topics)


def _rules(tmp_path: Path, topics: str):
    from stages.engagement.rollup import engagement_rules_from

    path = tmp_path / "rules.yaml"
    path.write_text(_with_topics(topics), encoding="utf-8")
    return engagement_rules_from(Settings(engagement_rules=path)), path


DEFAULT_TOPICS = "topics:\n  default_weight: 0\n  weights: []\n"
TOPICS = """topics:
  default_weight: 0
  weights:
    - topic: "data integration*"
      weight: 10
    - topic: ETL
      weight: 5
"""


def _intent(topic: str, score: float, days_ago: float = 0) -> dict:
    return {
        "type": "intent",
        "channel": "intent",
        "occurred_at": utcnow() - timedelta(days=days_ago),
        "contact_id": None,
        "role": None,
        "data": {"topic": topic, "score": score},
    }


def test_topic_weights_apply_case_insensitively_and_unlisted_topics_count_nothing(tmp_path):
    from stages.engagement.rollup import account_engagement, load_engagement_rules

    rules, _ = _rules(tmp_path, TOPICS)
    now = utcnow()
    assert rules.topic_weight("Data Integration Platforms") == 10
    assert rules.topic_weight("etl") == 5
    assert rules.topic_weight("Office Furniture") == 0
    listed = account_engagement([_intent("DATA INTEGRATION", 80)], rules, now)
    assert listed.score == pytest.approx(8.0)  # weight 10 x score 80 / 100
    assert account_engagement([_intent("Office Furniture", 100)], rules, now).score == 0
    # the shipped rules list no topic: intent counts nothing until you say what you sell
    assert account_engagement([_intent("ETL", 100)], load_engagement_rules(), now).score == 0
    generous, _ = _rules(tmp_path, TOPICS.replace("default_weight: 0", "default_weight: 2"))
    assert account_engagement([_intent("Office Furniture", 50)], generous, now).score == 1.0


def test_an_old_intent_signal_weighs_less_than_a_fresh_one(tmp_path):
    from stages.engagement.rollup import account_engagement

    rules, _ = _rules(tmp_path, TOPICS)
    now = utcnow()
    fresh = account_engagement([_intent("ETL", 100)], rules, now).score
    old = account_engagement([_intent("ETL", 100, days_ago=rules.half_life_days)], rules, now)
    assert fresh == pytest.approx(5.0)
    assert old.score == pytest.approx(2.5, abs=0.05)


def test_a_bad_topics_section_names_the_setting_the_file_and_the_line(tmp_path):
    bad = TOPICS.replace("weight: 5", "weight: lots")
    with pytest.raises(ConfigError) as refused:
        _rules(tmp_path, bad)
    message = str(refused.value)
    path = tmp_path / "rules.yaml"
    line = path.read_text(encoding="utf-8").splitlines().index("      weight: lots") + 1
    assert "ABM_ENGAGEMENT_RULES" in message and f"{path}:{line}" in message
    assert "topics.weights[1].weight" in message
    with pytest.raises(ConfigError, match="topic"):
        _rules(tmp_path, TOPICS.replace('"data integration*"', '""'))


def test_surging_on_a_listed_topic_moves_a_target_account_to_engaged(engine, tmp_path):
    from stages.engagement.rollup import rollup_accounts

    stage_rule = """
    or_intent:
      topics: ["data integration*"]
      min_score: 60
      within: 14d
"""
    base = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    text = base.replace("    or_events: [reply]\n", "    or_events: [reply]\n" + stage_rule, 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    from stages.engagement.rollup import engagement_rules_from

    rules = engagement_rules_from(Settings(engagement_rules=path))
    _accounts(engine, "acme.example", "globex.example", "initech.example")
    old = (TODAY - timedelta(days=20)).isoformat()
    csv_path = _write(
        tmp_path,
        "i.csv",
        "domain,topic,score,date\n"
        f"acme.example,Data Integration,72,{D1}\n"
        f"globex.example,Data Integration,40,{D1}\n"  # not surging
        f"initech.example,Data Integration,90,{old}\n",  # surging, but 20 days ago
    )
    import_file("intent", csv_path, engine, get_settings())
    with engine.connect() as connection:
        ids = list(connection.execute(select(Account.id)).scalars())
    rollup_accounts(engine, ids, rules)
    with engine.connect() as connection:
        stages = dict(connection.execute(select(Account.domain, Account.stage)).all())
    assert stages == {
        "acme.example": "engaged",
        "globex.example": "target",
        "initech.example": "target",
    }
    from stages.engagement.journey import stage_history

    with engine.connect() as connection:
        acme = connection.execute(
            select(Account.id).where(Account.domain == "acme.example")
        ).scalar_one()
    reasons = [change["reason"] for change in stage_history(engine, acme)]
    assert reasons and "Data Integration" in reasons[-1] and "72" in reasons[-1]


def test_importing_intent_rolls_up_the_accounts_it_touched(engine, tmp_path, monkeypatch):
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(_with_topics(TOPICS), encoding="utf-8")
    monkeypatch.setenv("ABM_ENGAGEMENT_RULES", str(rules_path))
    reset_settings()
    _accounts(engine, "acme.example")
    path = _write(tmp_path, "i.csv", f"domain,topic,score,date\nacme.example,ETL,80,{TODAY}\n")
    import_file("intent", path, engine, get_settings())
    with engine.connect() as connection:
        score, stage = connection.execute(select(Account.engagement_score, Account.stage)).one()
    assert score == pytest.approx(4.0, abs=0.15)  # weight 5 x 80 / 100, a day's decay at most
    assert stage == "aware"


# --- the audience filter: at planning and again at send time ------------------------------


def test_an_intent_audience_filter_targets_surging_accounts_and_drops_them_when_it_expires(
    engine, tmp_path
):
    from abm.demo_data import write_demo_csvs
    from connectors.email.outbox import OutboxBackend
    from core.campaign_file import load_campaign
    from models.tables import Contact, Delivery
    from stages.delivery.ledger import (
        DeliveryContext,
        due_delivery_ids,
        plan_step,
        register_campaign,
    )
    from stages.delivery.send import deliver
    from stages.targeting.audience import target_account_ids
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    campaign_file = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=120)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    rescore_accounts_in_db(engine, load_icp_rules())
    key, campaign = load_campaign(campaign_file)
    campaign = campaign.model_copy(
        update={"caps": campaign.caps.model_copy(update={"per_contact": None, "per_account": None})}
    )
    everyone = target_account_ids(engine, campaign.audience)
    with engine.connect() as connection:
        domains = dict(
            connection.execute(
                select(Account.id, Account.domain).where(Account.id.in_(everyone[:3]))
            ).all()
        )
    surging, cold, elsewhere = (domains[i] for i in everyone[:3])
    path = _write(
        tmp_path,
        "bombora.csv",
        "Domain,Topic Name,Composite Score,Date\n"
        f"{surging},Data Integration Platforms,75,{D1}\n"
        f"{cold},Data Integration Platforms,40,{D1}\n"  # below min_score
        f"{elsewhere},Office Furniture,95,{D1}\n",  # a topic we do not sell
    )
    import_file("intent", path, engine, get_settings())
    audience = campaign.audience.model_validate(
        {
            **campaign.audience.model_dump(),
            "intent": {"topics": ["data integration*"], "min_score": 60, "within": "30d"},
        }
    )
    campaign = campaign.model_copy(update={"audience": audience})

    targets = target_account_ids(engine, campaign.audience)
    assert targets == [everyone[0]]

    campaign_id = register_campaign(engine, key, campaign, campaign_file)
    assert plan_step(engine, campaign_id, key, campaign.steps, 0, targets) > 0
    # time passes: the signal is now older than the filter's 30 days
    with engine.begin() as connection:
        connection.execute(
            update(EngagementEvent)
            .where(EngagementEvent.type == "intent")
            .values(occurred_at=datetime.now(UTC) - timedelta(days=45))
        )
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, campaign.steps[0].id
    )
    ids = due_delivery_ids(engine, campaign_id, campaign.steps[0].id)
    outcome = deliver(engine, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))

    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.state, Delivery.skip_reason, Delivery.last_error)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
    assert rows and {(state, reason) for state, reason, _ in rows} == {("skipped", "left_audience")}
    assert all("data integration*" in detail and "30 days" in detail for _, _, detail in rows)
    assert outcome.sent == 0
    assert target_account_ids(engine, campaign.audience) == []


def test_an_intent_filter_in_a_campaign_file_is_checked(tmp_path):
    from core.campaign_file import load_campaign

    path = tmp_path / "c.yaml"
    path.write_text(
        "name: Surging\n"
        "audience:\n"
        "  intent:\n"
        "    topics: [etl]\n"
        "    min_score: 160\n"
        "    within: soon\n"
        "steps:\n"
        "  - id: intro\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_campaign(path)
    message = str(refused.value)
    assert f"{path}:5: audience.intent.min_score" in message
    assert f"{path}:6: audience.intent.within" in message

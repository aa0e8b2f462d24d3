"""Engagement by source (email, LinkedIn, web, intent): one function says where an event came
from; the rollup keeps each account's score split by source, so that `abm accounts show`
and the report can say why an account moved."""

from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_support import run_abm
from sqlalchemy import select

from core.settings import DEFAULTS_DIR, reset_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, utcnow
from stages.engagement.rollup import account_engagement, load_engagement_rules, store_events
from stages.engagement.sources import SOURCES, source_of

DEFAULT_TOPICS = "topics:\n  default_weight: 0\n  weights: []\n"
TOPICS = """topics:
  default_weight: 0
  weights:
    - topic: "data integration*"
      weight: 10
"""


@pytest.mark.parametrize(
    ("kind", "channel", "source"),
    [
        ("open", "email", "email"),
        ("click", "email", "email"),
        ("reply", "email", "email"),  # a webhook's, or the monitored mailbox's
        ("bounce", "email", "email"),
        ("meeting", "email", "email"),
        ("unsubscribe", "email", "email"),
        ("click_scanner", "email", "email"),
        ("ad_impression", "linkedin", "linkedin"),
        ("ad_click", "linkedin", "linkedin"),
        ("lead_form", "linkedin", "linkedin"),
        ("web_visit", "web", "web"),
        ("web_visit", None, "web"),
        ("intent", "intent", "intent"),
        ("click", None, "email"),
        ("meeting", "crm", "other"),
    ],
)
def test_every_event_has_one_source(kind, channel, source):
    assert source_of(kind, channel) == source
    assert source in SOURCES


def _event(kind: str, channel: str, days_ago: float = 0, contact=None, role=None, data=None):
    return {
        "type": kind,
        "channel": channel,
        "occurred_at": utcnow() - timedelta(days=days_ago),
        "contact_id": contact,
        "role": role,
        "data": data or {},
    }


def _rules(tmp_path: Path):
    from core.settings import Settings
    from stages.engagement.rollup import engagement_rules_from

    path = tmp_path / "rules.yaml"
    text = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    assert text.count(DEFAULT_TOPICS) == 1
    path.write_text(text.replace(DEFAULT_TOPICS, TOPICS), encoding="utf-8")
    return engagement_rules_from(Settings(engagement_rules=path)), path


def test_the_sources_and_the_breadth_bonus_add_up_to_the_score(tmp_path):
    rules, _ = _rules(tmp_path)
    events = [
        _event("reply", "email", 2, contact=1, role="specifier"),
        _event("open", "email", 1, contact=1, role="specifier"),
        _event("click", "email", 9, contact=2, role="approver"),
        _event("unsubscribe", "email", 3, contact=3),
        _event("ad_click", "linkedin", 4, data={"count": 3}),
        _event("lead_form", "linkedin", 6, contact=4, role="user"),
        _event("web_visit", "web", 1, contact=1, data={"path": "/pricing"}),
        _event("intent", "intent", 5, data={"topic": "Data Integration", "score": 72}),
        _event("intent", "intent", 5, data={"topic": "Office Furniture", "score": 99}),
    ]
    engagement = account_engagement(events, rules, utcnow())
    assert set(engagement.sources) == set(SOURCES)
    assert all(engagement.sources[s] != 0 for s in ("email", "linkedin", "web", "intent"))
    assert engagement.sources["other"] == 0
    assert engagement.breadth > 0
    total = sum(engagement.sources.values()) + engagement.breadth
    assert total == pytest.approx(engagement.score, abs=1e-9)
    assert engagement.sources["intent"] == pytest.approx(10 * 0.72 * 0.5 ** (5 / 30), abs=0.05)


def _account_with_every_source(engine, tmp_path, monkeypatch, database_url) -> int:
    rules, path = _rules(tmp_path)
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_ENGAGEMENT_RULES", str(path))
    reset_settings()
    upsert_accounts(engine, [{"domain": "acme.example", "name": "Acme", "attributes": {}}])
    upsert_contacts(
        engine,
        [
            {"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}},
            {"email": "bo@acme.example", "account_domain": "acme.example", "attributes": {}},
        ],
    )
    with engine.begin() as connection:
        connection.execute(
            Contact.__table__.update()
            .where(Contact.email == "ana@acme.example")
            .values(role="specifier")
        )
        acme = connection.execute(select(Account.id)).scalar_one()
        ana, bo = connection.execute(select(Contact.id).order_by(Contact.email)).scalars()
        connection.execute(Account.__table__.update().values(tier=1))
    now = utcnow()

    def event(key, kind, channel, days, contact=None, provider="test", data=None):
        return {
            "provider": provider,
            "provider_event_id": key,
            "type": kind,
            "channel": channel,
            "occurred_at": now - timedelta(days=days),
            "account_id": acme,
            "contact_id": contact,
            "data": data or {},
        }

    store_events(
        engine,
        [
            event("r1", "reply", "email", 2, ana, provider="imap"),  # the monitored mailbox
            event("c1", "click", "email", 3, bo, provider="sendgrid"),
            event("o1", "open", "email", 3, bo, provider="sendgrid"),
            event("a1", "ad_click", "linkedin", 4, data={"count": 4}, provider="linkedin"),
            event("w1", "web_visit", "web", 1, ana, provider="abm", data={"path": "/pricing"}),
        ],
        rules,
    )
    csv_path = tmp_path / "bombora.csv"
    csv_path.write_text(
        "Domain,Topic Name,Composite Score,Date\n"
        f"acme.example,Data Integration,72,{(now - timedelta(days=5)).date()}\n"
        f"acme.example,Office Furniture,88,{(now - timedelta(days=6)).date()}\n",
        encoding="utf-8",
    )
    from core.settings import get_settings
    from stages.importing import import_file

    import_file("intent", csv_path, engine, get_settings())
    return acme


def test_accounts_show_breaks_the_score_down_by_source(
    engine, database_url, tmp_path, monkeypatch, capsys
):
    _account_with_every_source(engine, tmp_path, monkeypatch, database_url)

    code, out, _ = run_abm(capsys, monkeypatch, "accounts", "show", "acme.example", "--json")

    assert code == 0
    shown = json.loads(out)
    by_source = shown["engagement_sources"]
    assert set(by_source["sources"]) == set(SOURCES)
    assert by_source["score"] == shown["engagement_score"]
    parts = sum(by_source["sources"].values()) + by_source["breadth"]
    assert parts == pytest.approx(shown["engagement_score"], abs=1e-6)
    assert all(by_source["sources"][s] > 0 for s in ("email", "linkedin", "web", "intent"))
    top = by_source["top"]
    assert {item["type"] for item in top["email"]} == {"reply", "click", "open"}
    assert top["email"][0]["type"] == "reply"  # the biggest contribution first
    assert top["intent"][0]["topic"] == "Data Integration"
    assert all(item["weight"] > 0 for source in top.values() for item in source)
    intent = shown["intent"]
    assert [(i["topic"], i["score"], i["source"]) for i in intent] == [
        ("Data Integration", 72.0, "bombora"),
        ("Office Furniture", 88.0, "bombora"),
    ]
    assert intent[0]["surging"] is True and intent[0]["weight"] > 0
    assert intent[1]["weight"] == 0  # not a topic we sell
    whats = [entry["what"] for entry in shown["timeline"]]
    assert "intent signal: Data Integration, score 72" in whats

    code, out, _ = run_abm(capsys, monkeypatch, "accounts", "show", "acme.example")
    assert code == 0
    assert "Engagement by source" in out
    for label in ("email", "LinkedIn", "web", "intent", "breadth"):
        assert label in out
    assert "Intent topics" in out and "Data Integration" in out and "Office Furniture" in out


class _Closed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_report_shows_engagement_by_source(engine, database_url, tmp_path, monkeypatch):
    from stages.report import render_html, report_data, report_markdown

    _account_with_every_source(engine, tmp_path, monkeypatch, database_url)

    data = report_data(engine, ["decision_maker"])

    section = data["engagement_sources"]
    assert set(section["totals"]) == set(SOURCES)
    (acme,) = section["accounts"]
    assert acme["domain"] == "acme.example"
    with engine.connect() as connection:
        stored = connection.execute(select(Account.engagement_score)).scalar_one()
    assert sum(acme["sources"].values()) + acme["breadth"] == pytest.approx(stored, abs=1e-6)
    assert section["totals"] == acme["sources"]
    assert section["intent_topics"][0]["topic"] == "Data Integration"

    page = render_html(data)
    parser = _Closed()
    parser.feed(page)
    text = " ".join(parser.text)
    assert "Engagement by source" in text
    for label in ("Email", "LinkedIn", "Web", "Intent"):
        assert label in text
    assert "acme.example" in text
    assert "Data Integration" in text
    markdown = report_markdown(data)
    assert "## Engagement by source" in markdown

    rules = load_engagement_rules()
    assert rules.topics.default_weight == 0

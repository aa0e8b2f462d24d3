"""`abm report`: its numbers match the ledger and the events, the A/B maths is right, the page
parses and fetches nothing, and no person's email or name leaves the database."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from core.settings import reset_settings
from models.db import session_scope
from models.tables import Account, Campaign, Contact, Delivery, EngagementEvent, StageChange
from stages.delivery.ledger import ledger_summary
from stages.report import (
    MIN_SENT_PER_VARIANT,
    publish_artifact,
    render_html,
    report_data,
    report_markdown,
    two_proportion_p_value,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday: ISO week 2026-W10
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
ROLES = ["decision_maker", "approver", "specifier"]
HOSTILE = '<script>alert("x")</script> & Sons'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


def _person(index: int, domain: str, role: str = "user", status: str = "active") -> Contact:
    return Contact(
        email=f"person{index}@{domain}",
        first_name="Zelda",
        last_name=f"Quixotic{index}",
        role=role,
        status=status,
        account_id=0,
    )


def _build(engine: Engine) -> dict[str, Any]:
    """One campaign: an A/B step (40 + 40 sent, every other ledger state once or twice) at
    alpha, a follow-up at beta; events over weeks 10 and 12; a few stage moves."""
    with session_scope(engine) as session:
        alpha = Account(domain="alpha.example", name=HOSTILE, tier=1, stage="mqa", created_at=T0)
        beta = Account(domain="beta.example", name="Beta", tier=2, stage="engaged", created_at=T0)
        gamma = Account(domain="gamma.example", name="Gamma", tier=3, stage="aware", created_at=T0)
        delta = Account(domain="delta.example", name="Delta", stage="target", created_at=T0)
        campaign = Campaign(key="spring", name="<b>Spring</b> | launch")
        session.add_all([alpha, beta, gamma, delta, campaign])
        session.flush()
        at_alpha = [_person(i, "alpha.example") for i in range(89)]
        at_alpha[0].role, at_alpha[1].role = "decision_maker", "approver"
        at_alpha[2].role, at_alpha[2].status = "specifier", "unsubscribed"
        at_beta = [_person(i, "beta.example") for i in range(5)]
        at_beta[0].role = "decision_maker"
        for person in at_alpha:
            person.account_id = alpha.id
        for person in at_beta:
            person.account_id = beta.id
        session.add_all(at_alpha + at_beta)
        session.flush()

        def delivery(person: Contact, step: str, state: str, **extra: Any) -> Delivery:
            return Delivery(
                campaign_id=campaign.id,
                step=step,
                contact_id=person.id,
                account_id=person.account_id,
                state=state,
                due_at=T0,
                **extra,
            )

        rows = [
            delivery(p, "intro", "sent", variant="ab"[i // 40], message_id=f"<m{i}@t>", sent_at=T0)
            for i, p in enumerate(at_alpha[:80])
        ]
        rows += [
            delivery(at_alpha[80], "intro", "skipped", variant="a", skip_reason="suppressed"),
            delivery(at_alpha[81], "intro", "skipped", variant="b", skip_reason="suppressed"),
            delivery(at_alpha[82], "intro", "skipped", variant="a", skip_reason="unsubscribed"),
            delivery(at_alpha[83], "intro", "planned", last_error="deferred: frequency cap"),
            delivery(at_alpha[84], "intro", "planned", last_error="deferred: sending window"),
            delivery(at_alpha[85], "intro", "failed", last_error="421 try later"),
            delivery(at_alpha[86], "intro", "dead", last_error="550 no such user"),
            delivery(at_alpha[87], "intro", "uncertain"),
            delivery(at_alpha[88], "intro", "planned"),
        ]
        rows += [
            delivery(p, "follow-up", "sent", message_id=f"<f{i}@t>", sent_at=T0)
            for i, p in enumerate(at_beta)
        ]
        session.add_all(rows)

        events: list[EngagementEvent] = []

        def event(kind: str, message: str | None, at: datetime, account: Account, **extra: Any):
            events.append(
                EngagementEvent(
                    provider="test",
                    provider_event_id=f"{kind}:{message}:{len(events)}",
                    type=kind,
                    channel="email",
                    occurred_at=at,
                    account_id=account.id,
                    message_id=message,
                    **extra,
                )
            )

        tuesday, sunday_night = T0 + timedelta(days=1), T0 + timedelta(days=6, hours=14, minutes=30)
        for i in range(20):
            event("open", f"<m{i}@t>", tuesday, alpha)
        for i in range(40, 70):
            event("open", f"<m{i}@t>", tuesday, alpha)
        for i in [*range(4), *range(40, 52), 40]:  # message 40 is clicked twice
            event("click", f"<m{i}@t>", tuesday, alpha)
        for i in [0, 1, 40, 41, 42, 43]:
            event("reply", f"<m{i}@t>", sunday_night, alpha)
        event("click", "<not-ours@t>", tuesday, alpha)
        week_12 = T0 + timedelta(days=14)
        event("click", "<f0@t>", week_12, beta)
        event("reply", "<f0@t>", week_12, beta)
        event("reply", "<f1@t>", week_12, beta)
        event("ad_click", None, week_12, beta, data={"count": 5})
        session.add_all(events)

        for account, before, after, days in (
            (alpha, "target", "aware", 2),
            (alpha, "aware", "engaged", 5),
            (alpha, "engaged", "mqa", 6),
            (beta, "target", "engaged", 4),
            (gamma, "target", "aware", 4),
        ):
            session.add(
                StageChange(
                    account_id=account.id,
                    from_stage=before,
                    to_stage=after,
                    reason="test",
                    changed_at=T0 + timedelta(days=days),
                )
            )
        return {
            "campaign_id": campaign.id,
            "emails": [p.email for p in at_alpha + at_beta],
            "names": [p.last_name for p in at_alpha + at_beta],
        }


@pytest.fixture
def built(engine: Engine) -> tuple[Engine, dict[str, Any], dict[str, Any]]:
    facts = _build(engine)
    return engine, facts, report_data(engine, ROLES, now=NOW)


class _Checker(HTMLParser):
    """Every element closed in order (void elements aside); counts tags."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.opened[tag] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.opened[tag] += 1
        self.closed[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        self.closed[tag] += 1
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_step_numbers_match_the_ledger(built):
    engine, facts, data = built
    (campaign,) = data["campaigns"]
    summary = ledger_summary(engine, facts["campaign_id"])
    totals = campaign["totals"]
    for key in ("planned", "sent", "skipped", "deferred", "failed", "uncertain", "pending"):
        assert totals[key] == summary[key], key
    assert totals["skipped_by_reason"] == summary["skipped_by_reason"]
    intro, follow_up = campaign["steps"]
    assert intro["step"] == "intro" and follow_up["step"] == "follow-up"
    assert {k: intro[k] for k in ("planned", "sent", "skipped", "deferred", "waiting")} == {
        "planned": 89,
        "sent": 80,
        "skipped": 3,
        "deferred": 2,
        "waiting": 1,
    }
    assert (intro["failed"], intro["uncertain"]) == (2, 1)
    assert intro["skipped_by_reason"] == {"suppressed": 2, "unsubscribed": 1}
    # responses count messages: the second click on one message and a stranger's are ignored
    assert (intro["opens"], intro["clicks"], intro["replies"]) == (50, 16, 6)
    assert intro["click_rate"] == pytest.approx(16 / 80)
    assert (follow_up["sent"], follow_up["clicks"], follow_up["replies"]) == (5, 1, 2)
    assert campaign["accounts_reached"] == 2
    assert data["headline"]["emails_sent"] == 85
    assert data["headline"]["reply_rate"] == pytest.approx(8 / 85, abs=1e-4)


def test_ab_comparison_per_variant_with_a_z_test_on_click_rate(built):
    _, _, data = built
    (test,) = data["campaigns"][0]["ab_tests"]
    a, b = test["variants"]
    assert (a["variant"], a["sent"], a["opens"], a["clicks"], a["replies"]) == ("a", 40, 20, 4, 2)
    assert (b["variant"], b["sent"], b["opens"], b["clicks"], b["replies"]) == ("b", 40, 30, 12, 4)
    (comparison,) = test["comparisons"]
    pooled = 16 / 80
    z = (12 / 40 - 4 / 40) / math.sqrt(pooled * (1 - pooled) * (2 / 40))
    expected = 2 * (1 - NormalDist().cdf(z))
    assert comparison["p_value"] == pytest.approx(expected, abs=1e-4)
    assert (comparison["result"], comparison["higher"]) == ("significant", "b")


def test_two_proportion_p_value_on_a_textbook_example():
    # 15% against 25% of 200 each: pooled 20%, standard error 0.04, z = 2.5
    assert two_proportion_p_value(30, 200, 50, 200) == pytest.approx(0.01242, abs=1e-5)
    assert two_proportion_p_value(50, 200, 30, 200) == two_proportion_p_value(30, 200, 50, 200)
    assert two_proportion_p_value(20, 200, 20, 200) == pytest.approx(1.0)


def test_too_little_data_gives_no_p_value():
    few = MIN_SENT_PER_VARIANT - 1
    assert two_proportion_p_value(5, few, 15, few) is None
    assert two_proportion_p_value(1, 100, 2, 100) is None  # 1.5 clicks expected per variant
    assert two_proportion_p_value(0, 500, 0, 500) is None


def test_funnel_committee_weekly_engagement_and_stage_velocity(built):
    _, _, data = built
    by_tier = {row["tier"]: row for row in data["funnel"]["tiers"]}
    assert [by_tier[t]["reached"] for t in (1, 2, 3)] == [1, 1, 0]
    assert by_tier[None]["accounts"] == 1
    targeted = data["funnel"]["targeted"]
    assert targeted["accounts"] == 3
    assert [targeted["at_least"][s] for s in ("aware", "engaged", "mqa", "customer")] == [
        3,
        2,
        1,
        0,
    ]

    committee = data["committee"]
    gaps = {row["domain"]: (row["covered"], row["gaps"]) for row in committee["accounts"]}
    assert gaps == {
        "alpha.example": (["decision_maker", "approver"], ["specifier"]),  # specifier unsubscribed
        "beta.example": (["decision_maker"], ["approver", "specifier"]),
        "gamma.example": ([], ROLES),
    }
    assert committee["gaps_by_role"] == {"decision_maker": 1, "approver": 2, "specifier": 3}

    weeks = {w["week"]: w["counts"] for w in data["engagement"]["weeks"]}
    assert list(weeks) == ["2026-W10", "2026-W11", "2026-W12"]
    assert (weeks["2026-W10"]["open"], weeks["2026-W10"]["click"]) == (50, 18)
    assert weeks["2026-W10"]["reply"] == 6  # Sunday 23:30 UTC still belongs to week 10
    assert set(weeks["2026-W11"].values()) == {0}
    assert weeks["2026-W12"]["ad_click"] == 5  # an analytics row carries its count

    velocity = {(v["from_stage"], v["to_stage"]): v for v in data["stage_velocity"]}
    assert velocity["target", "aware"]["moves"] == 2
    assert velocity["target", "aware"]["median_days"] == 3.0
    assert velocity["aware", "engaged"]["median_days"] == 3.0
    assert velocity["engaged", "mqa"]["median_days"] == 1.0
    assert velocity["target", "engaged"]["median_days"] == 4.0


def test_html_is_one_well_formed_self_contained_page(built):
    _, _, data = built
    page = render_html(data)
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == []
    assert checker.opened["svg"] == checker.closed["svg"] >= 4
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page  # the account's name, shown as text
    assert "<link" not in page and "src=" not in page and "url(" not in page
    assert "https://" not in page
    assert "20 Mar 2026, 12:00 UTC" in page
    assert page.count("<section>") == 7  # ... engagement by source ...


def test_no_contact_email_or_name_in_html_markdown_or_json(built):
    _, facts, data = built
    outputs = [render_html(data), report_markdown(data), json.dumps(data, default=str)]
    for output in outputs:
        leaked = [e for e in facts["emails"] if e in output]
        leaked += [n for n in facts["names"] if n in output]
        assert leaked == []
        assert "Zelda" not in output


def test_markdown_tables_and_escaping(built):
    _, _, data = built
    markdown = report_markdown(data)
    assert "<b>" not in markdown and "<script" not in markdown
    assert "&lt;b&gt;Spring&lt;/b&gt; \\| launch" in markdown
    intro = next(line for line in markdown.splitlines() if line.startswith("| intro |"))
    assert intro.count("|") == 11
    assert "| a | 40 | 20 | 4 | 2 | 10.0% | 5.0% |" in markdown
    assert "Variant b gets more clicks" in markdown


def test_publish_artifact_uses_the_stable_key(built, monkeypatch):
    import prefect.artifacts

    _, _, data = built
    calls = []
    monkeypatch.setattr(
        prefect.artifacts, "create_markdown_artifact", lambda **kwargs: calls.append(kwargs)
    )
    publish_artifact(data)
    (call,) = calls
    assert call["key"] == "abm-report"
    assert call["markdown"] == report_markdown(data)


def test_an_empty_database_still_makes_a_report(engine):
    data = report_data(engine, ROLES)
    assert data["campaigns"] == [] and data["engagement"]["weeks"] == []
    page = render_html(data)
    assert "No campaign has run yet" in page and "<svg" not in page
    assert report_markdown(data).startswith("# ABM report")


def test_cli_writes_html_and_prints_json(built, database_url, monkeypatch, tmp_path: Path):
    from abm.cli import app

    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    result = CliRunner().invoke(app, ["report", "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["campaigns"][0]["totals"]["sent"] == 85
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert str(page.resolve()) in result.stderr

    human = CliRunner().invoke(app, ["report"])
    assert human.exit_code == 0, human.output
    assert "Variant b gets more clicks" in human.stdout
    assert "person0@alpha.example" not in human.output

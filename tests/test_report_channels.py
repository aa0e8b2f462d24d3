"""The report counts emails, LinkedIn tasks for reps and LinkedIn audience adds apart: a
task handed to a rep or a hashed contact uploaded to an audience is not an email sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cli_support import run_abm
from sqlalchemy import Engine

from core.settings import reset_settings
from models.db import session_scope
from models.tables import Account, Campaign, Contact, Delivery
from stages.report import render_html, report_data, report_markdown

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# step, channel, how many of its rows were sent
STEPS = (
    ("intro", "email", 3),
    ("rep-connect", "linkedin_task", 2),
    ("audience", "linkedin_audience", 4),
)


@pytest.fixture
def data(engine: Engine) -> dict[str, Any]:
    """One campaign: 3 emails, 2 LinkedIn tasks and 4 audience adds sent, one email skipped."""
    with session_scope(engine) as session:
        account = Account(domain="acme.example", name="Acme", tier=1, stage="aware")
        campaign = Campaign(key="mixed", name="Mixed channels")
        session.add_all([account, campaign])
        session.flush()
        people = [
            Contact(email=f"p{i}@acme.example", account_id=account.id, role="user")
            for i in range(5)
        ]
        session.add_all(people)
        session.flush()
        for step, channel, sent in STEPS:
            for i, person in enumerate(people[:sent]):
                session.add(
                    Delivery(
                        campaign_id=campaign.id,
                        step=step,
                        channel=channel,
                        contact_id=person.id,
                        account_id=account.id,
                        state="sent",
                        message_id=f"<{step}-{i}@t>" if channel == "email" else None,
                        sent_at=T0,
                    )
                )
        session.add(
            Delivery(
                campaign_id=campaign.id,
                step="intro",
                contact_id=people[4].id,
                account_id=account.id,
                state="skipped",
                skip_reason="suppressed",
            )
        )
    return report_data(engine, ["decision_maker"], now=T0)


def test_linkedin_tasks_and_audience_adds_are_not_counted_as_emails(data):
    headline = data["headline"]
    assert headline["emails_sent"] == 3
    assert headline["linkedin_tasks"] == 2
    assert headline["audience_adds"] == 4
    (campaign,) = data["campaigns"]
    totals = campaign["totals"]
    assert (totals["emails_sent"], totals["linkedin_tasks"], totals["audience_adds"]) == (3, 2, 4)
    assert totals["sent"] == 9  # the ledger's own count, every channel


def test_the_page_and_the_artifact_name_each_channel(data):
    page = render_html(data)
    assert "9 messages sent" not in page
    assert "3 emails sent" in page
    assert "2 LinkedIn tasks" in page
    assert "4 people added to LinkedIn audiences" in page
    markdown = report_markdown(data)
    assert "**3** emails sent" in markdown
    assert "**2** LinkedIn tasks" in markdown
    assert "**4** LinkedIn audience adds" in markdown


def test_the_command_line_summary_names_each_channel(data, database_url, capsys, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    code, out, err = run_abm(capsys, monkeypatch, "report")
    assert code == 0, err
    assert "Emails sent 3" in out
    assert "LinkedIn tasks 2" in out and "audience adds 4" in out

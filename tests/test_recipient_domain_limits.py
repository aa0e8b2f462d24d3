"""A mailbox provider's own limit on what it takes from one sender in an hour or a day
(ABM_RECIPIENT_DOMAIN_LIMITS) holds across campaigns; the rest wait, with the reason."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sendgrid_delivery import plan_intro
from sqlalchemy import select

from connectors.email.outbox import OutboxBackend
from core.settings import get_settings, parse_domain_limits, reset_settings
from models.tables import Contact, Delivery
from stages.delivery.ledger import due_delivery_ids
from stages.delivery.send import deliver


def test_limits_are_read_as_written_and_a_typo_is_refused() -> None:
    assert parse_domain_limits("gmail.com=500/h, Outlook.com = 2000/d") == {
        "gmail.com": (500, timedelta(hours=1)),
        "outlook.com": (2000, timedelta(hours=24)),
    }
    with pytest.raises(ValueError, match="domain=N/h"):
        parse_domain_limits("gmail.com:500")


def test_a_domain_gets_no_more_than_its_limit_and_the_rest_wait(engine, tmp_path, monkeypatch):
    campaign_id, planned_context = plan_intro(engine, tmp_path, contacts=80)
    with engine.connect() as connection:
        emails = connection.execute(
            select(Contact.email).join(Delivery, Delivery.contact_id == Contact.id)
        ).scalars()
        busiest, planned = Counter(e.rsplit("@", 1)[1] for e in emails).most_common(1)[0]
    assert planned > 2
    monkeypatch.setenv("ABM_RECIPIENT_DOMAIN_LIMITS", f"{busiest}=2/h")
    reset_settings()
    deliver(
        engine,
        get_settings(),
        planned_context,
        due_delivery_ids(engine, campaign_id, "intro"),
        OutboxBackend(tmp_path / "out"),
    )

    with engine.connect() as connection:
        rows = connection.execute(
            select(
                Contact.email,
                Delivery.state,
                Delivery.last_error,
                Delivery.due_at,
                Delivery.sent_at,
            ).join(Contact, Contact.id == Delivery.contact_id)
        ).all()
    at_busiest = [r for r in rows if r.email.endswith("@" + busiest)]
    sent = [r for r in at_busiest if r.state == "sent"]
    held = [r for r in at_busiest if r.state == "planned"]
    assert len(sent) == 2 and len(held) == planned - 2
    assert all(f"recipient domain limit ({busiest}: 2 per hour)" in r.last_error for r in held)
    first = min(r.sent_at for r in sent)
    assert all(abs((r.due_at - (first + timedelta(hours=1))).total_seconds()) < 5 for r in held)
    others = [r for r in rows if not r.email.endswith("@" + busiest)]
    assert others and {r.state for r in others} <= {"sent", "skipped"}

from datetime import timedelta

import pytest

from models.tables import utcnow
from stages.engagement.rollup import (
    AccountEngagement,
    account_engagement,
    load_engagement_rules,
    next_stage,
    simulated_events,
)

RULES = load_engagement_rules()
NOW = utcnow()


def _event(kind, days_ago=0.0, contact=1, role="specifier"):
    return {
        "type": kind,
        "occurred_at": NOW - timedelta(days=days_ago),
        "contact_id": contact,
        "role": role,
    }


def test_an_event_loses_half_its_weight_every_half_life():
    fresh = account_engagement([_event("reply")], RULES, NOW).score
    month_old = account_engagement([_event("reply", days_ago=30)], RULES, NOW).score
    # one person, one role: a fixed breadth bonus of per_role on top of the decayed weight
    bonus = RULES.breadth.per_role
    assert fresh - bonus == pytest.approx(15)
    assert month_old - bonus == pytest.approx(7.5, abs=0.05)


def test_opens_count_for_little_and_replies_for_much():
    opens = account_engagement([_event("open") for _ in range(3)], RULES, NOW).score
    reply = account_engagement([_event("reply")], RULES, NOW).score
    assert opens < reply


def test_breadth_across_people_and_roles_beats_volume_from_one_person():
    one_person = [_event("click", contact=1, role="user") for _ in range(3)]
    three_people = [
        _event("click", contact=1, role="user"),
        _event("click", contact=2, role="specifier"),
        _event("click", contact=3, role="approver"),
    ]
    narrow = account_engagement(one_person, RULES, NOW)
    broad = account_engagement(three_people, RULES, NOW)
    assert (narrow.people, narrow.roles) == (1, 1)
    assert (broad.people, broad.roles) == (3, 3)
    assert broad.score > narrow.score


def test_deliveries_alone_do_not_make_an_account_aware():
    engagement = account_engagement([_event("delivered")], RULES, NOW)
    assert engagement.score == 0
    assert next_stage("target", engagement, RULES) is None


def test_stages_climb_as_far_as_the_rules_allow_and_say_why():
    engagement = AccountEngagement(score=50, people=3, roles=2, event_types=frozenset({"click"}))
    stage, reason = next_stage("target", engagement, RULES)
    assert stage == "mqa"
    assert reason == "score 50 >= 45, 3 people, 2 roles engaged"


def test_a_meeting_makes_an_account_marketing_qualified_at_once():
    engagement = AccountEngagement(
        score=5, people=1, roles=1, event_types=frozenset({"meeting", "reply"})
    )
    assert next_stage("aware", engagement, RULES) == ("mqa", "meeting received")


def test_stages_never_move_backwards():
    engagement = AccountEngagement(score=0, people=0, roles=0, event_types=frozenset())
    assert next_stage("mqa", engagement, RULES) is None
    assert next_stage("opportunity", engagement, RULES) is None


def test_simulated_engagement_is_the_same_every_run():
    sent = [
        {
            "message_id": f"<m{i}@x>",
            "sent_at": NOW,
            "account_id": 1,
            "contact_id": i,
            "campaign_id": 1,
            "seniority": "manager",
            "tier": 1,
        }
        for i in range(300)
    ]
    first, second = simulated_events(sent), simulated_events(sent)
    assert first == second
    kinds = {event["type"] for event in first}
    assert {"delivered", "open", "click", "reply"} <= kinds
    ids = [event["provider_event_id"] for event in first]
    assert len(ids) == len(set(ids))


def test_stored_events_read_back_as_given_once_per_provider_id(engine):
    """The bulk insert path (values pre-serialised on SQLite) must give readers what the ORM
    would: aware UTC datetimes and dict data; duplicates, in the batch or replayed, once."""
    from datetime import UTC, datetime, timezone

    from sqlalchemy import select, text

    from models.store import upsert_accounts, upsert_contacts
    from models.tables import Contact, EngagementEvent
    from stages.engagement.rollup import store_events

    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine, [{"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}}]
    )
    with engine.connect() as connection:
        ana, acme = connection.execute(select(Contact.id, Contact.account_id)).one()
    at = datetime(2026, 3, 29, 3, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    base = {"provider": "sendgrid", "channel": "email", "account_id": acme, "contact_id": ana}
    first = {**base, "provider_event_id": "e1", "type": "click", "occurred_at": at}
    first["data"] = {"url": "https://acme.example/é", "n": [1, None]}
    plain = {**base, "provider_event_id": "e2", "type": "open", "occurred_at": NOW}
    twin = {**first, "type": "open", "data": {}}  # same provider id: the first one wins
    assert store_events(engine, [first, plain, twin]) == 2
    later = {**base, "provider_event_id": "e3", "type": "bounce", "occurred_at": NOW}
    assert store_events(engine, [plain, later, first]) == 1

    with engine.connect() as connection:
        rows = {
            row.provider_event_id: row for row in connection.execute(select(EngagementEvent)).all()
        }
        status = connection.execute(select(Contact.status)).scalar()
    assert sorted(rows) == ["e1", "e2", "e3"]
    assert rows["e1"].type == "click" and rows["e1"].data == first["data"]
    assert rows["e1"].occurred_at == at and rows["e1"].occurred_at.tzinfo == UTC
    assert rows["e2"].data == {} and rows["e2"].occurred_at == NOW
    assert all(row.created_at.tzinfo == UTC for row in rows.values())
    assert status == "bounced"  # the hard bounce suppressed her in the same transaction

    # the stored text is what SQLAlchemy's own insert writes, so SQL comparisons agree
    with engine.begin() as connection:
        connection.execute(
            EngagementEvent.__table__.insert(),
            [{**first, "provider_event_id": "orm", "created_at": rows["e1"].created_at}],
        )
        stored = connection.execute(
            text(
                "SELECT provider_event_id, CAST(occurred_at AS TEXT), CAST(created_at AS TEXT),"
                " CAST(data AS TEXT) FROM engagementevent"
                " WHERE provider_event_id IN ('e1', 'orm') ORDER BY provider_event_id"
            )
        ).all()
    assert stored[0][1:] == stored[1][1:]


SENDGRID_OPEN = {"email": "ana@acme.example", "event": "open", "sg_event_id": "e1", "timestamp": 1}


def _body(**overrides) -> bytes:
    import json

    return json.dumps([SENDGRID_OPEN, {**SENDGRID_OPEN, "sg_event_id": "e2", **overrides}]).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_body(timestamp=float("nan")), "event 1: timestamp is out of range"),
        (_body(timestamp=float("inf")), "event 1: timestamp is out of range"),
        (_body(timestamp=1e300), "event 1: timestamp is out of range"),
        (_body(timestamp=10**30), "event 1: timestamp is out of range"),
        (_body(timestamp=-1), "event 1: timestamp is out of range"),
        (_body(timestamp=10**400), "event 1: timestamp is not a usable number"),
        (_body(sg_event_id="e\x00"), "event 1: sg_event_id holds a NUL"),
        (_body(email="\ud800@acme.example"), "event 1: email holds a NUL or invalid character"),
        (_body(abm_message_id="<a\x00@b>"), "event 1: abm_message_id holds a NUL"),
        (_body().replace(b'"e2"', b'"e\xed\xa0\x80"'), "event 1: sg_event_id holds"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (_body(url="D").replace(b'"D"', b"[" * 100 + b"]" * 100), "event 1: url is nested too"),
    ],
    ids=[
        *("nan", "inf", "1e300", "10**30", "negative", "10**400", "nul", "surrogate-escape"),
        *("nul-message-id", "surrogate-bytes", "deep", "deep-data"),
    ],
)
def test_parse_sendgrid_refuses_what_could_not_be_stored_naming_the_event_and_field(
    body: bytes, reason: str
) -> None:
    from connectors.email.sendgrid_events import parse_sendgrid
    from connectors.email.webhook_events import BadEvents

    with pytest.raises(BadEvents) as refused:
        parse_sendgrid(body)
    assert reason in str(refused.value)


def test_parse_sendgrid_accepts_escaped_text_that_can_be_stored() -> None:
    from connectors.email.sendgrid_events import parse_sendgrid

    body = _body(email="zo\u00eb@acme.example", url="https://acme.example/\u00e9")
    assert b"\\u00eb" in body
    assert parse_sendgrid(body)[1]["email"] == "zoë@acme.example"
    raw = body.replace(b"\\u00eb", "ë".encode()).replace(b"\\u00e9", "é".encode())
    assert parse_sendgrid(raw) == parse_sendgrid(body)


def test_ingested_events_keep_provider_data_and_store_an_empty_object_otherwise(engine):
    from sqlalchemy import select

    from connectors.email.sendgrid_events import parse_sendgrid
    from models.store import upsert_accounts, upsert_contacts
    from models.tables import EngagementEvent
    from stages.engagement.ingest import ingest_sendgrid

    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine, [{"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}}]
    )
    body = _body(event="click", url="https://acme.example/p", timestamp=1764000000.25)
    assert ingest_sendgrid(engine, parse_sendgrid(body)).stored == 2
    assert ingest_sendgrid(engine, parse_sendgrid(body)).stored == 0
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                EngagementEvent.provider_event_id,
                EngagementEvent.type,
                EngagementEvent.data,
                EngagementEvent.occurred_at,
            ).order_by(EngagementEvent.provider_event_id)
        ).all()
    assert [tuple(row[:3]) for row in rows] == [
        ("e1", "open", {}),
        ("e2", "click", {"url": "https://acme.example/p"}),
    ]
    assert rows[1][3].isoformat() == "2025-11-24T16:00:00.250000+00:00"

from datetime import timedelta

import pytest

from flows.engagement import (
    AccountEngagement,
    account_engagement,
    load_engagement_rules,
    next_stage,
    simulated_events,
)
from models.tables import utcnow

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

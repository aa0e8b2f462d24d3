"""Website visits, first-party, at the wire: the site script served by the same server, the
visitor id a tracked click hands to the user's own site, page views recorded for that person
and account with the engagement rules' page weights, Do-Not-Track and Global Privacy
Control honoured, and bad beacons refused with a log line and nothing stored."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError
from tracking_support import (
    BROWSER,
    SECRET,
    client,
    client_for,
    events,
    ledger_row,
    messages,
    score,
    sent_world,
    tracked_paths,
    world,
)

from core.tracking_tokens import (
    SigningKeys,
    make_click_token,
    make_visitor_token,
)
from stages.engagement.rollup import EngagementRules, load_engagement_rules

__all__ = ["client", "client_for", "sent_world", "world"]  # fixtures, used by name


def visitor_id(client: Any, message: Any) -> str:
    """The visitor id a click on the message's site link hands to the site."""
    (link,) = set(tracked_paths(message))
    location = client.get(link, headers={"User-Agent": BROWSER}).headers["location"]
    return parse_qs(urlsplit(location).query)["abm_vid"][0]


def two_accounts(world: dict[str, Any]) -> tuple[Any, Any]:
    """Two sent messages to people at different accounts."""
    by_account = {}
    for message in messages(world["outbox"]):
        by_account.setdefault(ledger_row(world["engine"], message).account_id, message)
    first, second = list(by_account.values())[:2]
    return first, second


def test_the_site_script_is_served_with_its_type_and_caching(client):
    script = client.get("/t.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "public, max-age=3600"
    assert script.headers["x-content-type-options"] == "nosniff"
    body = script.text
    for needed in ("abm_vid", "doNotTrack", "globalPrivacyControl", "replaceState"):
        assert needed in body
    assert "http://127.0.0.1:8025/v" in body  # where it sends page views
    assert "location.search" not in body.split("abm_vid")[-1]  # never sends the query string
    assert client.head("/t.js").status_code == 200


def test_a_visit_after_a_click_counts_for_that_person_and_account_by_page_weight(world, client):
    pricing, blog = two_accounts(world)
    rows = [ledger_row(world["engine"], m) for m in (pricing, blog)]
    vids = [visitor_id(client, m) for m in (pricing, blog)]
    before = [score(world["engine"], row.account_id) for row in rows]

    answers = [
        client.post("/v", data={"vid": vids[0], "p": "/pricing"}),
        client.post("/v", data={"vid": vids[1], "p": "/blog/why-tools-sprawl"}),
        client.post("/v", data={"vid": vids[0], "p": "/pricing"}),  # a reload: once
    ]

    assert [answer.status_code for answer in answers] == [204, 204, 204]
    visits = [e for e in events(world["engine"]) if e.type == "web_visit"]
    assert [(v.contact_id, v.account_id, v.data["path"]) for v in visits] == [
        (rows[0].contact_id, rows[0].account_id, "/pricing"),
        (rows[1].contact_id, rows[1].account_id, "/blog/why-tools-sprawl"),
    ]
    assert all(v.campaign_id == rows[0].campaign_id and v.provider == "abm" for v in visits)
    assert all(set(v.data) <= {"path", "step", "variant"} for v in visits)  # no IP, no agent
    after = [score(world["engine"], row.account_id) for row in rows]
    gained = [now - was for now, was in zip(after, before, strict=True)]
    assert gained[0] > gained[1] > 0  # the pricing page counts more


def test_a_page_view_beacon_may_come_as_a_get(world, client):
    (message, _) = two_accounts(world)
    vid = visitor_id(client, message)
    answer = client.get("/v", params={"vid": vid, "p": "/pricing?email=ana@acme.example#plans"})
    assert answer.status_code == 204
    (visit,) = [e for e in events(world["engine"]) if e.type == "web_visit"]
    assert visit.data["path"] == "/pricing"  # the path only: never a query or fragment


@pytest.mark.parametrize("header", [{"DNT": "1"}, {"Sec-GPC": "1"}])
def test_do_not_track_and_global_privacy_control_store_nothing(world, client, header):
    (message, _) = two_accounts(world)
    vid = visitor_id(client, message)
    answer = client.post("/v", data={"vid": vid, "p": "/pricing"}, headers=header)
    assert answer.status_code == 204
    assert [e.type for e in events(world["engine"])] == ["click"]


def test_a_click_from_a_browser_that_asks_not_to_be_tracked_gets_no_visitor_id(world, client):
    (message, _) = two_accounts(world)
    (link,) = set(tracked_paths(message))
    answer = client.get(link, headers={"User-Agent": BROWSER, "Sec-GPC": "1"})
    assert answer.status_code == 302 and "abm_vid" not in answer.headers["location"]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no vid", 400),
        ("forged vid", 400),
        ("a click token as vid", 400),
        ("huge path", 400),
        ("non-ASCII path", 400),
        ("relative path", 400),
        ("non-ASCII body", 400),
        ("oversize body", 413),
    ],
)
def test_bad_page_views_are_refused_with_a_log_line_and_nothing_stored(
    world, client, case, status, caplog
):
    (message, _) = two_accounts(world)
    vid = visitor_id(client, message)
    delivery_id = ledger_row(world["engine"], message).id
    form: dict[str, str] = {"vid": vid, "p": "/pricing"}
    body = None
    if case == "no vid":
        del form["vid"]
    elif case == "forged vid":
        form["vid"] = make_visitor_token(SigningKeys("not ours"), delivery_id, int(time.time()))
    elif case == "a click token as vid":
        form["vid"] = make_click_token(SigningKeys(SECRET), delivery_id, "https://demo.example/")
    elif case == "huge path":
        form["p"] = "/" + "a" * 5000
    elif case == "non-ASCII path":
        form["p"] = "/préis"
    elif case == "relative path":
        form["p"] = "pricing"
    elif case == "non-ASCII body":
        body = f"vid={vid}&p=/pr\xe9is".encode("latin-1")
    elif case == "oversize body":
        body = b"vid=" + b"A" * 20_000
    with caplog.at_level(logging.INFO):
        if body is None:
            answer = client.post("/v", data=form)
        else:
            answer = client.post(
                "/v", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
    assert answer.status_code == status
    assert "error" in answer.json()
    assert [e.type for e in events(world["engine"])] == ["click"]
    assert "refused" in caplog.text
    assert vid not in caplog.text  # the visitor id is never logged


def test_a_visitor_id_too_old_counts_nothing(world, client, caplog):
    (message, _) = two_accounts(world)
    delivery_id = ledger_row(world["engine"], message).id
    old = int(time.time()) - 91 * 86400  # ABM_VISITOR_DAYS is 90 by default
    vid = make_visitor_token(SigningKeys(SECRET), delivery_id, old)
    with caplog.at_level(logging.INFO, logger="abm.tracking"):
        answer = client.post("/v", data={"vid": vid, "p": "/pricing"})
    assert answer.status_code == 204
    assert events(world["engine"]) == []
    assert "older than" in caplog.text


def test_page_weights_first_match_wins_and_rules_are_checked():
    rules = load_engagement_rules()
    assert rules.page_weight("/pricing") > rules.page_weight("/blog/x") > 0
    assert rules.page_weight("/pricing/enterprise") == rules.page_weight("/pricing")
    assert rules.weights.get("click_scanner", 0) == 0
    base = {"weights": {"click": 5}, "stages": {}}
    with pytest.raises(ValidationError, match="start with /"):
        EngagementRules.model_validate({**base, "pages": [{"path": "pricing", "weight": 3}]})
    with pytest.raises(ValidationError, match="scanner"):
        EngagementRules.model_validate({**base, "weights": {"click_scanner": 2}})
    custom = EngagementRules.model_validate(
        {
            **base,
            "weights": {"web_visit": 1},
            "pages": [{"path": "/docs/*", "weight": 0}, {"path": "/docs/pricing", "weight": 9}],
        }
    )
    assert custom.page_weight("/docs/pricing") == 0  # the first pattern that matches
    assert custom.page_weight("/about") == 1  # no pattern: the web_visit weight

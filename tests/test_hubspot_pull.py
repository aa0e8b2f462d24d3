"""HubSpot read-back tested at the wire with respx: companies (owner, domain), deals (stage,
companies) and meetings (attendees, companies) modified since a cursor, page by page; the
10,000-result search window; 429 with Retry-After; a token refused halfway; owners listed
once and an unknown owner asked for by id; records that cannot be used reported with why.
Every request is checked against tests/hubspot_contract.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from hubspot_contract import check_calls
from hubspot_fake import Clock, FakeHubSpot, iso, millis, owner

from connectors.crm.base import CrmAccount, CrmAuthError, CrmDeal, CrmMeeting, CrmOwner, PullPage
from connectors.crm.hubspot import HubSpotAuthError, HubSpotCrm

BASE = "https://api.hubapi.com"
TOKEN = "pat-eu1-pull-5ecret-t0ken-0000"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def body(call: respx.models.Call) -> dict[str, Any]:
    return json.loads(call.request.content)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """HubSpot at the wire; every request a test sent is checked against our contract."""
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock
        check_calls(mock.calls)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hubspot(router: respx.MockRouter, clock: Clock) -> FakeHubSpot:
    return FakeHubSpot(router, clock)


@pytest.fixture
def crm(clock: Clock) -> Iterator[HubSpotCrm]:
    with HubSpotCrm(TOKEN, sleep=clock.sleep, clock=clock.time) as client:
        yield client


def test_accounts_come_page_by_page_from_the_cursor_with_their_owners(
    crm: HubSpotCrm, hubspot: FakeHubSpot, router: respx.MockRouter
) -> None:
    hubspot.owners = [owner(str(60 + i), f"rep{i}@vendor.example", "Rep", str(i)) for i in range(5)]
    hubspot.owner_page = 2  # three pages of owners
    hubspot.archived_owners["71"] = owner("71", "gone@vendor.example", "Former", "Rep", True)
    hubspot.add("companies", "1", T0 - timedelta(days=1), domain="before.example")
    for i in range(450):
        owner_id = {0: "71", 1: "72"}.get(i, str(60 + i % 5))
        hubspot.add(
            "companies",
            str(100 + i),
            T0 + timedelta(minutes=i),
            domain=f"Company{i}.example",
            hubspot_owner_id=owner_id,
            **({"abm_domain": f"ours{i}.example"} if i == 2 else {}),
        )

    pages = list(crm.pull_changes("accounts", iso(T0)))

    # keyset paging: each page a new query from the last time seen, its instant's records
    # already yielded left out
    assert [len(p.records) for p in pages] == [200, 199, 51]
    assert [p.cursor for p in pages] == [
        iso(T0 + timedelta(minutes=199)),
        iso(T0 + timedelta(minutes=398)),
        iso(T0 + timedelta(minutes=449)),
    ]
    searches = [body(c) for c in hubspot.search.calls]
    since, until = searches[0]["filterGroups"][0]["filters"]
    assert since == {
        "propertyName": "hs_lastmodifieddate",
        "operator": "GTE",
        "value": str(millis(T0)),
    }
    assert until["propertyName"] == "hs_lastmodifieddate" and until["operator"] == "LTE"
    assert abs(int(until["value"]) / 1000 + 120 - time.time()) < 60  # two minutes ago
    assert {k: v for k, v in searches[0].items() if k != "filterGroups"} == {
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["domain", "abm_domain", "hubspot_owner_id", "hs_lastmodifieddate"],
        "limit": 200,
        "after": "0",
    }
    assert [s["after"] for s in searches] == ["0", "0", "0"]  # never HubSpot's offset
    records = [r for p in pages for r in p.records]
    assert all(isinstance(r, CrmAccount) for r in records)
    first, unknown, ours, fourth = records[:4]
    assert first == CrmAccount(
        crm_id="100",
        domain="Company0.example",
        owner=CrmOwner("71", "gone@vendor.example", "Former Rep", active=False),  # archived
        modified_at=T0,
    )
    assert unknown.owner == CrmOwner("72")  # neither active nor archived: the id alone
    assert ours.domain == "ours2.example"
    assert fourth.owner == CrmOwner("63", "rep3@vendor.example", "Rep 3")
    assert hubspot.owner_list.call_count == 3  # listed once, in pages, for the whole pull
    owner_calls = [(c.request.url.path, dict(c.request.url.params)) for c in hubspot.owner.calls]
    assert owner_calls == [
        ("/crm/v3/owners/71", {}),
        ("/crm/v3/owners/71", {"archived": "true"}),
        ("/crm/v3/owners/72", {}),
        ("/crm/v3/owners/72", {"archived": "true"}),
    ]
    assert [p.requests for p in pages] == [1 + 3 + 4, 1, 1]
    assert sum(p.requests for p in pages) == len(router.calls)
    assert all(p.skipped == [] and p.kind == "accounts" for p in pages)


def test_without_a_cursor_everything_is_read_and_nothing_changed_yields_no_page(
    crm: HubSpotCrm, hubspot: FakeHubSpot
) -> None:
    assert list(crm.pull_changes("deals", None)) == []
    (group,) = body(hubspot.search.calls[0])["filterGroups"]
    assert [f["operator"] for f in group["filters"]] == ["LTE"]  # only the index-lag cap
    assert hubspot.search.calls[0].request.url.path == "/crm/v3/objects/deals/search"


def test_a_long_pull_reads_every_record_once_without_paging_by_offset(
    crm: HubSpotCrm, hubspot: FakeHubSpot
) -> None:
    for i in range(10_300):
        hubspot.add("companies", str(i), T0 + timedelta(seconds=i), domain=f"c{i}.example")

    pages = list(crm.pull_changes("accounts", iso(T0)))

    assert {body(c)["after"] for c in hubspot.search.calls} == {"0"}
    ids = [r.crm_id for p in pages for r in p.records]
    assert sorted(ids, key=int) == [str(i) for i in range(10_300)]  # each exactly once
    cursors = [p.cursor for p in pages]
    assert cursors == sorted(cursors) and cursors[-1] == iso(T0 + timedelta(seconds=10_299))


def test_a_record_edited_while_a_pull_pages_does_not_push_another_out_of_reach(
    crm: HubSpotCrm, hubspot: FakeHubSpot
) -> None:
    """Found in review: with HubSpot's offset `after`, a page-1 record edited before page 2
    moves to the end and the first record of page 2 is never returned."""
    for i in range(450):
        hubspot.add("companies", str(100 + i), T0 + timedelta(minutes=i), domain=f"c{i}.example")
    search = hubspot._search

    def edit_after_first_page(request: httpx.Request, objects: str) -> httpx.Response:
        answer = search(request, objects)
        if hubspot.search.call_count == 1:
            hubspot.add("companies", "103", T0 + timedelta(minutes=1000), domain="c3.example")
        return answer

    hubspot.search.side_effect = edit_after_first_page
    ids = {r.crm_id for p in crm.pull_changes("accounts", iso(T0)) for r in p.records}
    assert ids == {str(100 + i) for i in range(450)}


def test_more_than_10000_records_of_one_instant_are_read_by_record_id(
    crm: HubSpotCrm, hubspot: FakeHubSpot
) -> None:
    """A bulk update stamps thousands of records with one time: they are read by id
    (`hs_object_id`), and the pull goes on past that instant."""
    for i in range(10_001):
        hubspot.add("companies", str(i + 1), T0, domain=f"c{i}.example")
    hubspot.add("companies", "20000", T0 + timedelta(seconds=1), domain="later.example")

    pages = list(crm.pull_changes("accounts", iso(T0)))

    ids = [r.crm_id for p in pages for r in p.records]
    assert sorted(ids, key=int) == [str(i + 1) for i in range(10_001)] + ["20000"]
    sorts = {body(c)["sorts"][0]["propertyName"] for c in hubspot.search.calls}
    assert sorts == {"hs_lastmodifieddate", "hs_object_id"}
    assert pages[-1].cursor == iso(T0 + timedelta(seconds=1))


def test_429_waits_as_long_as_hubspot_asks(
    crm: HubSpotCrm, hubspot: FakeHubSpot, clock: Clock
) -> None:
    hubspot.add("companies", "1", T0, domain="acme.com")
    limited = httpx.Response(
        429,
        headers={"Retry-After": "3"},
        json={
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY",
        },
    )
    hubspot.search.side_effect = [limited, hubspot._search]

    (page,) = crm.pull_changes("accounts", None)

    assert [r.domain for r in page.records] == ["acme.com"]
    assert clock.sleeps == [3.0]
    assert page.requests == 2


def test_searches_stay_under_four_a_second(crm: HubSpotCrm, hubspot: FakeHubSpot) -> None:
    for i in range(2_000):
        hubspot.add("companies", str(i), T0 + timedelta(seconds=i), domain=f"c{i}.example")

    pages = list(crm.pull_changes("accounts", None))

    assert len(pages) == len(hubspot.search_times) == 11  # 200, then 199 new a page
    times = hubspot.search_times
    for i in range(len(times)):
        in_one_second = [t for t in times[i:] if t < times[i] + 1.0]
        assert len(in_one_second) <= 4, "more than 4 searches within one second"
    assert times[-1] - times[0] >= 9 / 4.0 - 1e-9


def test_a_token_refused_on_page_2_keeps_page_1_and_yields_nothing_for_page_2(
    crm: HubSpotCrm, hubspot: FakeHubSpot, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(300):
        hubspot.add("companies", str(i), T0 + timedelta(seconds=i), domain=f"c{i}.example")
    refused = httpx.Response(
        401,
        json={
            "status": "error",
            "category": "INVALID_AUTHENTICATION",
            "message": f"The OAuth token used to make this call expired: {TOKEN}",
        },
    )
    hubspot.search.side_effect = [hubspot._search, refused]
    pages: list[PullPage] = []

    with pytest.raises(CrmAuthError) as caught:
        for page in crm.pull_changes("accounts", None):
            pages.append(page)

    assert isinstance(caught.value, HubSpotAuthError) and caught.value.status == 401
    assert "ABM_HUBSPOT_ACCESS_TOKEN" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text
    assert len(pages) == 1 and len(pages[0].records) == 200
    assert pages[0].cursor == iso(T0 + timedelta(seconds=199))


def test_a_403_names_the_read_scopes(crm: HubSpotCrm, router: respx.MockRouter) -> None:
    router.post("/crm/v3/objects/meetings/search").respond(
        403, json={"status": "error", "category": "MISSING_SCOPES"}
    )

    with pytest.raises(HubSpotAuthError, match=r"crm\.objects\.contacts\.read") as caught:
        next(crm.pull_changes("meetings", None))

    for scope in ("crm.objects.deals.read", "crm.objects.owners.read"):
        assert scope in str(caught.value)


def test_deals_carry_their_companies_domains_and_a_deal_without_one_is_skipped(
    crm: HubSpotCrm, hubspot: FakeHubSpot
) -> None:
    hubspot.link_page = 1  # one company per association page: paging per deal
    hubspot.add("companies", "501", None, domain="acme.com", abm_domain="acme.example")
    hubspot.add("companies", "502", None, domain="globex.com")
    hubspot.add("companies", "503", None, name="No domain Inc")
    hubspot.add(
        "deals",
        "9001",
        T0,
        dealname="Acme renewal",
        dealstage="closedwon",
        pipeline="default",
        amount="12500.50",
        hs_is_closed="true",
        hs_is_closed_won="true",
    )
    later = T0 + timedelta(minutes=1)
    hubspot.add(
        "deals",
        "9002",
        later,
        dealname="Orphan",
        dealstage="appointmentscheduled",
        hs_is_closed="false",
        hs_is_closed_won="false",
    )
    latest = T0 + timedelta(minutes=2)
    hubspot.add("deals", "9003", latest, dealname="Nameless co", dealstage="qualifiedtobuy")
    hubspot.link("deals", "companies", "9001", "501", "502")
    hubspot.link("deals", "companies", "9003", "503")

    (page,) = crm.pull_changes("deals", iso(T0))

    assert page.records == [
        CrmDeal(
            crm_id="9001",
            name="Acme renewal",
            stage="closedwon",
            pipeline="default",
            closed=True,
            won=True,
            amount=12500.5,
            domains=("acme.example", "globex.com"),
            modified_at=T0,
        )
    ]
    assert page.skipped == [
        "deal 9002 (Orphan): no associated company, so no account to apply it to",
        "deal 9003 (Nameless co): its companies (503) have no domain in HubSpot",
    ]
    assert page.cursor == iso(T0 + timedelta(minutes=2))
    search = body(hubspot.search.calls[0])
    assert search["properties"] == [
        "dealname",
        "dealstage",
        "pipeline",
        "amount",
        "hs_is_closed",
        "hs_is_closed_won",
        "hs_lastmodifieddate",
    ]
    links = [body(c) for c in hubspot.associations.calls]
    assert links == [
        {"inputs": [{"id": "9001"}, {"id": "9002"}, {"id": "9003"}]},
        {"inputs": [{"id": "9001", "after": "1"}]},
    ]
    (read,) = hubspot.read.calls
    assert read.request.url.path == "/crm/v3/objects/companies/batch/read"
    assert body(read) == {
        "inputs": [{"id": "501"}, {"id": "502"}, {"id": "503"}],
        "properties": ["domain", "abm_domain"],
        "propertiesWithHistory": [],
    }
    assert page.requests == 1 + 2 + 1


def test_meetings_carry_attendee_emails_and_accounts(crm: HubSpotCrm, hubspot: FakeHubSpot) -> None:
    hubspot.add("contacts", "301", None, email="ana@acme.example")
    hubspot.add("contacts", "302", None, email="bo@acme.example")
    hubspot.add("contacts", "303", None, firstname="No email")
    hubspot.add("companies", "501", None, domain="acme.example")
    start = T0 + timedelta(days=3)
    hubspot.add(
        "meetings",
        "7001",
        T0,
        hs_meeting_title="Discovery call",
        hs_meeting_start_time=iso(start),
        hs_meeting_outcome="SCHEDULED",
    )
    hubspot.add("meetings", "7002", T0 + timedelta(seconds=1), hs_meeting_title="Intro")
    hubspot.add("meetings", "7003", T0 + timedelta(seconds=2), hs_meeting_title="Internal sync")
    hubspot.add("meetings", "7004", T0 + timedelta(seconds=3), hs_meeting_title="Nobody reachable")
    hubspot.link("meetings", "contacts", "7001", "301", "302")
    hubspot.link("meetings", "companies", "7001", "501")
    hubspot.link("meetings", "contacts", "7002", "302")
    hubspot.link("meetings", "contacts", "7004", "303")

    (page,) = crm.pull_changes("meetings", iso(T0))

    assert page.records == [
        CrmMeeting(
            crm_id="7001",
            title="Discovery call",
            start_at=start,
            outcome="SCHEDULED",
            attendee_emails=("ana@acme.example", "bo@acme.example"),
            domains=("acme.example",),
            modified_at=T0,
        ),
        CrmMeeting(
            crm_id="7002",
            title="Intro",
            start_at=None,
            outcome=None,
            attendee_emails=("bo@acme.example",),
            domains=(),
            modified_at=T0 + timedelta(seconds=1),
        ),
    ]
    assert page.skipped == [
        "meeting 7003 (Internal sync): no associated contact or company",
        "meeting 7004 (Nobody reachable): its contacts have no email and its companies no "
        "domain in HubSpot",
    ]
    assert [c.request.url.path for c in hubspot.associations.calls] == [
        "/crm/v4/associations/meetings/contacts/batch/read",
        "/crm/v4/associations/meetings/companies/batch/read",
    ]
    reads = {c.request.url.path: body(c) for c in hubspot.read.calls}
    assert reads["/crm/v3/objects/contacts/batch/read"]["properties"] == ["email"]
    assert body(hubspot.search.calls[0])["properties"] == [
        "hs_meeting_title",
        "hs_meeting_start_time",
        "hs_meeting_outcome",
        "hs_lastmodifieddate",
    ]


def test_an_unreadable_cursor_or_kind_is_refused_before_any_request(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    with pytest.raises(ValueError, match="cursor"):
        next(crm.pull_changes("deals", "last tuesday"))
    with pytest.raises(ValueError, match="kind"):
        next(crm.pull_changes("tickets", None))  # type: ignore[arg-type]
    assert not router.calls

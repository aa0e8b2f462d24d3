"""The Salesforce backend at the wire with respx: sObject Collections upserts of 200 with
per-record failures, Bulk API 2.0 end to end, request figures for 100,000 accounts, 503 with
Retry-After, the daily API limit, SOQL pulls followed through nextRecordsUrl, an expired
session renewed once (and a second 401 stopping the pull after the pages already yielded),
and the describe check of the custom fields.

Expected shapes come from Salesforce's REST API Developer Guide ("Upsert Records Using sObject
Collections": PATCH /services/data/vXX.X/composite/sobjects/SobjectName/ExternalIdFieldName,
body {"allOrNone", "records": [{"attributes": {"type"}, ...}]}, answer a list of
{"id", "success", "errors": [{"statusCode", "message", "fields"}], "created"} in request
order; "Update Records Using sObject Collections": PATCH .../composite/sobjects; "Execute a
SOQL Query": {"totalSize", "done", "nextRecordsUrl", "records"}; "Status Codes and Error
Responses": a list of {"errorCode", "message"}) and the Bulk API 2.0 Developer Guide
("Create a Job": object, externalIdFieldName, contentType CSV, operation, lineEnding;
"Upload Job Data": PUT .../batches, text/csv; "Close or Abort a Job": state UploadComplete;
"Get Job Info": state, numberRecordsProcessed, numberRecordsFailed; "Get Job Successful
Record Results": sf__Id, sf__Created + the uploaded columns; "Get Job Failed Record Results":
sf__Id, sf__Error + the uploaded columns; "Valid CSV Record Rows": #N/A sets null)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from connectors.crm.base import CrmAccount, CrmAuthError, CrmDeal, CrmMeeting
from connectors.crm.salesforce import SalesforceCrm
from connectors.crm.salesforce_auth import SalesforceAuth
from connectors.http import ApiError
from core.errors import ConfigError

LOGIN = "https://acme.my.salesforce.com"
INSTANCE = "https://acme-instance.my.salesforce.com"
HOST = "acme-instance.my.salesforce.com"
DATA = "/services/data/v62.0"
UPSERT = f"{DATA}/composite/sobjects/Account/ABM_Domain__c"
UPDATE = f"{DATA}/composite/sobjects"
JOBS = f"{DATA}/jobs/ingest"
JOB = "7505g00000AbCdEAAV"
QUERY = f"{DATA}/query"
SECRET = "cc-secret-0000"
LIMIT_USED_UP = [
    {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}
]
FIELDS = (
    "ABM_Tier__c",
    "ABM_ICP_Score__c",
    "ABM_ICP_Summary__c",
    "ABM_Engagement_Score__c",
    "ABM_Stage__c",
    "ABM_Coverage__c",
    "ABM_Gaps__c",
)


def account(domain: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "domain": domain,
        "name": f"{domain.split('.')[0].title()} Inc",
        "tier": 1,
        "icp_score": 80,
        "icp_summary": "+25 industry=Manufacturing",
        "engagement_score": 41.666,
        "stage": "engaged",
        "coverage": "decision_maker, specifier",
        "gaps": "approver",
    }
    row.update(overrides)
    return row


class Org:
    """A fake org: a token endpoint that hands out token-1, token-2, ... and sleeps recorded."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router
        self.sleeps: list[float] = []
        self._tokens = itertools.count(1)
        self.token = router.post(f"{LOGIN}/services/oauth2/token").mock(side_effect=self._token)

    def _token(self, request: httpx.Request) -> httpx.Response:
        n = next(self._tokens)
        return httpx.Response(200, json={"access_token": f"tok-{n}", "instance_url": INSTANCE})

    def route(self, method: str, path: str) -> respx.Route:
        return self.router.route(method=method, host=HOST, path=path)

    def crm(self) -> SalesforceCrm:
        auth = SalesforceAuth(LOGIN, "3MVG9-id", client_secret=SECRET, sleep=self.sleeps.append)
        return SalesforceCrm(auth, sleep=self.sleeps.append)


@pytest.fixture
def org() -> Iterator[Org]:
    with respx.mock(assert_all_called=False) as router:
        yield Org(router)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def upsert_answer(request: httpx.Request) -> httpx.Response:
    records = body(request)["records"]
    return httpx.Response(
        200,
        json=[
            {"id": f"001{i:015d}", "success": True, "errors": [], "created": i % 2 == 0}
            for i, _ in enumerate(records)
        ],
    )


# --- sObject Collections -------------------------------------------------------------------


def test_a_push_upserts_200_a_request_with_the_documented_body(org: Org) -> None:
    route = org.route("PATCH", UPSERT).mock(side_effect=upsert_answer)
    accounts = [account(f"a{i}.example") for i in range(450)]
    with org.crm() as crm:
        result = crm.push_accounts(accounts)
    assert [len(body(c.request)["records"]) for c in route.calls] == [200, 200, 50]
    first = body(route.calls[0].request)
    assert first["allOrNone"] is False
    assert first["records"][0] == {
        "attributes": {"type": "Account"},
        "ABM_Domain__c": "a0.example",
        "Name": "A0 Inc",
        "ABM_Tier__c": 1,
        "ABM_ICP_Score__c": 80,
        "ABM_ICP_Summary__c": "+25 industry=Manufacturing",
        "ABM_Engagement_Score__c": 41.67,
        "ABM_Stage__c": "engaged",
        "ABM_Coverage__c": "decision_maker, specifier",
        "ABM_Gaps__c": "approver",
    }
    assert route.calls[0].request.headers["authorization"] == "Bearer tok-1"
    assert (result.created, result.updated, result.failed) == (225, 225, 0)
    assert result.crm_ids["a0.example"] == "001000000000000000"
    assert result.requests == 3 == math.ceil(450 / crm.batch_size)


def test_per_record_failures_are_reported_and_the_rest_written(org: Org) -> None:
    def partial(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[
                {"id": "001000000000001AAA", "success": True, "errors": [], "created": True},
                {
                    "id": None,
                    "success": False,
                    "created": False,
                    "errors": [
                        {
                            "statusCode": "STRING_TOO_LONG",
                            "message": "Gaps: data value too large",
                            "fields": ["ABM_Gaps__c"],
                        }
                    ],
                },
                {"id": "001000000000003AAA", "success": True, "errors": [], "created": False},
            ],
        )

    org.route("PATCH", UPSERT).mock(side_effect=partial)
    with org.crm() as crm:
        result = crm.push_accounts(
            [account("one.example"), account("two.example"), account("three.example")]
        )
    assert (result.created, result.updated) == (1, 1)
    assert result.failures == {
        "two.example": "STRING_TOO_LONG: Gaps: data value too large (fields: ABM_Gaps__c)"
    }
    assert set(result.crm_ids) == {"one.example", "three.example"}


def test_known_ids_are_updated_by_id_and_keep_their_name(org: Org) -> None:
    update = org.route("PATCH", UPDATE).mock(
        return_value=httpx.Response(
            200, json=[{"id": "001000000000009AAA", "success": True, "errors": []}]
        )
    )
    upsert = org.route("PATCH", UPSERT).mock(side_effect=upsert_answer)
    with org.crm() as crm:
        result = crm.push_accounts(
            [account("known.example"), account("new.example")],
            known_ids={"known.example": "001000000000009AAA"},
        )
    (record,) = body(update.calls.last.request)["records"]
    assert record["id"] == "001000000000009AAA"
    assert record["ABM_Domain__c"] == "known.example"
    assert "Name" not in record
    assert [r["ABM_Domain__c"] for r in body(upsert.calls.last.request)["records"]] == [
        "new.example"
    ]
    assert (result.updated, result.created, result.requests) == (1, 1, 2)


def test_rows_that_cannot_be_sent_are_reported_and_not_sent(org: Org) -> None:
    route = org.route("PATCH", UPSERT).mock(side_effect=upsert_answer)
    with org.crm() as crm:
        result = crm.push_accounts(
            [
                account("not a domain"),
                account("bad-stage.example", stage="lost"),
                account("ok.example", tier=None, icp_score=None, gaps=None),
            ]
        )
    assert set(result.failures) == {"not a domain", "bad-stage.example"}
    (record,) = body(route.calls.last.request)["records"]
    assert (record["ABM_Tier__c"], record["ABM_ICP_Score__c"], record["ABM_Gaps__c"]) == (
        None,
        None,
        None,
    )


def test_a_503_waits_as_retry_after_says(org: Org) -> None:
    org.route("PATCH", UPSERT).mock(
        side_effect=[
            httpx.Response(
                503,
                headers={"Retry-After": "7"},
                json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "busy"}],
            ),
            httpx.Response(
                200, json=[{"id": "001000000000001AAA", "success": True, "created": True}]
            ),
        ]
    )
    with org.crm() as crm:
        result = crm.push_accounts([account("acme.example")])
    assert org.sleeps == [7.0]
    assert result.created == 1


def test_the_daily_api_limit_stops_the_push_and_sends_nothing_more(org: Org) -> None:
    route = org.route("PATCH", UPSERT).mock(
        return_value=httpx.Response(
            403,
            json=LIMIT_USED_UP,
        )
    )
    with org.crm() as crm:
        result = crm.push_accounts([account(f"a{i}.example") for i in range(250)])
    assert route.call_count == 1
    assert result.failed == 250
    assert "API request limit" in result.failures["a0.example"]
    assert result.failures["a249.example"].startswith("not sent: Salesforce unavailable")
    assert result.stopped and "TotalRequests" in result.stopped


def test_a_missing_field_is_a_config_error_naming_it(org: Org) -> None:
    org.route("PATCH", UPSERT).mock(
        return_value=httpx.Response(
            400,
            json=[
                {
                    "errorCode": "INVALID_FIELD",
                    "message": "No such column 'ABM_Tier__c' on sobject of type Account",
                }
            ],
        )
    )
    with org.crm() as crm, pytest.raises(ConfigError, match="ABM_Tier__c") as info:
        crm.push_accounts([account("acme.example")])
    assert "ABM_SALESFORCE_FIELD_PREFIX" in str(info.value)


# --- Bulk API 2.0 ---------------------------------------------------------------------------


class FakeBulk:
    """Just enough of Bulk API 2.0's ingest jobs: create, upload, close, poll, results."""

    def __init__(self, org: Org, polls: int = 1, failing: dict[str, str] | None = None) -> None:
        self.uploads: list[str] = []
        self.failing = failing or {}
        self.states = ["InProgress"] * polls + ["JobComplete"]
        self.create = org.route("POST", JOBS).mock(
            return_value=httpx.Response(200, json={"id": JOB, "state": "Open"})
        )
        self.upload = org.route("PUT", f"{JOBS}/{JOB}/batches").mock(side_effect=self._upload)
        self.close = org.route("PATCH", f"{JOBS}/{JOB}").mock(
            return_value=httpx.Response(200, json={"id": JOB, "state": "UploadComplete"})
        )
        self.poll = org.route("GET", f"{JOBS}/{JOB}").mock(side_effect=self._poll)
        self.failed = org.route("GET", f"{JOBS}/{JOB}/failedResults/").mock(
            side_effect=self._failed
        )
        self.done = org.route("GET", f"{JOBS}/{JOB}/successfulResults/").mock(
            side_effect=self._done
        )

    def rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.uploads[-1])))

    def _upload(self, request: httpx.Request) -> httpx.Response:
        self.uploads.append(request.content.decode("utf-8"))
        return httpx.Response(201)

    def _poll(self, request: httpx.Request) -> httpx.Response:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        total = len(self.rows())
        return httpx.Response(
            200,
            json={
                "id": JOB,
                "state": state,
                "numberRecordsProcessed": total if state == "JobComplete" else 0,
                "numberRecordsFailed": len(self.failing) if state == "JobComplete" else 0,
            },
        )

    def _csv(self, header: list[str], rows: list[list[str]]) -> httpx.Response:
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return httpx.Response(200, text=out.getvalue(), headers={"Content-Type": "text/csv"})

    def _failed(self, request: httpx.Request) -> httpx.Response:
        rows = [r for r in self.rows() if r["ABM_Domain__c"] in self.failing]
        header = ["sf__Id", "sf__Error", *self.rows()[0].keys()]
        return self._csv(
            header, [["", self.failing[r["ABM_Domain__c"]], *r.values()] for r in rows]
        )

    def _done(self, request: httpx.Request) -> httpx.Response:
        rows = [r for r in self.rows() if r["ABM_Domain__c"] not in self.failing]
        header = ["sf__Id", "sf__Created", *self.rows()[0].keys()]
        return self._csv(
            header,
            [
                [f"001{i:015d}", "true" if i % 4 == 0 else "false", *r.values()]
                for i, r in enumerate(rows)
            ],
        )


def test_a_large_push_is_one_bulk_job_end_to_end(org: Org) -> None:
    bulk = FakeBulk(org, polls=2, failing={"a7.example": "DUPLICATE_VALUE:duplicate value found"})
    accounts = [account(f"a{i}.example") for i in range(2000)]
    accounts[3] = account(
        "a3.example", name='Acme "Global", Inc\nEMEA', tier=None, icp_summary=None
    )
    with org.crm() as crm:
        result = crm.push_accounts(accounts)
    assert body(bulk.create.calls.last.request) == {
        "object": "Account",
        "contentType": "CSV",
        "operation": "upsert",
        "lineEnding": "LF",
        "externalIdFieldName": "ABM_Domain__c",
    }
    upload = bulk.upload.calls.last.request
    assert upload.headers["content-type"] == "text/csv"
    rows = bulk.rows()
    assert list(rows[0]) == ["ABM_Domain__c", "Name", *FIELDS]
    assert len(rows) == 2000
    assert rows[3]["Name"] == 'Acme "Global", Inc\nEMEA'  # quotes, comma, newline survive
    assert rows[3]["ABM_Tier__c"] == "#N/A" == rows[3]["ABM_ICP_Summary__c"]  # cleared
    assert rows[0]["ABM_Engagement_Score__c"] == "41.67"
    assert "\r" not in bulk.uploads[-1]
    assert body(bulk.close.calls.last.request) == {"state": "UploadComplete"}
    assert bulk.poll.call_count == 3
    assert org.sleeps == [2.0, 4.0]  # injected: no real waiting
    assert result.failures == {"a7.example": "DUPLICATE_VALUE:duplicate value found"}
    assert result.created + result.updated == 1999
    assert result.created == 500
    assert len(result.crm_ids) == 1999
    # create, upload, close, 3 polls, failed results, successful results
    assert result.requests == 8


def test_100000_accounts_take_five_requests(org: Org) -> None:
    bulk = FakeBulk(org, polls=0)
    accounts = [account(f"a{i}.example") for i in range(100_000)]
    with org.crm() as crm:
        result = crm.push_accounts(accounts)
    calls = sum(r.call_count for r in (bulk.create, bulk.upload, bulk.close, bulk.poll, bulk.done))
    assert bulk.failed.call_count == 0  # no failures: their results are not fetched
    assert result.requests == calls == 5
    assert result.requests <= math.ceil(100_000 / crm.batch_size)
    assert (result.created + result.updated, result.failed) == (100_000, 0)


def test_below_the_bulk_threshold_the_figure_is_one_request_per_200(org: Org) -> None:
    route = org.route("PATCH", UPSERT).mock(side_effect=upsert_answer)
    with org.crm() as crm:
        result = crm.push_accounts([account(f"a{i}.example") for i in range(1999)])
    assert result.requests == route.call_count == math.ceil(1999 / 200) == 10


def test_a_job_still_running_after_the_bounded_wait_is_not_counted_as_written(org: Org) -> None:
    bulk = FakeBulk(org, polls=1000)
    with org.crm() as crm:
        crm.bulk_max_wait = 30.0
        result = crm.push_accounts([account(f"a{i}.example") for i in range(2000)])
    assert sum(org.sleeps) <= 30.0
    assert bulk.done.call_count == 0
    assert result.failed == 2000 and result.stopped and "still InProgress" in result.stopped


# --- describe -------------------------------------------------------------------------------


def describe(*skip: str, unique: bool = True) -> dict[str, Any]:
    fields = [
        {"name": "Name", "type": "string", "createable": True, "updateable": True},
        {
            "name": "ABM_Domain__c",
            "type": "string",
            "length": 255,
            "externalId": True,
            "unique": unique,
            "createable": True,
            "updateable": True,
        },
    ]
    kinds = {"ICP_Summary": "textarea", "Coverage": "textarea", "Gaps": "textarea"}
    for name in FIELDS:
        short = name.removeprefix("ABM_").removesuffix("__c")
        kind = kinds.get(short, "string" if short == "Stage" else "double")
        fields.append(
            {
                "name": name,
                "type": kind,
                "length": 1000 if kind == "textarea" else 20,
                "createable": True,
                "updateable": True,
            }
        )
    return {"name": "Account", "fields": [f for f in fields if f["name"] not in skip]}


def test_ensure_fields_lists_every_missing_field_with_its_type(org: Org) -> None:
    route = org.route("GET", f"{DATA}/sobjects/Account/describe")
    route.mock(return_value=httpx.Response(200, json=describe("ABM_Gaps__c", unique=False)))
    with org.crm() as crm, pytest.raises(ConfigError) as info:
        crm.ensure_fields()
    message = str(info.value)
    assert "ABM_Gaps__c: missing; create it as Long Text Area(1000)" in message
    assert "ABM_Domain__c: must be marked External ID and Unique" in message
    route.mock(return_value=httpx.Response(200, json=describe()))
    with org.crm() as crm:
        assert crm.ensure_fields() == []


# --- pulls ----------------------------------------------------------------------------------


def soql_of(request: httpx.Request) -> str:
    return parse_qs(urlsplit(str(request.url)).query)["q"][0]


def acct(n: int, stamp: str, **extra: Any) -> dict[str, Any]:
    row = {
        "attributes": {"type": "Account"},
        "Id": f"001{n:015d}",
        "ABM_Domain__c": f"a{n}.example",
        "Website": None,
        "OwnerId": "005000000000001AAA",
        "Owner": {"attributes": {"type": "User"}, "Email": "rep@acme.example", "Name": "Rep"},
        "SystemModstamp": stamp,
    }
    row.update(extra)
    return row


NEXT = f"{QUERY}/01gD0000002HU6KIAW-2000"


def test_a_pull_follows_next_records_url_page_by_page(org: Org) -> None:
    first = org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            200,
            json={
                "totalSize": 3,
                "done": False,
                "nextRecordsUrl": NEXT,
                "records": [
                    acct(1, "2024-05-01T10:00:00.000+0000"),
                    acct(
                        2,
                        "2024-05-01T11:30:15.000+0000",
                        ABM_Domain__c=None,
                        Website="https://www.Two.example/about",
                    ),
                ],
            },
        )
    )
    org.route("GET", NEXT).mock(
        return_value=httpx.Response(
            200,
            json={
                "totalSize": 3,
                "done": True,
                "records": [acct(3, "2024-05-02T08:00:00.000+0000", ABM_Domain__c=None)],
            },
        )
    )
    with org.crm() as crm:
        pages = list(crm.pull_changes("accounts", "2024-05-01T09:59:59.500+00:00"))
    assert soql_of(first.calls.last.request) == (
        "SELECT Id, ABM_Domain__c, Website, OwnerId, Owner.Email, Owner.Name, Owner.IsActive, "
        "SystemModstamp "
        "FROM Account WHERE SystemModstamp >= 2024-05-01T09:59:59Z ORDER BY SystemModstamp, Id"
    )
    assert [p.cursor for p in pages] == ["2024-05-01T11:30:15Z", "2024-05-02T08:00:00Z"]
    one, two = pages[0].records
    assert isinstance(one, CrmAccount) and one.owner and one.owner.email == "rep@acme.example"
    assert two.domain == "two.example"  # from the Website when the domain field is empty
    assert pages[1].records == []
    assert pages[1].skipped == ["Account 001000000000000003: no ABM_Domain__c and no Website"]
    assert [p.requests for p in pages] == [1, 1]


def test_an_expired_session_mid_pull_is_renewed_once(org: Org) -> None:
    org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            200,
            json={
                "done": False,
                "nextRecordsUrl": NEXT,
                "records": [acct(1, "2024-05-01T10:00:00.000+0000")],
            },
        )
    )
    expired = httpx.Response(
        401, json=[{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]
    )
    second = org.route("GET", NEXT).mock(
        side_effect=[
            expired,
            httpx.Response(
                200, json={"done": True, "records": [acct(2, "2024-05-01T12:00:00.000+0000")]}
            ),
        ]
    )
    with org.crm() as crm:
        pages = list(crm.pull_changes("accounts", None))
    assert org.token.call_count == 2
    assert [c.request.headers["authorization"] for c in second.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert [len(p.records) for p in pages] == [1, 1]
    assert pages[1].requests == 2


def test_a_second_401_stops_the_pull_after_the_pages_already_yielded(org: Org) -> None:
    org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            200,
            json={
                "done": False,
                "nextRecordsUrl": NEXT,
                "records": [acct(1, "2024-05-01T10:00:00.000+0000")],
            },
        )
    )
    org.route("GET", NEXT).mock(
        return_value=httpx.Response(
            401, json=[{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}]
        )
    )
    pages = []
    with org.crm() as crm, pytest.raises(CrmAuthError) as info:
        for page in crm.pull_changes("accounts", None):
            pages.append(page)
    assert [p.cursor for p in pages] == ["2024-05-01T10:00:00Z"]
    assert org.token.call_count == 2
    assert info.value.status == 401
    assert "tok-" not in str(info.value) and SECRET not in str(info.value)


def test_deals_map_to_opportunities_and_those_without_account_are_skipped(org: Org) -> None:
    route = org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            200,
            json={
                "done": True,
                "records": [
                    {
                        "Id": "006000000000001AAA",
                        "Name": "Acme renewal",
                        "StageName": "Closed Won",
                        "IsClosed": True,
                        "IsWon": True,
                        "Amount": 12000.0,
                        "AccountId": "001000000000001AAA",
                        "Account": {"ABM_Domain__c": None, "Website": "acme.example"},
                        "SystemModstamp": "2024-05-01T10:00:00.000+0000",
                    },
                    {
                        "Id": "006000000000002AAA",
                        "Name": "Orphan",
                        "StageName": "Prospecting",
                        "IsClosed": False,
                        "IsWon": False,
                        "Amount": None,
                        "AccountId": None,
                        "Account": None,
                        "SystemModstamp": "2024-05-01T11:00:00.000+0000",
                    },
                ],
            },
        )
    )
    with org.crm() as crm:
        (page,) = crm.pull_changes("deals", None)
    assert soql_of(route.calls.last.request) == (
        "SELECT Id, Name, StageName, IsClosed, IsWon, Amount, AccountId, "
        "Account.ABM_Domain__c, Account.Website, SystemModstamp FROM Opportunity "
        "ORDER BY SystemModstamp, Id"
    )
    (deal,) = page.records
    assert isinstance(deal, CrmDeal)
    assert (deal.stage, deal.closed, deal.won, deal.amount, deal.domains) == (
        "Closed Won",
        True,
        True,
        12000.0,
        ("acme.example",),
    )
    assert page.skipped == ["Opportunity 006000000000002AAA (Orphan): no Account"]
    assert page.cursor == "2024-05-01T11:00:00Z"


def test_meetings_read_the_contact_email_through_typeof(org: Org) -> None:
    route = org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            200,
            json={
                "done": True,
                "records": [
                    {
                        "Id": "00U000000000001AAA",
                        "Subject": "Demo",
                        "StartDateTime": "2024-05-03T15:00:00.000+0000",
                        "Who": {"attributes": {"type": "Contact"}, "Email": "cfo@acme.example"},
                        "AccountId": "001000000000001AAA",
                        "Account": {"ABM_Domain__c": "acme.example", "Website": None},
                        "SystemModstamp": "2024-05-01T10:00:00.000+0000",
                    },
                    {
                        "Id": "00U000000000002AAA",
                        "Subject": "Internal",
                        "StartDateTime": None,
                        "Who": None,
                        "AccountId": None,
                        "Account": None,
                        "SystemModstamp": "2024-05-01T10:05:00.000+0000",
                    },
                ],
            },
        )
    )
    with org.crm() as crm:
        (page,) = crm.pull_changes("meetings", "2024-05-01T00:00:00Z")
    soql = soql_of(route.calls.last.request)
    assert "TYPEOF Who WHEN Contact THEN Email WHEN Lead THEN Email END" in soql
    assert "FROM Event WHERE IsChild = false AND SystemModstamp >= 2024-05-01T00:00:00Z" in soql
    (meeting,) = page.records
    assert isinstance(meeting, CrmMeeting)
    assert meeting.attendee_emails == ("cfo@acme.example",)
    assert meeting.domains == ("acme.example",)
    assert meeting.start_at and meeting.start_at.hour == 15
    assert len(page.skipped) == 1 and "00U000000000002AAA" in page.skipped[0]


def test_a_missing_field_in_a_query_names_the_setting(org: Org) -> None:
    org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            400,
            json=[
                {
                    "errorCode": "INVALID_FIELD",
                    "message": "\nSELECT Id, ABM_Domain__c\n ^\nERROR at Row:1:Column:12\n"
                    "No such column 'ABM_Domain__c' on entity 'Account'.",
                }
            ],
        )
    )
    with org.crm() as crm, pytest.raises(ConfigError) as info:
        list(crm.pull_changes("accounts", None))
    assert "ABM_Domain__c" in str(info.value)
    assert "ABM_SALESFORCE_DOMAIN_FIELD" in str(info.value)


def test_the_daily_limit_on_a_pull_is_a_clear_stop(org: Org) -> None:
    org.route("GET", QUERY).mock(
        return_value=httpx.Response(
            403,
            json=LIMIT_USED_UP,
        )
    )
    with org.crm() as crm, pytest.raises(ApiError) as info:
        list(crm.pull_changes("deals", None))
    assert "request limit is used up" in str(info.value) and "try again later" in str(info.value)
    assert info.value.retryable


def test_a_cursor_that_is_not_a_date_is_refused_before_any_request(org: Org) -> None:
    with org.crm() as crm, pytest.raises(ConfigError, match="cursor"):
        list(crm.pull_changes("accounts", "2024-05-01 OR Name != null"))

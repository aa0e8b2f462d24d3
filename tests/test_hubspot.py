"""HubSpot write-back tested at the wire with respx: batches of at most 100, the request
bodies and the Bearer header, 429s retried as HubSpot asks, per-domain failures, a clear
message for a bad token that never echoes it, and idempotent property setup."""

from __future__ import annotations

import itertools
import json
import logging
import math
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from hubspot_contract import check_calls

from connectors.crm import base as crm_base
from connectors.crm import hubspot as hubspot_module
from connectors.crm.base import CrmAuthError, CrmBackend
from connectors.crm.hubspot import HubSpotAuthError, HubSpotCrm, WriteBackResult
from core.domains import normalise_domain
from core.errors import ConfigError

BASE = "https://api.hubapi.com"
TOKEN = "pat-eu1-5ecret-t0ken-0000"
SEARCH = "/crm/v3/objects/companies/search"
UPDATE = "/crm/v3/objects/companies/batch/update"
UPSERT = "/crm/v3/objects/companies/batch/upsert"
PROPERTIES = "/crm/v3/properties/companies"
GROUPS = "/crm/v3/properties/companies/groups"


def account(domain: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "domain": domain,
        "engagement_score": 12.345,
        "stage": "engaged",
        "tier": 2,
        "icp_score": 70,
    }
    row.update(overrides)
    return row


def body(call: respx.models.Call) -> dict[str, Any]:
    return json.loads(call.request.content)


class FakeHubSpot:
    """Just enough of HubSpot's companies API: search by IN, batch update, batch upsert."""

    def __init__(self, router: respx.MockRouter, prefix: str = "abm_") -> None:
        self.match = f"{prefix}domain"
        self.companies: dict[str, dict[str, str]] = {}
        self._ids = itertools.count(1001)
        self.search = router.post(SEARCH, name="search").mock(side_effect=self._search)
        self.update = router.post(UPDATE, name="update").mock(side_effect=self._update)
        self.upsert = router.post(UPSERT, name="upsert").mock(side_effect=self._upsert)

    def add(self, **properties: str) -> str:
        company_id = str(next(self._ids))
        self.companies[company_id] = dict(properties)
        return company_id

    def _search(self, request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)
        hits = []
        for company_id, props in sorted(self.companies.items()):
            for group in query["filterGroups"]:
                (flt,) = group["filters"]
                if props.get(flt["propertyName"]) in flt["values"]:
                    hits.append({"id": company_id, "properties": props})
                    break
        return httpx.Response(200, json={"total": len(hits), "results": hits})

    def _update(self, request: httpx.Request) -> httpx.Response:
        results = []
        inputs = json.loads(request.content)["inputs"]
        missing = [i["id"] for i in inputs if i["id"] not in self.companies]
        for item in inputs:
            if item["id"] in missing:
                continue
            self.companies[item["id"]].update(item["properties"])
            results.append(
                {
                    "id": item["id"],
                    "objectWriteTraceId": item["objectWriteTraceId"],
                    "properties": item["properties"],
                }
            )
        if missing:  # HubSpot's multi-status shape for records that do not exist
            error = {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some COMPANY objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }
            return httpx.Response(
                207,
                json={"status": "COMPLETE", "results": results, "numErrors": 1, "errors": [error]},
            )
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def _upsert(self, request: httpx.Request) -> httpx.Response:
        results = []
        for item in json.loads(request.content)["inputs"]:
            key = item["idProperty"]
            found = [i for i, p in self.companies.items() if p.get(key) == item["id"]]
            company_id = found[0] if found else self.add()
            self.companies[company_id].update(item["properties"])
            results.append(
                {
                    "id": company_id,
                    "new": not found,
                    "objectWriteTraceId": item["objectWriteTraceId"],
                    "properties": self.companies[company_id],
                }
            )
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """HubSpot at the wire; every request a test sent is checked against our contract."""
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock
        check_calls(mock.calls)


@pytest.fixture
def crm(sleeps: list[float]) -> Iterator[HubSpotCrm]:
    """The connector on a clock that moves only when it sleeps: no real waiting."""
    now = [1_700_000_000.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with HubSpotCrm(TOKEN, sleep=sleep, clock=lambda: now[0]) as client:
        yield client


def test_250_new_accounts_go_in_three_batches_of_at_most_100(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    domains = [f"company{i:03d}.example" for i in range(250)]

    result = crm.push_accounts([account(d) for d in domains])

    assert (result.created, result.updated, result.failed) == (250, 0, 0)
    assert hubspot.upsert.call_count == 3
    sizes = [len(body(call)["inputs"]) for call in hubspot.upsert.calls]
    assert sizes == [100, 100, 50]
    searched = [
        body(call)["filterGroups"][1]["filters"][0]["values"] for call in hubspot.search.calls
    ]
    assert [len(values) for values in searched] == [100, 100, 50]
    assert sorted(itertools.chain(*searched)) == domains
    assert not hubspot.update.called
    for call in router.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_hubspot_is_a_crm_backend_with_batches_of_100() -> None:
    assert issubclass(HubSpotCrm, CrmBackend) and issubclass(HubSpotAuthError, CrmAuthError)
    assert (HubSpotCrm.name, HubSpotCrm.batch_size) == ("hubspot", 100)
    assert WriteBackResult is crm_base.WriteBackResult


def test_250_known_companies_take_three_requests_and_no_search(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    domains = [f"company{i:03d}.example" for i in range(250)]
    known = {d: hubspot.add(domain=d) for d in domains}

    result = crm.push_accounts([account(d) for d in domains], known)

    assert (result.updated, result.created, result.failures) == (250, 0, {})
    assert result.requests == len(router.calls) == 3 == math.ceil(250 / 100)
    assert not hubspot.search.called and not hubspot.upsert.called
    assert [len(body(call)["inputs"]) for call in hubspot.update.calls] == [100, 100, 50]
    first = body(hubspot.update.calls[0])["inputs"][0]
    assert first == {
        "id": known["company000.example"],
        "objectWriteTraceId": "company000.example",
        "properties": {
            "abm_engagement_score": "12.35",
            "abm_stage": "engaged",
            "abm_tier": "2",
            "abm_icp_score": "70",
        },
    }
    assert result.crm_ids == known


def test_a_known_id_hubspot_no_longer_has_falls_back_to_search_and_upsert(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    kept = hubspot.add(domain="kept.example")
    survivor = hubspot.add(domain="merged.example")  # merged into a company with a new id
    known = {"kept.example": kept, "merged.example": "777", "deleted.example": "778"}

    result = crm.push_accounts(
        [account("kept.example"), account("merged.example"), account("deleted.example")], known
    )

    assert (result.updated, result.created, result.failures) == (2, 1, {})
    assert [i["id"] for i in body(hubspot.update.calls[0])["inputs"]] == [kept, "777", "778"]
    searched = body(hubspot.search.calls[0])["filterGroups"][1]["filters"][0]["values"]
    assert searched == ["merged.example", "deleted.example"]
    assert [i["id"] for i in body(hubspot.update.calls[1])["inputs"]] == [survivor]
    assert [i["id"] for i in body(hubspot.upsert.calls[0])["inputs"]] == ["deleted.example"]
    created = next(i for i, p in hubspot.companies.items() if p.get("domain") == "deleted.example")
    assert result.crm_ids == {
        "kept.example": kept,
        "merged.example": survivor,
        "deleted.example": created,
    }
    assert result.requests == len(router.calls) == 4


def test_a_404_for_a_batch_of_known_ids_sends_it_through_search(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    acme = hubspot.add(domain="acme.com")
    hubspot.update.side_effect = [
        httpx.Response(404, json={"status": "error", "category": "OBJECT_NOT_FOUND"}),
        hubspot._update,
    ]

    result = crm.push_accounts([account("acme.com")], {"acme.com": "999"})

    assert (result.updated, result.failures, result.crm_ids) == (1, {}, {"acme.com": acme})
    assert hubspot.search.call_count == 1 and hubspot.update.call_count == 2


def test_a_retryable_failure_of_a_known_id_batch_stops_the_push(
    crm: HubSpotCrm, router: respx.MockRouter, sleeps: list[float]
) -> None:
    hubspot = FakeHubSpot(router)
    hubspot.update.side_effect = None
    hubspot.update.return_value = httpx.Response(503)
    known = {f"c{i}.example": str(i) for i in range(150)}

    result = crm.push_accounts([account(d) for d in [*known, "new.example"]], known)

    assert hubspot.update.call_count == hubspot_module.RETRY.max_attempts
    assert not hubspot.search.called and not hubspot.upsert.called
    assert "HTTP 503" in result.failures["c0.example"]
    assert result.failures["c120.example"].startswith("not sent: HubSpot unavailable")
    assert result.failures["new.example"].startswith("not sent: HubSpot unavailable")
    assert result.stopped and result.crm_ids == {}


def test_summary_coverage_and_gaps_are_written_and_none_clears_them(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    acme = hubspot.add(domain="acme.com")

    crm.push_accounts(
        [
            account(
                "acme.com",
                icp_summary="+25 industry=Manufacturing; -10 employees<50",
                coverage=["decision_maker", "specifier"],
                gaps=None,
            )
        ],
        {"acme.com": acme},
    )

    sent = body(hubspot.update.calls[0])["inputs"][0]["properties"]
    assert sent["abm_icp_summary"] == "+25 industry=Manufacturing; -10 employees<50"
    assert sent["abm_coverage"] == "decision_maker, specifier"
    assert sent["abm_gaps"] == ""


def test_request_bodies_update_found_companies_and_upsert_the_rest(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    acme = hubspot.add(domain="acme.com", name="Acme (kept)")
    older_dup = hubspot.add(domain="dup.io")
    hubspot.add(domain="dup.io")
    ours = hubspot.add(domain="renamed.example", abm_domain="initech.com")

    result = crm.push_accounts(
        [
            account("https://www.Acme.com/about", name="Acme Corp"),
            account("dup.io", stage="mqa", tier=1, icp_score=95, engagement_score=80),
            account("initech.com", tier=None, icp_score=None),
            account("globex.com", name="Globex", engagement_score=0.004),
        ]
    )

    assert (result.updated, result.created, result.failures) == (3, 1, {})
    assert body(hubspot.search.calls[0]) == {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "abm_domain",
                        "operator": "IN",
                        "values": ["acme.com", "dup.io", "initech.com", "globex.com"],
                    }
                ]
            },
            {
                "filters": [
                    {
                        "propertyName": "domain",
                        "operator": "IN",
                        "values": ["acme.com", "dup.io", "initech.com", "globex.com"],
                    }
                ]
            },
        ],
        "properties": ["domain", "abm_domain"],
        "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
        "limit": 200,
        "after": "0",
    }
    assert body(hubspot.update.calls[0]) == {
        "inputs": [
            {
                "id": acme,
                "objectWriteTraceId": "acme.com",
                "properties": {
                    "abm_engagement_score": "12.35",
                    "abm_stage": "engaged",
                    "abm_tier": "2",
                    "abm_icp_score": "70",
                },
            },
            {
                "id": older_dup,
                "objectWriteTraceId": "dup.io",
                "properties": {
                    "abm_engagement_score": "80",
                    "abm_stage": "mqa",
                    "abm_tier": "1",
                    "abm_icp_score": "95",
                },
            },
            {
                "id": ours,
                "objectWriteTraceId": "initech.com",
                "properties": {
                    "abm_engagement_score": "12.35",
                    "abm_stage": "engaged",
                    "abm_tier": "",
                    "abm_icp_score": "",
                },
            },
        ]
    }
    assert body(hubspot.upsert.calls[0]) == {
        "inputs": [
            {
                "idProperty": "abm_domain",
                "id": "globex.com",
                "objectWriteTraceId": "globex.com",
                "properties": {
                    "abm_engagement_score": "0",
                    "abm_stage": "engaged",
                    "abm_tier": "2",
                    "abm_icp_score": "70",
                    "name": "Globex",
                    "domain": "globex.com",
                    "abm_domain": "globex.com",
                },
            },
        ]
    }
    assert hubspot.companies[acme]["name"] == "Acme (kept)"
    assert hubspot.companies[ours]["domain"] == "renamed.example"


def test_a_rerun_updates_what_the_first_run_created(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    rows = [account(f"c{i}.example") for i in range(5)]

    first = crm.push_accounts(rows)
    second = crm.push_accounts(rows)

    assert (first.created, first.updated) == (5, 0)
    assert (second.created, second.updated) == (0, 5)
    assert len(hubspot.companies) == 5


def test_a_rerun_before_search_has_indexed_still_does_not_duplicate(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    rows = [account("lag.example")]
    crm.push_accounts(rows)
    hubspot.search.mock(return_value=httpx.Response(200, json={"total": 0, "results": []}))

    again = crm.push_accounts(rows)

    assert (again.created, again.updated) == (0, 1)
    assert len(hubspot.companies) == 1


def test_429_is_retried_after_the_wait_hubspot_asks_for(
    crm: HubSpotCrm, router: respx.MockRouter, sleeps: list[float]
) -> None:
    hubspot = FakeHubSpot(router)
    limited = httpx.Response(
        429,
        headers={"Retry-After": "7", "X-HubSpot-RateLimit-Remaining": "0"},
        json={
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY",
        },
    )
    hubspot.search.side_effect = [limited, hubspot._search]

    result = crm.push_accounts([account("acme.com")])

    assert (result.created, result.failed) == (1, 0)
    assert hubspot.search.call_count == 2
    assert sleeps.count(7.0) == 1  # the retry waited what HubSpot asked
    spacing = 1 / hubspot_module.REQUESTS_PER_SECOND
    assert all(s == spacing for s in sleeps if s != 7.0)  # the rest: the rate limit


def test_a_207_fails_single_domains_and_a_rejected_batch_does_not_lose_the_others(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)
    domains = [f"company{i:03d}.example" for i in range(250)]

    def upsert(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        if inputs[0]["id"] == "company100.example":
            return httpx.Response(
                400,
                json={
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Property values were not valid",
                    "errors": [
                        {
                            "message": "abm_icp_score was not a valid number",
                            "code": "INVALID_INTEGER",
                        }
                    ],
                },
            )
        ok = [i for i in inputs if i["id"] != "company007.example"]
        return httpx.Response(
            207,
            json={
                "status": "COMPLETE",
                "results": [
                    {
                        "id": str(n),
                        "new": True,
                        "objectWriteTraceId": i["objectWriteTraceId"],
                        "properties": i["properties"],
                    }
                    for n, i in enumerate(ok)
                ],
                "numErrors": 1,
                "errors": [
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": "Property values were not valid",
                        "errors": [{"message": "domain is invalid", "code": "INVALID_DOMAIN"}],
                        "context": {"objectWriteTraceId": ["company007.example"]},
                    }
                ],
            },
        )

    hubspot.upsert.side_effect = upsert

    result = crm.push_accounts([account(d) for d in domains])

    assert hubspot.upsert.call_count == 3
    assert result.created == 99 + 50
    assert result.failed == 1 + 100
    assert result.failures["company007.example"] == (
        "VALIDATION_ERROR: Property values were not valid (domain is invalid)"
    )
    rejected = result.failures["company150.example"]
    assert "HTTP 400" in rejected and "abm_icp_score was not a valid number" in rejected
    assert {d for d in domains[100:200]} <= set(result.failures)
    assert not set(domains[200:]) & set(result.failures)


def test_a_207_on_update_is_matched_by_record_id(crm: HubSpotCrm, router: respx.MockRouter) -> None:
    hubspot = FakeHubSpot(router)
    good = hubspot.add(domain="good.example")
    bad = hubspot.add(domain="bad.example")
    hubspot.update.side_effect = None
    hubspot.update.return_value = httpx.Response(
        207,
        json={
            "status": "COMPLETE",
            "results": [{"id": good, "properties": {}}],
            "errors": [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Object was deleted",
                    "context": {"ids": [bad]},
                }
            ],
        },
    )

    result = crm.push_accounts([account("good.example"), account("bad.example")])

    assert (result.updated, result.created) == (1, 0)
    assert result.failures == {"bad.example": "OBJECT_NOT_FOUND: Object was deleted"}


def test_invalid_rows_are_reported_and_never_sent(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeHubSpot(router)

    result = crm.push_accounts(
        [
            account("ok.example"),
            account("", stage="aware"),
            account("stage.example", stage="won"),
            account("tier.example", tier=4),
            account("icp.example", icp_score=140),
            account("score.example", engagement_score=float("nan")),
            account("twice.example", stage="bogus"),
            account("twice.example", stage="customer"),
        ]
    )

    assert result.created == 2
    assert set(result.failures) == {
        "<row 1>",
        "stage.example",
        "tier.example",
        "icp.example",
        "score.example",
    }
    assert "won" in result.failures["stage.example"]
    (upsert,) = hubspot.upsert.calls
    assert [i["id"] for i in body(upsert)["inputs"]] == ["ok.example", "twice.example"]
    assert body(upsert)["inputs"][1]["properties"]["abm_stage"] == "customer"


def test_hubspot_unavailable_stops_sending_and_reports_the_rest(
    crm: HubSpotCrm, router: respx.MockRouter, sleeps: list[float]
) -> None:
    hubspot = FakeHubSpot(router)
    hubspot.search.side_effect = None
    hubspot.search.return_value = httpx.Response(503)
    domains = [f"company{i:03d}.example" for i in range(150)]

    result = crm.push_accounts([account(d) for d in domains])

    assert hubspot.search.call_count == hubspot_module.RETRY.max_attempts
    assert not hubspot.upsert.called
    assert result.failed == 150
    assert "HTTP 503" in result.failures["company000.example"]
    assert result.failures["company120.example"].startswith("not sent: HubSpot unavailable")


def test_401_says_which_setting_to_check_and_never_shows_the_token(
    crm: HubSpotCrm, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router.post(SEARCH).respond(
        401,
        json={
            "status": "error",
            "category": "INVALID_AUTHENTICATION",
            "message": f"Authentication credentials not found. Token {TOKEN} is invalid.",
        },
    )

    with pytest.raises(HubSpotAuthError) as caught:
        crm.push_accounts([account("acme.com")])

    message = str(caught.value)
    assert "ABM_HUBSPOT_ACCESS_TOKEN" in message and "401" in message
    assert caught.value.status == 401
    assert isinstance(caught.value, CrmAuthError) and isinstance(caught.value, ConfigError)
    assert TOKEN not in message and TOKEN not in caplog.text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert str(pickle.loads(pickle.dumps(caught.value))) == message


def test_403_names_the_scopes(crm: HubSpotCrm, router: respx.MockRouter) -> None:
    router.get(PROPERTIES).respond(403, json={"status": "error", "category": "MISSING_SCOPES"})

    with pytest.raises(HubSpotAuthError, match=r"crm\.schemas\.companies\.write") as caught:
        crm.ensure_fields()

    assert caught.value.status == 403 and TOKEN not in str(caught.value)


def test_a_missing_or_blank_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ABM_HUBSPOT_ACCESS_TOKEN"):
        HubSpotCrm("  ")
    with pytest.raises(ConfigError, match="prefix"):
        HubSpotCrm(TOKEN, property_prefix="ABM-")


class FakeProperties:
    """HubSpot's company properties and property groups, kept between calls."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.properties = [{"name": "domain", "hasUniqueValue": False}]
        self.groups = [{"name": "companyinformation"}]
        router.get(PROPERTIES).mock(side_effect=lambda _: self._list(self.properties))
        router.get(GROUPS).mock(side_effect=lambda _: self._list(self.groups))
        self.create = router.post(PROPERTIES).mock(side_effect=self._add(self.properties))
        self.create_group = router.post(GROUPS).mock(side_effect=self._add(self.groups))

    @staticmethod
    def _list(items: list[dict]) -> httpx.Response:
        return httpx.Response(200, json={"results": items})

    @staticmethod
    def _add(items: list[dict]) -> Any:
        def add(request: httpx.Request) -> httpx.Response:
            item = json.loads(request.content)
            items.append(item)
            return httpx.Response(201, json=item)

        return add


def test_ensure_fields_creates_them_once(crm: HubSpotCrm, router: respx.MockRouter) -> None:
    hubspot = FakeProperties(router)

    created = crm.ensure_fields()
    again = crm.ensure_fields()

    names = [
        "abm_engagement_score",
        "abm_stage",
        "abm_tier",
        "abm_icp_score",
        "abm_icp_summary",
        "abm_coverage",
        "abm_gaps",
        "abm_domain",
    ]
    assert created == names
    assert again == []
    assert hubspot.create.call_count == 8 and hubspot.create_group.call_count == 1
    assert body(hubspot.create_group.calls[0]) == {
        "name": "abm_orchestrator",
        "label": "ABM orchestrator",
        "displayOrder": -1,
    }
    sent = {body(call)["name"]: body(call) for call in hubspot.create.calls}
    assert all(p["groupName"] == "abm_orchestrator" for p in sent.values())
    assert sent["abm_domain"]["hasUniqueValue"] is True
    assert (sent["abm_engagement_score"]["type"], sent["abm_engagement_score"]["fieldType"]) == (
        "number",
        "number",
    )
    stage = sent["abm_stage"]
    assert (stage["type"], stage["fieldType"]) == ("enumeration", "select")
    assert [o["value"] for o in stage["options"]] == list(hubspot_module.STAGES)
    texts = {name: (sent[name]["type"], sent[name]["fieldType"]) for name in names[4:7]}
    assert texts == {
        "abm_icp_summary": ("string", "textarea"),
        "abm_coverage": ("string", "text"),
        "abm_gaps": ("string", "text"),
    }


def test_ensure_fields_tolerates_a_concurrent_create_and_a_custom_prefix(
    router: respx.MockRouter, sleeps: list[float]
) -> None:
    hubspot = FakeProperties(router)
    hubspot.groups.append({"name": "acme_abm_orchestrator"})
    hubspot.properties.append({"name": "acme_abm_domain", "hasUniqueValue": True})
    hubspot.create.side_effect = [httpx.Response(409, json={"category": "CONFLICT"})] + [
        httpx.Response(201, json={})
    ] * 6

    with HubSpotCrm(TOKEN, property_prefix="acme_abm_", sleep=sleeps.append) as crm:
        created = crm.ensure_fields()

    assert created == [
        "acme_abm_stage",
        "acme_abm_tier",
        "acme_abm_icp_score",
        "acme_abm_icp_summary",
        "acme_abm_coverage",
        "acme_abm_gaps",
    ]
    assert not hubspot.create_group.called


def test_a_match_property_without_unique_values_is_refused(
    crm: HubSpotCrm, router: respx.MockRouter
) -> None:
    hubspot = FakeProperties(router)
    hubspot.properties.append({"name": "abm_domain", "hasUniqueValue": False})

    with pytest.raises(ConfigError, match="unique"):
        crm.ensure_fields()
    assert not hubspot.create.called


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.Acme.com/about?x=1", "acme.com"),
        (" WWW.example.co.uk. ", "example.co.uk"),
        ("www.com", "www.com"),
        ("shop.acme.com:8443", "shop.acme.com"),
    ],
)
def test_normalise_domain(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected

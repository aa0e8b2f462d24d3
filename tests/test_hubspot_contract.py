"""Our HubSpot contract (tests/hubspot_contract.py) checked against HubSpot's published specs,
and the contract check itself shown to catch broken request bodies.

The specs are HubSpot/HubSpot-public-api-spec-collection's `PublicApiSpecs` folder, which
is not ours to ship: point ABM_TEST_HUBSPOT_SPECS at a copy (or keep one at
../shared/specs/hubspot) and these tests, and every wire test, validate against it."""

from __future__ import annotations

import copy

import httpx
import hubspot_contract as contract
import pytest

SPECS = contract.spec_root()
needs_specs = pytest.mark.skipif(
    SPECS is None or not SPECS.is_dir(),
    reason=f"HubSpot's published specs not found: set {contract.SPECS_ENV} to the PublicApiSpecs "
    f"folder of HubSpot/HubSpot-public-api-spec-collection (or put it at "
    f"{contract.DEFAULT_SPECS})",
)


@needs_specs
@pytest.mark.parametrize("endpoint", contract.ENDPOINTS, ids=lambda e: e.name)
def test_the_contract_matches_hubspots_published_specs(endpoint: contract.Endpoint) -> None:
    assert SPECS is not None
    assert contract.spec_problems(endpoint, SPECS) == []


@needs_specs
def test_the_published_spec_refuses_a_broken_search_body() -> None:
    assert SPECS is not None
    search = contract.endpoint_for("POST", "/crm/v3/objects/deals/search")
    broken = copy.deepcopy(dict(search.example or {}))
    broken["limit"] = "200"
    broken["filterGroups"][0]["filters"][0]["operator"] = "SINCE"

    problems = contract.spec_body_problems(search, broken, SPECS)

    assert any("limit" in p and "integer" in p for p in problems), problems
    assert any("SINCE" in p for p in problems), problems


def test_the_contract_catches_a_missing_field_a_wrong_type_and_an_unknown_field() -> None:
    update = contract.endpoint_for("POST", "/crm/v3/objects/companies/batch/update")
    body = {
        "inputs": [
            {"id": 512, "properties": {"abm_tier": 1}},
            {"id": "513", "objectWriteTraceId": "b.example", "properties": {}, "idProprety": "x"},
        ]
    }

    problems = contract.body_problems(update, body)

    assert problems == [
        "batch update companies: inputs[].id = 512 is not string",
        "batch update companies: inputs[].properties = {'abm_tier': 1} is not object",
        "batch update companies: inputs[].idProprety is not a field of the contract",
        "batch update companies: required inputs[].objectWriteTraceId missing",
    ]


def test_every_contract_example_keeps_the_contract() -> None:
    for endpoint in contract.ENDPOINTS:
        if endpoint.example is not None:
            assert contract.body_problems(endpoint, endpoint.example) == [], endpoint.name


def test_a_request_to_an_endpoint_outside_the_contract_fails_the_wire_check() -> None:
    request = httpx.Request("POST", "https://api.hubapi.com/crm/v3/objects/companies/merge")
    with pytest.raises(AssertionError, match=r"not in tests/hubspot_contract\.py"):
        contract.check_request(request)
    owners = httpx.Request("GET", "https://api.hubapi.com/crm/v3/owners?email=a@b.example")
    with pytest.raises(AssertionError, match="email"):
        contract.check_request(owners)

"""Our own contract for the HubSpot endpoints the connector calls: method, path, the request
fields we send and their types, the query parameters, and the response fields we read.

Hand-written from HubSpot's API reference, not copied from HubSpot's spec collection (whose
README says the files are proprietary and not for external use). Two uses:

- `check_calls(router.calls)`: every wire test checks each request it captured against this
  contract (an endpoint we do not know, a field missing, of the wrong type or not declared
  fails the test), and, when HubSpot's published specs are on disk, against them too.
- `spec_problems(endpoint, root)`: `tests/test_hubspot_contract.py` checks each entry against
  the published specs (`ABM_TEST_HUBSPOT_SPECS`, the `PublicApiSpecs` folder of
  HubSpot/HubSpot-public-api-spec-collection) with jsonschema.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema

HOST = "api.hubapi.com"
SPECS_ENV = "ABM_TEST_HUBSPOT_SPECS"
DEFAULT_SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs" / "hubspot"


class StrMap:
    """A JSON object whose values are all strings (HubSpot's `properties`)."""


JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    bool: "boolean",
    list: "array",
    dict: "object",
    StrMap: "object",
}

COMPANIES = "CRM/Companies/Rollouts/424/v3/companies.json"
DEALS = "CRM/Deals/Rollouts/424/v3/deals.json"
MEETINGS = "CRM/Meetings/Rollouts/424/v3/meetings.json"
CONTACTS = "CRM/Contacts/Rollouts/424/v3/contacts.json"
OWNERS = "CRM/Crm Owners/Rollouts/146888/v3/crmOwners.json"
ASSOCIATIONS = "CRM/Associations/Rollouts/130902/v4/associations.json"
PROPERTIES = "CRM/Properties/Rollouts/145899/v3/properties.json"


@dataclass(frozen=True)
class Endpoint:
    """One endpoint as we call it. Field names are dotted paths, `[]` for array items:
    `required` must be in every body we send, `optional` may be; nothing else may."""

    name: str
    method: str
    path: str
    spec: str
    spec_path: str
    required: Mapping[str, Any] = field(default_factory=dict)
    optional: Mapping[str, Any] = field(default_factory=dict)
    query: frozenset[str] = frozenset()
    reads: tuple[str, ...] = ()
    example: Mapping[str, Any] | None = None

    def matches(self, method: str, path: str) -> bool:
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", self.path))
        return method == self.method and re.fullmatch(pattern, path) is not None


SEARCH_REQUIRED = {
    "filterGroups": list,
    "filterGroups[].filters": list,
    "filterGroups[].filters[].propertyName": str,
    "filterGroups[].filters[].operator": str,
    "sorts": list,
    "sorts[].propertyName": str,
    "sorts[].direction": str,
    "properties": list,
    "properties[]": str,
    "limit": int,
    "after": str,
}
SEARCH_OPTIONAL = {
    "filterGroups[].filters[].value": str,
    "filterGroups[].filters[].values": list,
    "filterGroups[].filters[].values[]": str,
}
SEARCH_READS = (
    "results[].id",
    "results[].properties",
    "results[].updatedAt",
    "paging.next.after",
)
SEARCH_EXAMPLE = {
    "filterGroups": [
        {
            "filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1714521600000"}
            ]
        }
    ],
    "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
    "properties": ["hs_lastmodifieddate"],
    "limit": 200,
    "after": "0",
}
BATCH_READ_REQUIRED = {
    "inputs": list,
    "inputs[].id": str,
    "properties": list,
    "properties[]": str,
    "propertiesWithHistory": list,
}
BATCH_READ_EXAMPLE = {
    "inputs": [{"id": "512"}],
    "properties": ["email"],
    "propertiesWithHistory": [],
}
BATCH_WRITE_READS = (
    "results[].id",
    "results[].objectWriteTraceId",
    "results[].properties",
    "errors[].category",
    "errors[].message",
    "errors[].context",
    "errors[].errors[].message",
)
OWNER_READS = ("id", "email", "firstName", "lastName")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "search companies",
        "POST",
        "/crm/v3/objects/companies/search",
        COMPANIES,
        "/crm/v3/objects/companies/search",
        SEARCH_REQUIRED,
        SEARCH_OPTIONAL,
        reads=SEARCH_READS,
        example=SEARCH_EXAMPLE,
    ),
    # HubSpot's spec names deals by their object type id, 0-3; the API takes either.
    Endpoint(
        "search deals",
        "POST",
        "/crm/v3/objects/deals/search",
        DEALS,
        "/crm/v3/objects/0-3/search",
        SEARCH_REQUIRED,
        SEARCH_OPTIONAL,
        reads=SEARCH_READS,
        example=SEARCH_EXAMPLE,
    ),
    Endpoint(
        "search meetings",
        "POST",
        "/crm/v3/objects/meetings/search",
        MEETINGS,
        "/crm/v3/objects/meetings/search",
        SEARCH_REQUIRED,
        SEARCH_OPTIONAL,
        reads=SEARCH_READS,
        example=SEARCH_EXAMPLE,
    ),
    Endpoint(
        "batch update companies",
        "POST",
        "/crm/v3/objects/companies/batch/update",
        COMPANIES,
        "/crm/v3/objects/companies/batch/update",
        {
            "inputs": list,
            "inputs[].id": str,
            "inputs[].objectWriteTraceId": str,
            "inputs[].properties": StrMap,
        },
        reads=BATCH_WRITE_READS,
        example={
            "inputs": [
                {"id": "512", "objectWriteTraceId": "acme.com", "properties": {"abm_tier": "1"}}
            ]
        },
    ),
    Endpoint(
        "batch upsert companies",
        "POST",
        "/crm/v3/objects/companies/batch/upsert",
        COMPANIES,
        "/crm/v3/objects/companies/batch/upsert",
        {
            "inputs": list,
            "inputs[].id": str,
            "inputs[].idProperty": str,
            "inputs[].objectWriteTraceId": str,
            "inputs[].properties": StrMap,
        },
        reads=(*BATCH_WRITE_READS, "results[].new"),
        example={
            "inputs": [
                {
                    "id": "acme.com",
                    "idProperty": "abm_domain",
                    "objectWriteTraceId": "acme.com",
                    "properties": {"abm_domain": "acme.com", "domain": "acme.com"},
                }
            ]
        },
    ),
    Endpoint(
        "batch read companies",
        "POST",
        "/crm/v3/objects/companies/batch/read",
        COMPANIES,
        "/crm/v3/objects/companies/batch/read",
        BATCH_READ_REQUIRED,
        reads=("results[].id", "results[].properties"),
        example={**BATCH_READ_EXAMPLE, "properties": ["domain", "abm_domain"]},
    ),
    Endpoint(
        "batch read contacts",
        "POST",
        "/crm/v3/objects/contacts/batch/read",
        CONTACTS,
        "/crm/v3/objects/contacts/batch/read",
        BATCH_READ_REQUIRED,
        reads=("results[].id", "results[].properties"),
        example=BATCH_READ_EXAMPLE,
    ),
    Endpoint(
        "batch read associations",
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
        ASSOCIATIONS,
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
        {"inputs": list, "inputs[].id": str},
        {"inputs[].after": str},
        reads=("results[].from.id", "results[].to[].toObjectId", "results[].paging.next.after"),
        example={"inputs": [{"id": "901"}, {"id": "902", "after": "MTAtNi0xODQ3"}]},
    ),
    Endpoint(
        "list owners",
        "GET",
        "/crm/v3/owners",
        OWNERS,
        "/crm/v3/owners",
        query=frozenset({"limit", "after"}),
        reads=(*(f"results[].{name}" for name in OWNER_READS), "paging.next.after"),
    ),
    Endpoint(
        "read an owner",
        "GET",
        "/crm/v3/owners/{ownerId}",
        OWNERS,
        "/crm/v3/owners/{ownerId}",
        query=frozenset({"archived"}),
        reads=OWNER_READS,
    ),
    Endpoint(
        "list company properties",
        "GET",
        "/crm/v3/properties/companies",
        PROPERTIES,
        "/crm/v3/properties/{objectType}",
        reads=("results[].name", "results[].hasUniqueValue"),
    ),
    Endpoint(
        "create a company property",
        "POST",
        "/crm/v3/properties/companies",
        PROPERTIES,
        "/crm/v3/properties/{objectType}",
        {"name": str, "label": str, "type": str, "fieldType": str, "groupName": str},
        {
            "description": str,
            "hasUniqueValue": bool,
            "options": list,
            "options[].label": str,
            "options[].value": str,
            "options[].displayOrder": int,
            "options[].hidden": bool,
        },
        example={
            "name": "abm_stage",
            "label": "ABM stage",
            "type": "enumeration",
            "fieldType": "select",
            "groupName": "abm_orchestrator",
            "options": [{"label": "MQA", "value": "mqa", "displayOrder": 3, "hidden": False}],
        },
    ),
    Endpoint(
        "list company property groups",
        "GET",
        "/crm/v3/properties/companies/groups",
        PROPERTIES,
        "/crm/v3/properties/{objectType}/groups",
        reads=("results[].name",),
    ),
    Endpoint(
        "create a company property group",
        "POST",
        "/crm/v3/properties/companies/groups",
        PROPERTIES,
        "/crm/v3/properties/{objectType}/groups",
        {"name": str, "label": str, "displayOrder": int},
        example={"name": "abm_orchestrator", "label": "ABM orchestrator", "displayOrder": -1},
    ),
)


# --- the wire check ---------------------------------------------------------------------


def endpoint_for(method: str, path: str) -> Endpoint:
    """The contract entry a request is for; fails for an endpoint we do not know."""
    for endpoint in ENDPOINTS:
        if endpoint.matches(method, path):
            return endpoint
    raise AssertionError(f"{method} {path} is not in tests/hubspot_contract.py")


def _walk(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every field of a JSON body, `[]` for array items."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path, item
            yield from _walk(item, path)
    elif isinstance(value, list):
        for item in value:
            yield f"{prefix}[]", item
            yield from _walk(item, f"{prefix}[]")


def _is(value: Any, kind: Any) -> bool:
    if kind is StrMap:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def body_problems(endpoint: Endpoint, body: Any) -> list[str]:
    """Why a request body breaks the contract ([] when it keeps it)."""
    declared = {**endpoint.required, **endpoint.optional}
    if not declared:
        return [] if body is None else [f"{endpoint.name}: takes no body, got {body!r}"]
    if not isinstance(body, dict):
        return [f"{endpoint.name}: the body is not a JSON object"]
    problems = []
    fields = list(_walk(body))
    for path, value in fields:
        if any(path.startswith(f"{p}.") for p, kind in declared.items() if kind is StrMap):
            continue
        if path.endswith("[]") and path not in declared and isinstance(value, dict):
            continue  # an object in an array: its fields are checked one by one
        if path not in declared:
            problems.append(f"{endpoint.name}: {path} is not a field of the contract")
        elif not _is(value, declared[path]):
            kind = JSON_TYPES[declared[path]]
            problems.append(f"{endpoint.name}: {path} = {value!r} is not {kind}")
    for path in endpoint.required:
        if path.endswith("[]"):
            continue  # the type of array items, checked above
        parent, _, key = path.rpartition(".")
        for holder in _values_at(body, parent):
            if not isinstance(holder, dict) or key not in holder:
                problems.append(f"{endpoint.name}: required {path} missing")
                break
    return problems


def _values_at(body: Any, path: str) -> list[Any]:
    """Every value a dotted path reaches in a body (each item for `[]`)."""
    values = [body]
    for token in re.findall(r"[^.\[\]]+|\[\]", path):
        if token == "[]":
            values = [item for v in values if isinstance(v, list) for item in v]
        else:
            values = [v[token] for v in values if isinstance(v, dict) and token in v]
    return values


def check_request(request: httpx.Request) -> Endpoint:
    """Fail unless the request keeps the contract (and the published spec, when on disk)."""
    method, path = request.method, request.url.path
    endpoint = endpoint_for(method, path)
    unknown = set(request.url.params) - endpoint.query
    assert not unknown, f"{endpoint.name}: query parameters {sorted(unknown)} not in contract"
    body = json.loads(request.content) if request.content else None
    problems = body_problems(endpoint, body)
    root = spec_root()
    if root is not None and body is not None:
        problems += spec_body_problems(endpoint, body, root)
    assert not problems, "\n".join(problems)
    return endpoint


def check_calls(calls: Iterable[Any]) -> int:
    """Check every captured request to HubSpot; the number checked."""
    checked = 0
    for call in calls:
        if call.request.url.host == HOST:
            check_request(call.request)
            checked += 1
    return checked


# --- the published specs ----------------------------------------------------------------

# Where HubSpot's spec and its API differ, with the source that says so. The search
# request's `sorts` items are strings in the spec, but the API and HubSpot's search guide
# take objects {"propertyName", "direction"}; string sorts are ignored (HubSpot's own
# clients: hubspot-api-ruby#257, hubspot-api-nodejs#14 and #559). The check below validates
# sorts as the guide documents them, and fails if the spec no longer has the erratum.
SORT_SCHEMA = {
    "type": "object",
    "required": ["propertyName", "direction"],
    "properties": {
        "propertyName": {"type": "string"},
        "direction": {"type": "string", "enum": ["ASCENDING", "DESCENDING"]},
    },
    "additionalProperties": False,
}
SEARCH_SCHEMA = "PublicObjectSearchRequest"


def spec_root() -> Path | None:
    """The PublicApiSpecs folder named by ABM_TEST_HUBSPOT_SPECS, else ../shared/specs/hubspot
    when it exists; None when neither is there."""
    named = os.environ.get(SPECS_ENV, "").strip()
    if named:
        return Path(named)
    return DEFAULT_SPECS if DEFAULT_SPECS.is_dir() else None


@functools.cache
def _load(root: Path, spec: str) -> dict[str, Any]:
    return json.loads((root / spec).read_text(encoding="utf-8"))


def _operation(endpoint: Endpoint, root: Path) -> dict[str, Any]:
    document = _load(root, endpoint.spec)
    operation = (document.get("paths", {}).get(endpoint.spec_path) or {}).get(
        endpoint.method.lower()
    )
    if operation is None:
        raise AssertionError(f"{endpoint.name}: {endpoint.method} {endpoint.spec_path} not in spec")
    return operation


def _components(endpoint: Endpoint, root: Path) -> dict[str, Any]:
    """The spec's components, with the documented errata applied."""
    components = copy.deepcopy(_load(root, endpoint.spec).get("components", {}))
    search = components.get("schemas", {}).get(SEARCH_SCHEMA)
    if search is not None:
        sorts = search.get("properties", {}).get("sorts", {})
        if sorts.get("items", {}).get("type") != "string":
            raise AssertionError(
                f"{endpoint.spec}: {SEARCH_SCHEMA}.sorts items are no longer strings; "
                "remove the sorts erratum from tests/hubspot_contract.py"
            )
        sorts["items"] = SORT_SCHEMA
    return components


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema:
        seen += 1
        assert seen < 20, f"$ref loop at {schema['$ref']}"
        parts = schema["$ref"].removeprefix("#/").split("/")
        node: Any = {"components": components}
        for part in parts:
            node = node[part]
        schema = node
    return schema


def _request_schema(endpoint: Endpoint, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    operation = _operation(endpoint, root)
    components = _components(endpoint, root)
    request = _resolve(operation.get("requestBody") or {}, components)
    schema = (request.get("content") or {}).get("application/json", {}).get("schema")
    if schema is None:
        raise AssertionError(f"{endpoint.name}: the spec has no JSON request body")
    return schema, components


def spec_body_problems(endpoint: Endpoint, body: Any, root: Path) -> list[str]:
    """Why a request body does not validate against the spec's requestBody schema."""
    schema, components = _request_schema(endpoint, root)
    validator = jsonschema.Draft7Validator({**schema, "components": components})
    return [
        f"{endpoint.name} (spec): {'.'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in validator.iter_errors(body)
    ]


def _field_schemas(
    schema: dict[str, Any], components: dict[str, Any], path: str
) -> list[dict[str, Any]]:
    """The schemas a dotted path reaches (several under oneOf/anyOf/allOf); [] if none."""
    found = [_resolve(schema, components)]
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        following = []
        for node in found:
            for option in [node, *node.get("allOf", []), *node.get("oneOf", [])]:
                option = _resolve(option, components)
                if part == "[]" and "items" in option:
                    following.append(_resolve(option["items"], components))
                elif part in (option.get("properties") or {}):
                    following.append(_resolve(option["properties"][part], components))
                elif isinstance(option.get("additionalProperties"), dict) and part != "[]":
                    following.append(_resolve(option["additionalProperties"], components))
        found = following
    return found


def spec_problems(endpoint: Endpoint, root: Path) -> list[str]:
    """Everything in this contract entry the published spec disagrees with."""
    problems = []
    try:
        operation = _operation(endpoint, root)
    except AssertionError as exc:
        return [str(exc)]
    params = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"}
    problems += [
        f"{endpoint.name}: query parameter {name} not in spec"
        for name in sorted(endpoint.query - params)
    ]
    declared = {**endpoint.required, **endpoint.optional}
    if declared:
        schema, components = _request_schema(endpoint, root)
        for path, kind in declared.items():
            reached = _field_schemas(schema, components, path)
            types = {s.get("type") for s in reached}
            if not reached:
                problems.append(f"{endpoint.name}: request field {path} not in spec")
            elif JSON_TYPES[kind] not in types and not (kind is int and "number" in types):
                problems.append(f"{endpoint.name}: {path} is {JSON_TYPES[kind]}, spec {types}")
        if endpoint.example is None:
            problems.append(f"{endpoint.name}: a contract with a body needs an example")
        else:
            problems += body_problems(endpoint, endpoint.example)
            problems += spec_body_problems(endpoint, endpoint.example, root)
    components = _components(endpoint, root)
    responses = [
        _resolve(r, components)
        for status, r in operation.get("responses", {}).items()
        if status in ("200", "201", "207")
    ]
    schemas = [
        r["content"]["application/json"]["schema"]
        for r in responses
        if "application/json" in (r.get("content") or {})
    ]
    if endpoint.reads and not schemas:
        problems.append(f"{endpoint.name}: the spec has no JSON success response")
    for path in endpoint.reads:
        if schemas and not any(_field_schemas(s, components, path) for s in schemas):
            problems.append(f"{endpoint.name}: response field {path} not in spec")
    return problems

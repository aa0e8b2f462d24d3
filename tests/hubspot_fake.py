"""A fake HubSpot read API at the wire (respx), shared by the pull tests and the end-to-end
test: search by hs_lastmodifieddate, v4 association batch reads, object batch reads, owners."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import respx

MODIFIED = "hs_lastmodifieddate"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Clock:
    """Wall-clock seconds that move only when the client sleeps: no real waiting."""

    def __init__(self) -> None:
        self.now = 1_714_550_400.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeHubSpot:
    """Just enough of HubSpot's read API: search by hs_lastmodifieddate (GTE, ascending,
    `after` offsets, a 400 past 10,000 results), v4 association batch reads (paged per
    object), object batch reads, and the owners list and owner by id."""

    def __init__(self, router: respx.MockRouter, clock: Clock) -> None:
        self.clock = clock
        self.records: dict[str, dict[str, dict[str, str]]] = {
            "companies": {},
            "deals": {},
            "meetings": {},
            "contacts": {},
        }
        self.links: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.link_page = 100
        self.owners: list[dict[str, Any]] = []
        self.owner_page = 100
        self.archived_owners: dict[str, dict[str, Any]] = {}
        self.search_times: list[float] = []
        self.search = router.route(
            method="POST", path__regex=r"^/crm/v3/objects/(?P<objects>\w+)/search$"
        ).mock(side_effect=self._search)
        self.read = router.route(
            method="POST", path__regex=r"^/crm/v3/objects/(?P<objects>\w+)/batch/read$"
        ).mock(side_effect=self._read)
        self.associations = router.route(
            method="POST",
            path__regex=r"^/crm/v4/associations/(?P<source>\w+)/(?P<target>\w+)/batch/read$",
        ).mock(side_effect=self._associations)
        self.owner_list = router.get("/crm/v3/owners").mock(side_effect=self._owner_list)
        one_owner = r"^/crm/v3/owners/(?P<owner>\d+)$"
        self.owner = router.route(method="GET", path__regex=one_owner).mock(side_effect=self._owner)

    def add(self, objects: str, record_id: str, modified: datetime | None, **props: str) -> str:
        if modified is not None:
            props["hs_lastmodifieddate"] = iso(modified)
        self.records[objects][record_id] = props
        return record_id

    def link(self, source: str, target: str, record_id: str, *targets: str) -> None:
        self.links.setdefault((source, target), {})[record_id] = list(targets)

    def _search(self, request: httpx.Request, objects: str) -> httpx.Response:
        self.search_times.append(self.clock.time())
        query = json.loads(request.content)
        after, limit = int(query["after"]), query["limit"]
        if after + limit > 10_000:
            return httpx.Response(
                400,
                json={
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Paging beyond 10000 results is not supported",
                },
            )
        checks = []
        for group in query["filterGroups"]:
            for flt in group["filters"]:
                checks.append((flt["propertyName"], flt["operator"], int(flt["value"])))
        (sort,) = query["sorts"]
        assert sort["direction"] == "ASCENDING"

        def matches(record_id: str, props: dict[str, str]) -> bool:
            values = {MODIFIED: _ms(props["hs_lastmodifieddate"]), "hs_object_id": int(record_id)}
            tests = {
                "GTE": lambda a, b: a >= b,
                "LTE": lambda a, b: a <= b,
                "EQ": lambda a, b: a == b,
                "GT": lambda a, b: a > b,
            }
            return all(tests[op](values[name], value) for name, op, value in checks)

        def key(item: tuple[str, dict[str, str]]) -> tuple[int, int]:
            record_id, props = item
            modified = _ms(props["hs_lastmodifieddate"])
            if sort["propertyName"] == "hs_object_id":
                return (int(record_id), 0)
            # HubSpot's order among records of one instant is not by id: reversed here, so
            # that nothing relies on it
            return (modified, -int(record_id))

        ordered = sorted(
            (item for item in self.records[objects].items() if matches(*item)), key=key
        )
        rows = [(None, record_id, props) for record_id, props in ordered]
        results = [
            {
                "id": record_id,
                "properties": {k: props[k] for k in query["properties"] if k in props},
                "createdAt": "2024-01-01T00:00:00.000Z",
                "updatedAt": props["hs_lastmodifieddate"],
                "archived": False,
            }
            for _, record_id, props in rows[after : after + limit]
        ]
        answer: dict[str, Any] = {"total": len(rows), "results": results}
        if after + limit < len(rows):
            answer["paging"] = {"next": {"after": str(after + limit), "link": "?after=x"}}
        return httpx.Response(200, json=answer)

    def _read(self, request: httpx.Request, objects: str) -> httpx.Response:
        query = json.loads(request.content)
        store = self.records[objects]
        results = [
            {
                "id": item["id"],
                "properties": {
                    k: store[item["id"]][k] for k in query["properties"] if k in store[item["id"]]
                },
                "createdAt": "2024-01-01T00:00:00.000Z",
                "updatedAt": "2024-01-01T00:00:00.000Z",
                "archived": False,
            }
            for item in query["inputs"]
            if item["id"] in store
        ]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def _associations(self, request: httpx.Request, source: str, target: str) -> httpx.Response:
        links = self.links.get((source, target), {})
        results, errors = [], []
        for item in json.loads(request.content)["inputs"]:
            targets = links.get(item["id"], [])
            if not targets:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": f"No {target} is associated with {source} {item['id']}.",
                        "context": {"fromObjectId": [item["id"]]},
                    }
                )
                continue
            start = int(item.get("after") or 0)
            page = targets[start : start + self.link_page]
            result: dict[str, Any] = {
                "from": {"id": item["id"]},
                "to": [
                    {
                        "toObjectId": int(t),
                        "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5}],
                    }
                    for t in page
                ],
            }
            if start + len(page) < len(targets):
                result["paging"] = {"next": {"after": str(start + len(page))}}
            results.append(result)
        answer = {"status": "COMPLETE", "results": results}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return httpx.Response(207 if errors else 200, json=answer)

    def _owner_list(self, request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("after") or 0)
        size = min(int(request.url.params.get("limit") or 100), self.owner_page)
        answer: dict[str, Any] = {"results": self.owners[start : start + size]}
        if start + size < len(self.owners):
            answer["paging"] = {"next": {"after": str(start + size)}}
        return httpx.Response(200, json=answer)

    def _owner(self, request: httpx.Request, owner: str) -> httpx.Response:
        if request.url.params.get("archived") == "true" and owner in self.archived_owners:
            return httpx.Response(200, json=self.archived_owners[owner])
        return httpx.Response(404, json={"status": "error", "category": "OBJECT_NOT_FOUND"})


def _ms(value: str) -> int:
    return millis(datetime.fromisoformat(value.replace("Z", "+00:00")))


def owner(owner_id: str, email: str, first: str, last: str, archived: bool = False) -> dict:
    return {
        "id": owner_id,
        "email": email,
        "firstName": first,
        "lastName": last,
        "type": "PERSON",
        "archived": archived,
        "createdAt": "2023-01-01T00:00:00.000Z",
        "updatedAt": "2023-01-01T00:00:00.000Z",
    }

"""HubSpot read-back: what sales keeps in HubSpot (company owners, deals and their stage,
meetings with our contacts), read incrementally by `hs_lastmodifieddate` through the CRM
search endpoints, one `PullPage` per search page.

`HubSpotCrm.pull_changes` is the entry point; this module knows HubSpot's read endpoints and
turns their records into the neutral `CrmAccount` / `CrmDeal` / `CrmMeeting`. It sends its
requests through the backend's own call (one client: retries, rate limit, auth errors).
Facts and sources: connectors/crm/README.md."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.crm.base import (
    PULL_KINDS,
    CrmAccount,
    CrmDeal,
    CrmMeeting,
    CrmOwner,
    CrmRecord,
    PullKind,
    PullPage,
)
from connectors.http import ApiError

log = logging.getLogger(__name__)

MODIFIED = "hs_lastmodifieddate"
SEARCH_LIMIT = 200  # the search endpoints' largest page
# records modified this recently wait for the next pull: the search index lags writes
INDEX_LAG_MS = 120_000
ASSOCIATIONS_BATCH = 1000  # v4 associations batch read: at most 1,000 ids (Feb 2025)
READ_BATCH = 100  # object batch read: at most 100 ids
OWNERS_PAGE = 100  # the owners list's default and largest page

DEAL_PROPERTIES = (
    "dealname",
    "dealstage",
    "pipeline",
    "amount",
    "hs_is_closed",
    "hs_is_closed_won",
    MODIFIED,
)
MEETING_PROPERTIES = ("hs_meeting_title", "hs_meeting_start_time", "hs_meeting_outcome", MODIFIED)

# (method, path, json=..., params=...) -> the response body; raises ApiError / CrmAuthError
Call = Callable[..., dict[str, Any]]


def parse_time(value: Any) -> datetime | None:
    """A HubSpot date-time (ISO 8601, or milliseconds since the epoch) as an aware UTC
    datetime; None when there is none or it cannot be read."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_cursor(moment: datetime) -> str:
    """The cursor a page hands back: ISO 8601 UTC with milliseconds, `Z` suffixed."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def cursor_millis(cursor: str) -> str:
    """A stored cursor as the millisecond epoch HubSpot's date filters take."""
    moment = parse_time(cursor)
    if moment is None:
        raise ValueError(f"HubSpot pull cursor {cursor!r} is not an ISO 8601 date-time")
    return str(int(moment.timestamp() * 1000))


def _next_after(body: dict[str, Any]) -> str | None:
    after = ((body.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def _flag(value: Any) -> bool | None:
    text = str(value).strip().lower() if value is not None else ""
    return {"true": True, "false": False}.get(text)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class HubSpotReader:
    """One pull of one kind: searches page by page, resolves owners (listed once, cached)
    and associations, and reports every record it cannot use with why.

    `count` returns how many HTTP requests the backend has sent so far, so each page says
    what it cost."""

    def __init__(
        self,
        call: Call,
        match_property: str,
        count: Callable[[], int],
        now: Callable[[], float] = time.time,
    ) -> None:
        self._call = call
        self._match = match_property
        self._count = count
        self._now = now
        self._owners: dict[str, CrmOwner] | None = None

    def pages(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        """The changes of `kind` since `cursor`, one page per search page, in modification
        order; nothing when nothing changed."""
        if kind not in PULL_KINDS:
            raise ValueError(f"unknown pull kind {kind!r}: one of {', '.join(PULL_KINDS)}")
        since = cursor_millis(cursor) if cursor else None
        if kind == "accounts":
            objects, properties = "companies", ("domain", self._match, "hubspot_owner_id")
            build = self._accounts
        elif kind == "deals":
            objects, properties, build = "deals", DEAL_PROPERTIES, self._deals
        else:
            objects, properties, build = "meetings", MEETING_PROPERTIES, self._meetings
        properties = tuple(dict.fromkeys((*properties, MODIFIED)))
        mark = self._count()
        for results in self._search(objects, list(properties), since):
            records, skipped, last = build(results)
            yield PullPage(
                kind=kind,
                records=records,
                cursor=format_cursor(last),
                skipped=skipped,
                requests=self._count() - mark,
            )
            mark = self._count()

    # --- search ------------------------------------------------------------------------

    def _search(
        self, objects: str, properties: list[str], since: str | None
    ) -> Iterator[list[dict[str, Any]]]:
        """Search pages of records modified at or after `since` (ms epoch), oldest first.

        Keyset paging: every page is a new query from the last modification time seen,
        never HubSpot's `after`, which is an offset: a record edited while a pull pages
        would move to the end and shift one record behind it out of reach, for good once
        the cursor passed it. Records of the boundary instant already yielded are left out.
        A full page of one instant is read by record id (`hs_object_id`), so any number of
        records sharing an instant pass. Records modified in the last `INDEX_LAG_MS` wait
        for the next pull: HubSpot's search index lags writes by seconds, and a record
        indexed late must not land behind the cursor."""
        until = str(int(self._now() * 1000) - INDEX_LAG_MS)
        boundary: set[str] = set()
        while True:
            filters = [{"propertyName": MODIFIED, "operator": "LTE", "value": until}]
            if since is not None:
                filters.insert(0, {"propertyName": MODIFIED, "operator": "GTE", "value": since})
            page = self._query(objects, properties, filters, MODIFIED)
            fresh = [r for r in page if str(r.get("id")) not in boundary]
            if fresh:
                yield fresh
            if len(page) < SEARCH_LIMIT:
                return
            last = _millis(_last(page))
            at_last = {str(r.get("id")) for r in page if _millis(_modified(r)) == last}
            boundary = (boundary if since == last else set()) | at_last
            if since == last:  # a whole page of one instant: no progress by time
                yield from self._instant(objects, properties, last, boundary)
                since, boundary = str(int(last) + 1), set()
            else:
                since = last

    def _instant(
        self, objects: str, properties: list[str], moment: str, done: set[str]
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record modified at `moment` (ms epoch) not in `done`, by record id."""
        after_id = "0"
        while True:
            filters = [
                {"propertyName": MODIFIED, "operator": "EQ", "value": moment},
                {"propertyName": "hs_object_id", "operator": "GT", "value": after_id},
            ]
            page = self._query(objects, properties, filters, "hs_object_id")
            fresh = [r for r in page if str(r.get("id")) not in done]
            if fresh:
                yield fresh
            if len(page) < SEARCH_LIMIT:
                return
            after_id = max((str(r.get("id")) for r in page), key=lambda i: (len(i), i))

    def _query(
        self, objects: str, properties: list[str], filters: list[dict[str, str]], sort: str
    ) -> list[dict[str, Any]]:
        """One search request: the first page of records matching every filter."""
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": SEARCH_LIMIT,
            "after": "0",
        }
        page = self._call("POST", f"/crm/v3/objects/{objects}/search", json=body)
        return [r for r in page.get("results") or [] if isinstance(r, dict)]

    # --- accounts ----------------------------------------------------------------------

    def _accounts(
        self, results: list[dict[str, Any]]
    ) -> tuple[list[CrmRecord], list[str], datetime]:
        records: list[CrmRecord] = []
        skipped: list[str] = []
        for company in results:
            company_id, props, modified = _parts(company)
            if modified is None:
                skipped.append(_undated("company", company_id))
                continue
            domain = str(props.get(self._match) or props.get("domain") or "").strip() or None
            owner_id = str(props.get("hubspot_owner_id") or "").strip()
            owner = self._owner(owner_id) if owner_id else None
            records.append(CrmAccount(company_id, domain, owner, modified))
        return records, skipped, _last(results)

    def _owner(self, owner_id: str) -> CrmOwner:
        """The owner behind an id: from the owners list (fetched once per pull), else asked
        for by id, active then archived. An owner HubSpot does not know keeps its id only."""
        if self._owners is None:
            self._owners = self._list_owners()
        if owner_id not in self._owners:
            self._owners[owner_id] = self._owner_by_id(owner_id)
        return self._owners[owner_id]

    def _list_owners(self) -> dict[str, CrmOwner]:
        owners: dict[str, CrmOwner] = {}
        params: dict[str, Any] = {"limit": OWNERS_PAGE}
        while True:
            body = self._call("GET", "/crm/v3/owners", params=params)
            for item in body.get("results") or []:
                if isinstance(item, dict) and item.get("id"):
                    owners[str(item["id"])] = _crm_owner(item)
            after = _next_after(body)
            if after is None:
                return owners
            params = {"limit": OWNERS_PAGE, "after": after}

    def _owner_by_id(self, owner_id: str) -> CrmOwner:
        if owner_id.isdigit():
            for params in ({}, {"archived": "true"}):
                try:
                    item = self._call("GET", f"/crm/v3/owners/{owner_id}", params=params)
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    raise
                if item.get("id"):
                    return _crm_owner(item)
        log.warning(
            "hubspot: owner %r is neither an active nor an archived HubSpot owner; its "
            "accounts keep the owner id without an email",
            owner_id,
        )
        return CrmOwner(crm_id=owner_id)

    # --- deals -------------------------------------------------------------------------

    def _deals(self, results: list[dict[str, Any]]) -> tuple[list[CrmRecord], list[str], datetime]:
        ids = [str(d.get("id") or "") for d in results]
        companies = self._associated("deals", "companies", ids)
        domains = self._company_domains([c for cs in companies.values() for c in cs])
        records: list[CrmRecord] = []
        skipped: list[str] = []
        for deal in results:
            deal_id, props, modified = _parts(deal)
            name = str(props.get("dealname") or "").strip() or None
            label = f"deal {deal_id}" + (f" ({name})" if name else "")
            stage = str(props.get("dealstage") or "").strip()
            linked = companies.get(deal_id, [])
            found = tuple(_unique([domains.get(c) or "" for c in linked]))
            if modified is None:
                skipped.append(_undated("deal", deal_id))
            elif not stage:
                skipped.append(f"{label}: no dealstage; nothing to apply")
            elif not linked:
                skipped.append(f"{label}: no associated company, so no account to apply it to")
            elif not found:
                skipped.append(
                    f"{label}: its companies ({', '.join(linked)}) have no domain in HubSpot"
                )
            else:
                records.append(
                    CrmDeal(
                        crm_id=deal_id,
                        name=name,
                        stage=stage,
                        pipeline=str(props.get("pipeline") or "").strip() or None,
                        closed=_flag(props.get("hs_is_closed")),
                        won=_flag(props.get("hs_is_closed_won")),
                        amount=_amount(props.get("amount"), label),
                        domains=found,
                        modified_at=modified,
                    )
                )
        return records, skipped, _last(results)

    # --- meetings ----------------------------------------------------------------------

    def _meetings(
        self, results: list[dict[str, Any]]
    ) -> tuple[list[CrmRecord], list[str], datetime]:
        ids = [str(m.get("id") or "") for m in results]
        contacts = self._associated("meetings", "contacts", ids)
        companies = self._associated("meetings", "companies", ids)
        emails = self._contact_emails([c for cs in contacts.values() for c in cs])
        domains = self._company_domains([c for cs in companies.values() for c in cs])
        records: list[CrmRecord] = []
        skipped: list[str] = []
        for meeting in results:
            meeting_id, props, modified = _parts(meeting)
            title = str(props.get("hs_meeting_title") or "").strip() or None
            label = f"meeting {meeting_id}" + (f" ({title})" if title else "")
            people, firms = contacts.get(meeting_id, []), companies.get(meeting_id, [])
            attendees = tuple(_unique([emails.get(c) or "" for c in people]))
            accounts = tuple(_unique([domains.get(c) or "" for c in firms]))
            if modified is None:
                skipped.append(_undated("meeting", meeting_id))
            elif not people and not firms:
                skipped.append(f"{label}: no associated contact or company")
            elif not attendees and not accounts:
                skipped.append(
                    f"{label}: its contacts have no email and its companies no domain in HubSpot"
                )
            else:
                start_raw = props.get("hs_meeting_start_time")
                start = parse_time(start_raw)
                if start is None and start_raw:
                    log.warning("hubspot: %s: start time %r unreadable", label, start_raw)
                records.append(
                    CrmMeeting(
                        crm_id=meeting_id,
                        title=title,
                        start_at=start,
                        outcome=str(props.get("hs_meeting_outcome") or "").strip() or None,
                        attendee_emails=attendees,
                        domains=accounts,
                        modified_at=modified,
                    )
                )
        return records, skipped, _last(results)

    # --- associations and batch reads --------------------------------------------------

    def _associated(self, from_type: str, to_type: str, ids: list[str]) -> dict[str, list[str]]:
        """Object id -> ids of its associated `to_type` records (v4 batch read, following
        each object's own `paging.next.after`). Ids with no association have no result
        (HubSpot reports them in a 207's errors): they map to []."""
        found: dict[str, list[str]] = {i: [] for i in ids if i}
        pending: list[dict[str, str]] = [{"id": i} for i in found]
        path = f"/crm/v4/associations/{from_type}/{to_type}/batch/read"
        while pending:
            chunk, pending = pending[:ASSOCIATIONS_BATCH], pending[ASSOCIATIONS_BATCH:]
            body = self._call("POST", path, json={"inputs": chunk})
            for result in body.get("results") or []:
                if not isinstance(result, dict):
                    continue
                from_id = str((result.get("from") or {}).get("id") or "")
                if from_id not in found:
                    continue
                for target in result.get("to") or []:
                    if isinstance(target, dict) and target.get("toObjectId") is not None:
                        found[from_id].append(str(target["toObjectId"]))
                after = _next_after(result)
                if after:
                    pending.append({"id": from_id, "after": after})
        return {key: _unique(values) for key, values in found.items()}

    def _company_domains(self, ids: list[str]) -> dict[str, str | None]:
        """Company id -> its domain: our match property when set, else `domain`."""
        props = self._batch_read("companies", ids, ["domain", self._match])
        return {
            i: (str(p.get(self._match) or p.get("domain") or "").strip() or None)
            for i, p in props.items()
        }

    def _contact_emails(self, ids: list[str]) -> dict[str, str | None]:
        props = self._batch_read("contacts", ids, ["email"])
        return {i: (str(p.get("email") or "").strip() or None) for i, p in props.items()}

    def _batch_read(
        self, objects: str, ids: list[str], properties: list[str]
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(_unique(ids), READ_BATCH):
            body = self._call(
                "POST",
                f"/crm/v3/objects/{objects}/batch/read",
                json={
                    "inputs": [{"id": i} for i in chunk],
                    "properties": properties,
                    "propertiesWithHistory": [],
                },
            )
            for item in body.get("results") or []:
                if isinstance(item, dict) and item.get("id"):
                    found[str(item["id"])] = item.get("properties") or {}
        return found


def _parts(record: dict[str, Any]) -> tuple[str, dict[str, Any], datetime | None]:
    props = record.get("properties") or {}
    return str(record.get("id") or ""), props, _modified(record)


def _modified(record: dict[str, Any]) -> datetime | None:
    props = record.get("properties") or {}
    return parse_time(props.get(MODIFIED)) or parse_time(record.get("updatedAt"))


def _millis(moment: datetime | None) -> str | None:
    """A modification time as the millisecond epoch the search filters take."""
    return None if moment is None else str(int(moment.timestamp() * 1000))


def _last(results: list[dict[str, Any]]) -> datetime:
    """The page's cursor: the latest modification time on it (the last, sorted ascending)."""
    moments = [m for m in (_modified(r) for r in results) if m is not None]
    if not moments:
        raise ApiError(
            "hubspot: a search page had no record with a modification time; the cursor "
            "cannot move past it",
            reason="no hs_lastmodifieddate",
        )
    return max(moments)


def _undated(what: str, record_id: str) -> str:
    return f"{what} {record_id or '?'}: no {MODIFIED} or updatedAt; not applied"


def _crm_owner(item: dict[str, Any]) -> CrmOwner:
    name = " ".join(str(item.get(k) or "").strip() for k in ("firstName", "lastName")).strip()
    email = str(item.get("email") or "").strip() or None
    active = item.get("archived") is not True
    return CrmOwner(crm_id=str(item["id"]), email=email, name=name or None, active=active)


def _amount(value: Any, label: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        log.warning("hubspot: %s: amount %r is not a number; left empty", label, value)
        return None

"""HubSpot as a CRM backend. Push: each account's tier, ICP score and summary, engagement
score, journey stage, committee coverage and gaps become properties of its HubSpot company,
so sales sees in the CRM what marketing sees here. Pull (`connectors/crm/hubspot_read.py`):
company owners, deals and meetings modified since a cursor.

A company whose id an earlier push or pull learned is updated by id, 100 per request, with
no search: a push of N such accounts takes ceil(N / 100) requests. An id HubSpot no longer
knows (the company deleted or merged) sends its domain down the path for unknown ones.

Unknown companies are matched by web domain. HubSpot's `domain` is not a unique property, so it
cannot be the `idProperty` of a batch upsert (HubSpot answers "Unable to perform
update/upsert by non-unique 0-2 property domain"). Instead each batch of at most 100 domains
is searched for (on `domain`, and on our own unique `<prefix>domain`), the companies found
are updated by record id, and the rest go through a batch upsert keyed on `<prefix>domain`:
created once, and updated rather than duplicated when a re-run comes before HubSpot's
search index has caught up. Facts and sources: connectors/crm/README.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from connectors.crm.base import (
    CrmAuthError,
    CrmBackend,
    PullKind,
    PullPage,
    WriteBackResult,
    checked_values,
)
from connectors.crm.hubspot_read import HubSpotReader
from connectors.http import ApiClient, ApiError, RetryPolicy
from core.domains import domain_or_none
from core.errors import ConfigError
from core.vocabulary import STAGES

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hubapi.com"
COMPANIES = "/crm/v3/objects/companies"
PROPERTIES = "/crm/v3/properties/companies"
# HubSpot's CRM batch endpoints take at most 100 inputs; search filters get the same chunk.
MAX_BATCH = 100
SEARCH_PAGE_SIZE = 200  # the search endpoint's largest page
SEARCH_MAX_PAGES = 50  # 10,000 results: the most one search query returns
# The search endpoints allow about 4-5 requests a second per token; every request here
# (searches included: one shared limiter) is spaced 1/4 s apart, without bursts, so no one
# second holds more than 4. That is also well inside the private-app burst limit of
# 100-190 requests per 10 seconds.
REQUESTS_PER_SECOND = 4.0
# A 429 without Retry-After means the 10-second burst window is full: back off in seconds.
RETRY = RetryPolicy(max_attempts=6, base_delay=2.0, max_delay=30.0, max_total_wait=120.0)
STAGE_LABELS = {"mqa": "MQA"}
TOKEN_SETTING = "ABM_HUBSPOT_ACCESS_TOKEN"
# Push: the companies and their properties. Pull: deals, owners, and contacts (HubSpot puts
# meetings and the other engagements under the contacts scope).
SCOPES = (
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
    "crm.objects.deals.read",
    "crm.objects.owners.read",
    "crm.objects.contacts.read",
)
# Failures of a batch update by id that say the record is gone (deleted, or merged away).
GONE_CATEGORIES = frozenset({"OBJECT_NOT_FOUND"})
TEXT_FIELDS = ("icp_summary", "coverage", "gaps")

__all__ = ["HubSpotAuthError", "HubSpotCrm", "WriteBackResult"]

_PREFIX = re.compile(r"[a-z][a-z0-9_]*")


class HubSpotAuthError(CrmAuthError):
    """HubSpot refused the private app token: wrong, revoked, or missing a scope. The
    message names ABM_HUBSPOT_ACCESS_TOKEN (and the scopes), never the token."""


class _CountingTransport(httpx.BaseTransport):
    """Counts the HTTP requests actually sent, retries included, for `requests` figures."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _number(value: float) -> str:
    """A score as HubSpot's number properties take it: plain decimal, at most 2 places."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _text(value: Any) -> str:
    """A summary, coverage or gaps value as a HubSpot string: a list joined with ", ",
    None as "" (which clears the property)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    return str(value).strip()


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class HubSpotCrm(CrmBackend):
    """HubSpot through a private app access token: pushes ABM results onto companies, pulls
    owners, deals and meetings back.

    The token is sent only as `Authorization: Bearer` and never appears in logs or errors.
    Call `ensure_fields()` once (it is cheap and idempotent) before `push_accounts`, so the
    custom properties exist. `transport`, `sleep` and `clock` are the test seams."""

    name = "hubspot"  # the CRM's key in the crmpush table
    batch_size = MAX_BATCH

    def __init__(
        self,
        access_token: str,
        base_url: str = DEFAULT_BASE_URL,
        property_prefix: str = "abm_",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not access_token or not access_token.strip():
            raise ConfigError(
                f"The HubSpot CRM backend needs {TOKEN_SETTING}: the access token of a HubSpot "
                f"private app with the scopes {', '.join(SCOPES)}"
            )
        if not _PREFIX.fullmatch(property_prefix):
            raise ConfigError(
                f"HubSpot property prefix {property_prefix!r}: use lowercase letters, digits "
                "and underscores, starting with a letter (HubSpot's internal-name rule)"
            )
        self.prefix = property_prefix
        self.group = f"{property_prefix}orchestrator"
        self.match_property = f"{property_prefix}domain"
        token = access_token.strip()
        self._counter = _CountingTransport(transport or httpx.HTTPTransport())
        self._http = ApiClient(
            base_url.rstrip("/"),
            name="hubspot",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            secrets=[token],
            retry=RETRY,
            rate_per_second=REQUESTS_PER_SECOND,
            burst=1,
            transport=self._counter,
            sleep=sleep,
            clock=clock,
        )

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far by this backend, retries included."""
        return self._counter.sent

    # --- properties --------------------------------------------------------------------

    def property_definitions(self) -> list[dict[str, Any]]:
        """The company properties this connector writes, as the properties API creates them."""
        p, group = self.prefix, self.group
        stage_options = [
            {
                "label": STAGE_LABELS.get(stage, stage.title()),
                "value": stage,
                "displayOrder": i,
                "hidden": False,
            }
            for i, stage in enumerate(STAGES)
        ]
        return [
            {
                "name": f"{p}engagement_score",
                "label": "ABM engagement score",
                "description": "Time-decayed engagement of the account's people, weighted "
                "for breadth (abm-orchestrator).",
                "groupName": group,
                "type": "number",
                "fieldType": "number",
            },
            {
                "name": f"{p}stage",
                "label": "ABM stage",
                "description": "Account journey stage set by the orchestrator's rules.",
                "groupName": group,
                "type": "enumeration",
                "fieldType": "select",
                "options": stage_options,
            },
            {
                "name": f"{p}tier",
                "label": "ABM tier",
                "description": "1 one-to-one, 2 one-to-few, 3 one-to-many.",
                "groupName": group,
                "type": "number",
                "fieldType": "number",
            },
            {
                "name": f"{p}icp_score",
                "label": "ABM ICP fit score",
                "description": "Ideal-customer-profile fit, 0-100, from the ICP rules.",
                "groupName": group,
                "type": "number",
                "fieldType": "number",
            },
            {
                "name": f"{p}icp_summary",
                "label": "ABM ICP reasons",
                "description": "Why the account fits the ideal customer profile: the ICP "
                "rules that scored it.",
                "groupName": group,
                "type": "string",
                "fieldType": "textarea",
            },
            {
                "name": f"{p}coverage",
                "label": "ABM committee coverage",
                "description": "Buying-committee roles with a reachable contact.",
                "groupName": group,
                "type": "string",
                "fieldType": "text",
            },
            {
                "name": f"{p}gaps",
                "label": "ABM committee gaps",
                "description": "Buying-committee roles the campaign needs and has no one for.",
                "groupName": group,
                "type": "string",
                "fieldType": "text",
            },
            {
                "name": self.match_property,
                "label": "ABM domain (match key)",
                "description": "Normalised web domain the orchestrator matches this company "
                "on. Unique, so a re-run updates the company instead of creating another.",
                "groupName": group,
                "type": "string",
                "fieldType": "text",
                "hasUniqueValue": True,
            },
        ]

    def ensure_fields(self) -> list[str]:
        """Create the property group and any missing custom properties; returns the names
        created (none on a re-run). Existing properties are left as they are, except that a
        match property without unique values is refused: upserts would fail on it."""
        existing = {
            item.get("name"): item
            for item in self._json("GET", PROPERTIES).get("results", [])
            if isinstance(item, dict)
        }
        match = existing.get(self.match_property)
        if match is not None and not match.get("hasUniqueValue"):
            raise ConfigError(
                f"HubSpot company property {self.match_property} exists but does not require "
                "unique values; the write-back matches on it. Delete it in HubSpot (Settings > "
                "Properties) so ensure_fields can recreate it, or choose another prefix."
            )
        missing = [d for d in self.property_definitions() if d["name"] not in existing]
        if not missing:
            return []
        groups = {
            item.get("name")
            for item in self._json("GET", f"{PROPERTIES}/groups").get("results", [])
            if isinstance(item, dict)
        }
        if self.group not in groups:
            body = {"name": self.group, "label": "ABM orchestrator", "displayOrder": -1}
            self._create(f"{PROPERTIES}/groups", body)
        created = []
        for definition in missing:
            if self._create(PROPERTIES, definition):
                created.append(definition["name"])
        if created:
            log.info("hubspot: created company properties %s", ", ".join(created))
        return created

    def _create(self, path: str, body: dict[str, Any]) -> bool:
        """POST a definition; False when another run created it first (409)."""
        try:
            self._request("POST", path, json=body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # --- write-back --------------------------------------------------------------------

    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        """Write each account onto its HubSpot company, creating the company when none has
        that domain; `crm_ids` says which company each domain went to.

        Each account needs `domain`, `engagement_score`, `stage`, `tier` (or None) and
        `icp_score` (or None); `icp_summary`, `coverage` and `gaps` are written when present
        (None clears them), `name` only when a company is created. Domains in `known_ids`
        are updated by that company id without a search; an id HubSpot no longer has
        sends its domain through search and upsert in the same push. Invalid rows are
        reported without being sent. A batch HubSpot rejects fails alone; after a failure
        that survived every retry (HubSpot unavailable) the remaining batches are not sent.
        401/403 raise `HubSpotAuthError`."""
        first = self.requests_sent
        result = WriteBackResult()
        rows = self._rows(accounts, result)
        known = {d: str((known_ids or {})[d]) for d in rows if (known_ids or {}).get(d)}
        stop_reason: str | None = None
        unknown: list[str] = []
        for chunk in _chunks([d for d in rows if d in known], MAX_BATCH):
            if stop_reason:
                self._not_sent(chunk, stop_reason, result)
            else:
                stop_reason, gone = self._update_known(chunk, known, rows, result)
                unknown += gone
        unknown += [d for d in rows if d not in known]
        for chunk in _chunks(unknown, MAX_BATCH):
            if stop_reason:
                self._not_sent(chunk, stop_reason, result)
            else:
                stop_reason = self._write_chunk(chunk, rows, result)
        result.stopped = stop_reason
        result.requests = self.requests_sent - first
        log.info(
            "hubspot: %d companies updated, %d created, %d failed, in %d requests",
            result.updated,
            result.created,
            result.failed,
            result.requests,
        )
        return result

    def _update_known(
        self,
        chunk: list[str],
        known: Mapping[str, str],
        rows: Mapping[str, dict[str, str]],
        result: WriteBackResult,
    ) -> tuple[str | None, list[str]]:
        """Batch update companies by the ids learned before. Returns why later requests
        should not be sent (HubSpot unavailable), and the domains whose id HubSpot no
        longer has: a 207 error naming it as not found, a 404, or any other rejection of
        the whole batch (HubSpot's answer to an unknown id in a batch is not documented;
        search and upsert then either write each domain or fail it with its own reason)."""
        try:
            gone = self._update(chunk, known, rows, result, gone_ok=True)
        except ApiError as exc:
            if exc.retryable:
                return self._failed(chunk, exc, result), []
            log.info("hubspot: a batch update by id was refused (%s); searching instead", exc)
            return None, chunk
        if gone:
            log.info("hubspot: %d known company ids no longer exist; searching", len(gone))
        return None, gone

    def _write_chunk(
        self, chunk: list[str], rows: Mapping[str, dict[str, str]], result: WriteBackResult
    ) -> str | None:
        """Search, update and upsert one chunk of domains, each request failing alone.
        Returns why later requests should not be sent, if HubSpot is unavailable."""
        try:
            found = self._find(chunk)
        except ApiError as exc:
            return self._failed(chunk, exc, result)
        existing = [d for d in chunk if d in found]
        new = [d for d in chunk if d not in found]
        stop: str | None = None
        if existing:
            try:
                self._update(existing, found, rows, result)
            except ApiError as exc:
                stop = self._failed(existing, exc, result)
        if new and stop:
            self._not_sent(new, stop, result)
        elif new:
            try:
                self._upsert(new, rows, result)
            except ApiError as exc:
                stop = self._failed(new, exc, result)
        return stop

    @staticmethod
    def _failed(domains: list[str], exc: ApiError, result: WriteBackResult) -> str | None:
        """Record a rejected request against its domains; a failure that outlasted the
        retries (429, 5xx, network) means the rest should wait for the next run."""
        for domain in domains:
            result.failures[domain] = str(exc)
        return f"HubSpot unavailable ({exc.reason})" if exc.retryable else None

    @staticmethod
    def _not_sent(domains: list[str], reason: str, result: WriteBackResult) -> None:
        for domain in domains:
            result.failures[domain] = f"not sent: {reason}"

    def _rows(
        self, accounts: Sequence[dict[str, Any]], result: WriteBackResult
    ) -> dict[str, dict[str, str]]:
        """Domain -> HubSpot property values, for the rows that are valid; the last row for
        a domain wins."""
        rows: dict[str, dict[str, str]] = {}
        repeated = 0
        for index, account in enumerate(accounts):
            domain = domain_or_none(account.get("domain") or "")
            if domain is None:
                key = str(account.get("domain") or "").strip() or f"<row {index}>"
                result.failures[key] = f"not a web domain: {account.get('domain')!r}"
                continue
            try:
                values = self._values(account)
            except ValueError as exc:
                result.failures[domain] = str(exc)
                rows.pop(domain, None)
                continue
            if domain in rows:
                repeated += 1
            rows[domain] = values
            result.failures.pop(domain, None)
        if repeated:
            log.info("hubspot: %d repeated domains, the last row of each is written", repeated)
        return rows

    def _values(self, account: Mapping[str, Any]) -> dict[str, str]:
        """The account's properties as HubSpot strings; "" clears a property."""
        p = self.prefix
        score, stage, tier, icp = checked_values(account)
        values = {
            f"{p}engagement_score": _number(score),
            f"{p}stage": stage,
            f"{p}tier": "" if tier is None else str(tier),
            f"{p}icp_score": "" if icp is None else str(icp),
        }
        for key in TEXT_FIELDS:
            if key in account:
                values[f"{p}{key}"] = _text(account[key])
        name = str(account.get("name") or "").strip()
        if name:
            values["name"] = name
        return values

    def _find(self, domains: list[str]) -> dict[str, str]:
        """Domain -> id of the company to update: one whose match property is the domain,
        else the oldest whose `domain` is. Companies HubSpot has not indexed yet are missed;
        the upsert on the match property catches those it created for us."""
        body: dict[str, Any] = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": self.match_property, "operator": "IN", "values": domains}
                    ]
                },
                {"filters": [{"propertyName": "domain", "operator": "IN", "values": domains}]},
            ],
            "properties": ["domain", self.match_property],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": SEARCH_PAGE_SIZE,
            "after": "0",  # the first page; the published spec marks `after` required
        }
        wanted = set(domains)
        by_match: dict[str, str] = {}
        by_domain: dict[str, str] = {}
        duplicates = 0
        for _ in range(SEARCH_MAX_PAGES):
            page = self._json("POST", f"{COMPANIES}/search", json=body)
            for company in page.get("results") or []:
                company_id = str(company.get("id") or "")
                props = company.get("properties") or {}
                if not company_id:
                    continue
                matched = str(props.get(self.match_property) or "")
                if matched in wanted:
                    by_match.setdefault(matched, company_id)
                domain = domain_or_none(props.get("domain") or "")
                if domain in wanted:
                    if domain in by_domain and by_domain[domain] != company_id:
                        duplicates += 1
                    by_domain.setdefault(domain, company_id)
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
            body["after"] = str(after)
        if duplicates:
            log.info(
                "hubspot: %d companies share a domain with an older one; the oldest is updated",
                duplicates,
            )
        return {**by_domain, **by_match}

    def _update(
        self,
        domains: list[str],
        ids: Mapping[str, str],
        rows: Mapping[str, dict[str, str]],
        result: WriteBackResult,
        gone_ok: bool = False,
    ) -> list[str]:
        """Batch update companies by record id. Their `domain` and `name` belong to whoever
        maintains the CRM and are not touched. With `gone_ok`, domains whose id HubSpot
        says does not exist are returned instead of failed."""
        inputs = [
            {
                "id": ids[d],
                "objectWriteTraceId": d,
                "properties": {k: v for k, v in rows[d].items() if k != "name"},
            }
            for d in domains
        ]
        done, failed, gone = self._batch(f"{COMPANIES}/batch/update", inputs)
        if not gone_ok:
            failed.update(gone)
            gone = {}
        result.updated += len(done)
        result.failures.update(failed)
        for domain, item in done.items():
            result.crm_ids[domain] = str(item.get("id") or ids[domain])
        return list(gone)

    def _upsert(
        self, domains: list[str], rows: Mapping[str, dict[str, str]], result: WriteBackResult
    ) -> None:
        """Batch upsert on the unique match property: creates the company, or updates the
        one an earlier run created if search had not seen it yet."""
        inputs = [
            {
                "idProperty": self.match_property,
                "id": d,
                "objectWriteTraceId": d,
                "properties": {**rows[d], "domain": d, self.match_property: d},
            }
            for d in domains
        ]
        done, failed, gone = self._batch(f"{COMPANIES}/batch/upsert", inputs)
        failed.update(gone)
        for domain, outcome in done.items():
            if outcome.get("new"):
                result.created += 1
            else:
                result.updated += 1
            if outcome.get("id"):
                result.crm_ids[domain] = str(outcome["id"])
        result.failures.update(failed)

    def _batch(
        self, path: str, inputs: list[dict[str, Any]]
    ) -> tuple[dict[str, dict], dict[str, str], dict[str, str]]:
        """Send one batch; returns (domain -> result, domain -> failure reason, domain ->
        reason for those whose record HubSpot says does not exist).

        Every input carries its domain as `objectWriteTraceId`, which HubSpot echoes in the
        results and in the `context` of each error of a 207 multi-status answer; an error
        that names record ids instead is matched through the ids sent. An error naming no
        input fails every input that has no result of its own."""
        body = self._json("POST", path, json={"inputs": inputs})
        sent = [str(i["objectWriteTraceId"]) for i in inputs]
        by_id = {str(i["id"]): str(i["objectWriteTraceId"]) for i in inputs}
        failed: dict[str, str] = {}
        gone: dict[str, str] = {}
        unplaced: list[str] = []
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            reason = self._error_reason(error)
            context = error.get("context") or {}
            named = [str(t) for t in context.get("objectWriteTraceId") or [] if t in sent]
            named += [by_id[str(i)] for i in context.get("ids") or [] if str(i) in by_id]
            if not named:
                unplaced.append(reason)
            into = gone if error.get("category") in GONE_CATEGORIES else failed
            for domain in named:
                if domain not in failed and domain not in gone:
                    into[domain] = reason
        done: dict[str, dict] = {}
        for item in body.get("results") or []:
            if not isinstance(item, dict):
                continue
            domain = self._result_domain(item, by_id)
            if domain in sent and domain not in failed and domain not in gone:
                done[domain] = item
        for domain in sent:
            if domain in done or domain in failed or domain in gone:
                continue
            if unplaced:
                failed[domain] = "; ".join(unplaced)
            else:
                done[domain] = {}
        return done, failed, gone

    def _result_domain(self, item: Mapping[str, Any], by_id: Mapping[str, str]) -> str:
        trace = item.get("objectWriteTraceId")
        if trace:
            return str(trace)
        if str(item.get("id")) in by_id:
            return by_id[str(item.get("id"))]
        props = item.get("properties") or {}
        for key in (self.match_property, "domain"):
            if props.get(key):
                return domain_or_none(props[key]) or str(props[key])
        return ""

    def _error_reason(self, error: Mapping[str, Any]) -> str:
        details = [
            str(d.get("message"))
            for d in error.get("errors") or []
            if isinstance(d, dict) and d.get("message")
        ]
        parts = [str(error.get("category") or "error"), str(error.get("message") or "")]
        text = ": ".join(p for p in parts if p)
        if details:
            text += " (" + "; ".join(details) + ")"
        return self._http.redact(text)[:500]

    # --- transport ---------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Every HubSpot call this client makes is safe to repeat: searches read, batch
        update and upsert are keyed by record id or domain, a property that exists answers
        409. So a 5xx or a timeout is retried even for a POST."""
        try:
            return self._http.request(method, path, repeatable=True, **kwargs)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise self._auth_error(exc.status) from None
            raise

    # --- pull --------------------------------------------------------------------------

    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        """Companies (owner, domain), deals (stage, companies) or meetings (attendees,
        companies) modified at or after `cursor`, one page per search page; see
        `connectors/crm/hubspot_read.py`. Owners are listed once per call."""
        reader = HubSpotReader(self._json, self.match_property, lambda: self.requests_sent)
        return reader.pages(kind, cursor)

    @staticmethod
    def _auth_error(status: int) -> HubSpotAuthError:
        if status == 401:
            return HubSpotAuthError(
                f"HubSpot rejected the access token (HTTP 401: wrong, rotated or revoked). "
                f"Check {TOKEN_SETTING}: it must be the access token of a HubSpot private app "
                "(Settings > Integrations > Private Apps > Auth).",
                status=401,
            )
        return HubSpotAuthError(
            f"HubSpot refused access (HTTP 403): the private app behind {TOKEN_SETTING} lacks "
            f"a scope. Give it {', '.join(SCOPES)}, then check {TOKEN_SETTING} again.",
            status=403,
        )

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()

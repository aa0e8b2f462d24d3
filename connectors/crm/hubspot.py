"""HubSpot CRM write-back: each account's engagement score, journey stage, tier and ICP score
become properties of its HubSpot company, so sales sees in the CRM what marketing sees here.

Companies are matched by web domain. HubSpot's `domain` is not a unique property, so it
cannot be the `idProperty` of a batch upsert (HubSpot answers "Unable to perform
update/upsert by non-unique 0-2 property domain"). Instead each batch of at most 100 domains
is searched for (on `domain`, and on our own unique `<prefix>domain`), the companies found
are updated by record id, and the rest go through a batch upsert keyed on `<prefix>domain`:
created once, and updated rather than duplicated when a re-run comes before HubSpot's
search index has caught up. Facts and sources: connectors/crm/README.md.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.http import ApiClient, ApiError, Closing, RetryPolicy
from core.domains import domain_or_none
from core.errors import ConfigError
from core.vocabulary import STAGES, TIERS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hubapi.com"
COMPANIES = "/crm/v3/objects/companies"
PROPERTIES = "/crm/v3/properties/companies"
# HubSpot's CRM batch endpoints take at most 100 inputs; search filters get the same chunk.
MAX_BATCH = 100
SEARCH_PAGE_SIZE = 200  # the search endpoint's largest page
SEARCH_MAX_PAGES = 50  # 10,000 results: the most one search query returns
# The search endpoints allow about 4-5 requests a second; everything here stays under that,
# which is also well inside the private-app burst limit of 100-190 requests per 10 seconds.
REQUESTS_PER_SECOND = 4.0
# A 429 without Retry-After means the 10-second burst window is full: back off in seconds.
RETRY = RetryPolicy(max_attempts=6, base_delay=2.0, max_delay=30.0, max_total_wait=120.0)
STAGE_LABELS = {"mqa": "MQA"}
TOKEN_SETTING = "ABM_HUBSPOT_ACCESS_TOKEN"
SCOPES = (
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
)

_PREFIX = re.compile(r"[a-z][a-z0-9_]*")


class HubSpotAuthError(ConfigError):
    """HubSpot refused the private app token: wrong, revoked, or missing a scope.

    `status` has a default so that the error survives pickling (Prefect task states)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WriteBackResult:
    """What one `write_back` did: companies updated and created, and why each failure failed.

    `failures` maps a domain (or `<row N>` when a row had none) to a reason a marketer can
    act on; nothing in it is a secret. `stopped` says why sending stopped early (HubSpot
    unavailable after every retry), so a caller with more accounts waits for the next run."""

    updated: int = 0
    created: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None

    @property
    def failed(self) -> int:
        """How many accounts were not written."""
        return len(self.failures)


def _number(value: float) -> str:
    """A score as HubSpot's number properties take it: plain decimal, at most 2 places."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class HubSpotCrm(Closing):
    """Writes ABM results onto HubSpot companies with a private app access token.

    The token is sent only as `Authorization: Bearer` and never appears in logs or errors.
    Call `ensure_properties()` once (it is cheap and idempotent) before `write_back`, so the
    custom properties exist. `transport` and `sleep` are the test seams."""

    name = "hubspot"  # the CRM's key in the crmpush table

    def __init__(
        self,
        access_token: str,
        base_url: str = DEFAULT_BASE_URL,
        property_prefix: str = "abm_",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not access_token or not access_token.strip():
            raise ConfigError(
                f"HubSpot write-back needs {TOKEN_SETTING}: the access token of a HubSpot "
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
        self._http = ApiClient(
            base_url.rstrip("/"),
            name="hubspot",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            secrets=[token],
            retry=RETRY,
            rate_per_second=REQUESTS_PER_SECOND,
            burst=int(REQUESTS_PER_SECOND),
            transport=transport,
            sleep=sleep,
        )

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

    def ensure_properties(self) -> list[str]:
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
                "Properties) so ensure_properties can recreate it, or choose another prefix."
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

    def write_back(self, accounts: list[dict]) -> WriteBackResult:
        """Write each account's scores and stage onto its HubSpot company, creating the
        company when none has that domain.

        Each account needs `domain`, `engagement_score`, `stage`, `tier` (or None) and
        `icp_score` (or None); `name` is used when a company is created. Invalid rows are
        reported without being sent. A batch HubSpot rejects fails alone; after a failure
        that survived every retry (HubSpot unavailable) the remaining batches are not sent.
        401/403 raise `HubSpotAuthError`."""
        result = WriteBackResult()
        rows = self._rows(accounts, result)
        stop_reason: str | None = None
        for chunk in _chunks(list(rows), MAX_BATCH):
            if stop_reason:
                self._not_sent(chunk, stop_reason, result)
            else:
                stop_reason = self._write_chunk(chunk, rows, result)
        result.stopped = stop_reason
        log.info(
            "hubspot: %d companies updated, %d created, %d failed",
            result.updated,
            result.created,
            result.failed,
        )
        return result

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

    def _rows(self, accounts: list[dict], result: WriteBackResult) -> dict[str, dict[str, str]]:
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
        try:
            score = float(account["engagement_score"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"engagement_score {account.get('engagement_score')!r} is not a number"
            ) from None
        if not math.isfinite(score):
            raise ValueError(f"engagement_score {score!r} is not a finite number")
        stage = str(account.get("stage") or "").strip().lower()
        if stage not in STAGES:
            raise ValueError(f"stage {account.get('stage')!r} is not one of {', '.join(STAGES)}")
        tier = account.get("tier")
        if tier is not None and tier not in TIERS:
            raise ValueError(f"tier {tier!r} is not 1, 2, 3 or None")
        icp = account.get("icp_score")
        if icp is not None and not (isinstance(icp, int) and 0 <= icp <= 100):
            raise ValueError(f"icp_score {icp!r} is not an integer from 0 to 100, or None")
        values = {
            f"{p}engagement_score": _number(score),
            f"{p}stage": stage,
            f"{p}tier": "" if tier is None else str(tier),
            f"{p}icp_score": "" if icp is None else str(icp),
        }
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
            body["after"] = after
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
    ) -> None:
        """Batch update companies found by search, by record id. Their `domain` and `name`
        belong to whoever maintains the CRM and are not touched."""
        inputs = [
            {
                "id": ids[d],
                "objectWriteTraceId": d,
                "properties": {k: v for k, v in rows[d].items() if k != "name"},
            }
            for d in domains
        ]
        done, failed = self._batch(f"{COMPANIES}/batch/update", inputs)
        result.updated += len(done)
        result.failures.update(failed)

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
        done, failed = self._batch(f"{COMPANIES}/batch/upsert", inputs)
        for outcome in done.values():
            if outcome.get("new"):
                result.created += 1
            else:
                result.updated += 1
        result.failures.update(failed)

    def _batch(
        self, path: str, inputs: list[dict[str, Any]]
    ) -> tuple[dict[str, dict], dict[str, str]]:
        """Send one batch; returns (domain -> result, domain -> failure reason).

        Every input carries its domain as `objectWriteTraceId`, which HubSpot echoes in the
        results and in the `context` of each error of a 207 multi-status answer; an error
        that names record ids instead is matched through the ids sent. An error naming no
        input fails every input that has no result of its own."""
        body = self._json("POST", path, json={"inputs": inputs})
        sent = [str(i["objectWriteTraceId"]) for i in inputs]
        by_id = {str(i["id"]): str(i["objectWriteTraceId"]) for i in inputs}
        failed: dict[str, str] = {}
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
            for domain in named:
                failed.setdefault(domain, reason)
        done: dict[str, dict] = {}
        for item in body.get("results") or []:
            if not isinstance(item, dict):
                continue
            domain = self._result_domain(item, by_id)
            if domain in sent and domain not in failed:
                done[domain] = item
        for domain in sent:
            if domain in done or domain in failed:
                continue
            if unplaced:
                failed[domain] = "; ".join(unplaced)
            else:
                done[domain] = {}
        return done, failed

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

"""Salesforce as a CRM backend: ABM results pushed onto Accounts matched by an external id field
holding the domain, and owners, opportunities and events pulled back by `SystemModstamp`.

Pushes of fewer than `bulk_threshold` accounts go through sObject Collections (200 records a
request); larger ones through one Bulk API 2.0 ingest job (a handful of requests whatever the
size). Pulls are SOQL queries followed page by page through `nextRecordsUrl`. Every call goes
through the shared `connectors.http.ApiClient` (retries, Retry-After, token redaction); an
expired session is renewed once per request. Facts and sources: connectors/crm/salesforce.md."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.crm.base import (
    CrmAccount,
    CrmAuthError,
    CrmBackend,
    CrmDeal,
    CrmMeeting,
    CrmOwner,
    CrmRecord,
    PullKind,
    PullPage,
    WriteBackResult,
    checked_values,
)
from connectors.crm.salesforce_auth import SalesforceAuth, SalesforceToken
from connectors.http import ApiClient, ApiError, RetryPolicy
from core.domains import domain_or_none
from core.errors import ConfigError

log = logging.getLogger(__name__)

DOMAIN_FIELD_SETTING = "ABM_SALESFORCE_DOMAIN_FIELD"
PREFIX_SETTING = "ABM_SALESFORCE_FIELD_PREFIX"
# Salesforce asks clients to honour Retry-After on 503 (server busy); waits stay bounded.
RETRY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=30.0, max_total_wait=120.0)
FINAL_JOB_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
CSV_NULL = "#N/A"  # Bulk API CSV: an empty value leaves a field as it is; #N/A clears it
TEXT_LIMITS = {"icp_summary": 500, "coverage": 300, "gaps": 300}  # as the crmpush table keeps them

_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*__c")
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_NO_COLUMN = re.compile(r"No such column '([^']+)' on (?:entity|sobject of type) '?(\w+)")


@dataclass(frozen=True)
class FieldSpec:
    """An Account field a push writes: its API name, the account key it comes from, what to
    create in Setup, and the describe types and length that can hold our values."""

    name: str
    key: str
    create_as: str
    types: frozenset[str]
    min_length: int = 0


def account_fields(prefix: str) -> list[FieldSpec]:
    """The custom fields a push writes, with the prefix of `ABM_SALESFORCE_FIELD_PREFIX`."""
    number = frozenset({"double", "int"})
    text = frozenset({"textarea", "string"})
    return [
        FieldSpec(f"{prefix}Tier__c", "tier", "Number(1, 0)", number),
        FieldSpec(f"{prefix}ICP_Score__c", "icp_score", "Number(3, 0)", number),
        FieldSpec(f"{prefix}ICP_Summary__c", "icp_summary", "Long Text Area(1000)", text, 500),
        FieldSpec(f"{prefix}Engagement_Score__c", "engagement_score", "Number(16, 2)", number),
        FieldSpec(
            f"{prefix}Stage__c", "stage", "Text(20) or Picklist", frozenset({"string", "picklist"})
        ),
        FieldSpec(f"{prefix}Coverage__c", "coverage", "Long Text Area(1000)", text, 300),
        FieldSpec(f"{prefix}Gaps__c", "gaps", "Long Text Area(1000)", text, 300),
    ]


def soql_datetime(cursor: str) -> str:
    """A stored cursor as a SOQL dateTime literal (UTC, whole seconds, no quotes). Rounding
    down only re-reads records of the boundary second, which applying again is harmless."""
    try:
        moment = datetime.fromisoformat(cursor.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"Salesforce pull cursor {cursor!r} is not an ISO date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: Any) -> datetime | None:
    """A Salesforce dateTime (`2024-05-01T10:20:30.000+0000`) as aware UTC, None if absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _text(value: Any, limit: int) -> str | None:
    """Free text as a field takes it: lists joined, blank as None, cut to the field's size
    with an ellipsis that shows it was cut."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def account_values(account: Mapping[str, Any]) -> dict[str, Any]:
    """Our account keys -> the values a push writes (None clears a field); ValueError names
    the first value that cannot be sent."""
    score, stage, tier, icp = checked_values(account)
    values: dict[str, Any] = {
        "tier": tier,
        "icp_score": icp,
        "engagement_score": round(score, 2),
        "stage": stage,
    }
    for key, limit in TEXT_LIMITS.items():
        values[key] = _text(account.get(key), limit)
    return values


def _csv_value(value: Any) -> str:
    if value is None:
        return CSV_NULL
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _csv_line(values: Sequence[Any]) -> str:
    """One CSV row, quoted where a value holds a comma, a quote or a line break (RFC 4180,
    as Bulk API 2.0 reads it with lineEnding LF)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_csv_value(v) for v in values])
    return buffer.getvalue()


def _record_errors(item: Any) -> str:
    """Salesforce's per-record errors as one reason: `STATUS: message (fields: ...)`."""
    errors = item.get("errors") if isinstance(item, dict) else None
    parts = []
    for error in errors or []:
        if not isinstance(error, dict):
            continue
        text = f"{error.get('statusCode') or 'ERROR'}: {error.get('message') or ''}".strip()
        fields = [str(f) for f in error.get("fields") or []]
        parts.append(text + (f" (fields: {', '.join(fields)})" if fields else ""))
    return "; ".join(parts)[:500] or "Salesforce returned no result for this record"


class SalesforceCrm(CrmBackend):
    """Pushes to and pulls from one Salesforce org through its REST and Bulk API 2.0.

    Build it with `SalesforceCrm.from_settings(settings)`. `transport`, `sleep` and `clock`
    are the test seams; the token is fetched on `open()` (or the first call)."""

    name = "salesforce"
    batch_size = 200  # sObject Collections take at most 200 records a request
    bulk_threshold = 2000  # from this many accounts a push is one Bulk API 2.0 job
    # a push hands over this many at once, so that a large push goes in Bulk jobs of up to
    # 10,000 (five requests each) rather than Collections of 200
    accounts_per_call = 10_000
    # Bulk API 2.0 takes at most 100 MB of CSV a job (base64 makes it ~150 MB on their side)
    bulk_max_bytes = 100_000_000 - 1_000_000
    bulk_poll_first = 2.0
    bulk_poll_max = 15.0
    bulk_max_wait = 900.0  # seconds of polling before a push gives up waiting on a job

    def __init__(
        self,
        auth: SalesforceAuth,
        *,
        api_version: str = "v62.0",
        domain_field: str = "ABM_Domain__c",
        field_prefix: str = "ABM_",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not re.fullmatch(r"v\d{2,3}\.0", api_version):
            raise ConfigError(f"ABM_SALESFORCE_API_VERSION {api_version!r}: use a form like v62.0")
        if not _API_NAME.fullmatch(domain_field):
            raise ConfigError(
                f"{DOMAIN_FIELD_SETTING} {domain_field!r}: give the API name of a custom "
                "Account field, like ABM_Domain__c"
            )
        if not _PREFIX.fullmatch(field_prefix):
            raise ConfigError(
                f"{PREFIX_SETTING} {field_prefix!r}: letters, digits and underscores, starting "
                "with a letter (Salesforce's API-name rule)"
            )
        self.auth = auth
        self.api_version = api_version
        self.domain_field = domain_field
        self.fields = account_fields(field_prefix)
        self._data = f"/services/data/{api_version}"
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._token: SalesforceToken | None = None
        self._http: ApiClient | None = None
        self._requests = 0

    @classmethod
    def from_settings(cls, settings: Any, **seams: Any) -> SalesforceCrm:
        """The backend the `ABM_SALESFORCE_*` settings describe; `seams` are `transport`,
        `sleep` and `clock`, passed to both the login and the API clients."""
        auth = SalesforceAuth.from_settings(settings, **seams)
        return cls(
            auth,
            api_version=settings.salesforce_api_version,
            domain_field=settings.salesforce_domain_field,
            field_prefix=settings.salesforce_field_prefix,
            **seams,
        )

    # --- session -------------------------------------------------------------------------

    def open(self) -> None:
        """Fetch a token and open the API client on the org's instance URL, once."""
        if self._http is None:
            self._connect(self.auth.fetch_token())

    def _connect(self, token: SalesforceToken) -> None:
        if self._http is not None:
            self._http.close()
        self._token = token
        self._http = ApiClient(
            token.instance_url,
            name="salesforce",
            headers={
                "Authorization": f"Bearer {token.access_token}",
                "Accept": "application/json",
            },
            secrets=[token.access_token],
            retry=RETRY,
            transport=self._transport,
            sleep=self._sleep,
            clock=self._clock,
        )

    def close(self) -> None:
        """Close both HTTP clients; a later call opens them again."""
        if self._http is not None:
            self._http.close()
            self._http = None
        self.auth.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API request. A 401 (INVALID_SESSION_ID: the session expired or was revoked)
        gets a new token and the same request once more; a second 401 is `CrmAuthError`."""
        self.open()
        assert self._http is not None
        self._requests += 1
        try:
            return self._http.request(method, path, **kwargs)
        except ApiError as exc:
            if exc.status != 401:
                raise self._translate(exc) from None
        log.info("salesforce: session expired (401); asking for a new token")
        self._connect(self.auth.fetch_token())
        self._requests += 1
        try:
            return self._http.request(method, path, **kwargs)
        except ApiError as exc:
            if exc.status == 401:
                raise CrmAuthError(
                    "Salesforce refused a fresh access token (HTTP 401 twice): the integration "
                    "user is inactive, frozen or lost API access, or the app's session policy "
                    f"revokes tokens. Check ABM_SALESFORCE_USERNAME / the app's run-as user "
                    f"({exc.reason}).",
                    status=401,
                ) from None
            raise self._translate(exc) from None

    def _translate(self, exc: ApiError) -> Exception:
        """Salesforce's error codes as our errors: the daily limit stops the run, a refusal
        names the permission, a missing field names the setting."""
        codes = {message.split(":", 1)[0].strip() for _, message in exc.errors}
        text = "; ".join(message for _, message in exc.errors) or exc.reason
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            return ApiError(
                "salesforce: the org's API request limit is used up (REQUEST_LIMIT_EXCEEDED: "
                f"{text}); stopped, try again later (the daily allowance is a rolling 24 hours)",
                status=exc.status,
                reason=f"API request limit used up ({text})"[:500],
                retryable=True,
                errors=exc.errors,
            )
        if exc.status == 403:
            return CrmAuthError(
                f"Salesforce refused the request (HTTP 403: {text}). Give the integration user "
                "the 'API Enabled' permission and read/edit access to Account and read access to "
                "Opportunity and Event.",
                status=403,
            )
        missing = _NO_COLUMN.search(text)
        if missing or (exc.status in (400, 404) and self.domain_field in text):
            name = missing.group(1) if missing else self.domain_field
            return ConfigError(
                f"Salesforce has no field {name} the integration user can see ({text[:300]}). "
                "Create it (see connectors/crm/salesforce.md) and give the user field-level "
                f"access, or set {DOMAIN_FIELD_SETTING} / {PREFIX_SETTING} to your org's names."
            )
        return exc

    # --- fields --------------------------------------------------------------------------

    def ensure_fields(self) -> list[str]:
        """Check, with one describe call, that the Account fields a push writes exist with
        types that hold our values and that the integration user may edit them. Custom fields
        are created by an admin in Setup (nothing is created here): raises `ConfigError`
        listing each field to create or fix; returns [] when all is in place."""
        body = self._call("GET", f"{self._data}/sobjects/Account/describe").json()
        found = {
            str(item.get("name", "")).lower(): item
            for item in body.get("fields") or []
            if isinstance(item, dict)
        }
        domain = FieldSpec(
            self.domain_field,
            "domain",
            "Text(255), External ID, Unique",
            frozenset({"string"}),
            253,
        )
        problems = []
        for spec in (domain, *self.fields):
            field = found.get(spec.name.lower())
            if field is None:
                problems.append(f"{spec.name}: missing; create it as {spec.create_as}")
                continue
            kind = field.get("type")
            if kind not in spec.types:
                problems.append(f"{spec.name}: is of type {kind}; it must be {spec.create_as}")
            elif spec.min_length and int(field.get("length") or 0) < spec.min_length:
                problems.append(
                    f"{spec.name}: holds {field.get('length')} characters; it needs "
                    f"{spec.min_length} ({spec.create_as})"
                )
            if not (field.get("createable") and field.get("updateable")):
                problems.append(
                    f"{spec.name}: the integration user cannot edit it; give Edit access in "
                    "its field-level security"
                )
        field = found.get(self.domain_field.lower())
        if field is not None and not (field.get("externalId") and field.get("unique")):
            problems.append(
                f"{self.domain_field}: must be marked External ID and Unique, so that a push "
                f"matches Accounts on it ({DOMAIN_FIELD_SETTING})"
            )
        if problems:
            raise ConfigError(
                "Salesforce Account fields a push needs are missing or wrong; an admin fixes "
                "them in Setup > Object Manager > Account > Fields & Relationships "
                "(connectors/crm/salesforce.md):\n- " + "\n- ".join(problems)
            )
        return []

    # --- push ----------------------------------------------------------------------------

    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        """Write these accounts onto their Salesforce Accounts, matched by the domain field.

        An account whose record id is known (`known_ids`) is updated by id, which also stamps
        the domain field on an Account sales created, and leaves its Name alone; the others
        are upserted on the domain field, with Name (required to create) set to the account's
        name or domain. Fewer than `bulk_threshold` go through sObject Collections, 200 a
        request; more through Bulk API 2.0. `requests` counts the API calls made."""
        result = WriteBackResult()
        rows, names = self._rows(accounts, result)
        if not rows:
            return result
        known = {
            d: str(known_ids[d])
            for d in rows
            if known_ids and _RECORD_ID.fullmatch(str(known_ids.get(d) or ""))
        }
        start = self._requests
        try:
            if len(rows) >= self.bulk_threshold:
                self._push_bulk(rows, names, known, result)
            else:
                self._push_collections(rows, names, known, result)
        finally:
            result.requests = self._requests - start
        log.info(
            "salesforce: %d accounts updated, %d created, %d failed in %d requests",
            result.updated,
            result.created,
            result.failed,
            result.requests,
        )
        return result

    def _rows(
        self, accounts: Sequence[Mapping[str, Any]], result: WriteBackResult
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Domain -> field API name -> value, for the valid rows (the last row of a domain
        wins), and domain -> Name for a create."""
        rows: dict[str, dict[str, Any]] = {}
        names: dict[str, str] = {}
        for index, account in enumerate(accounts):
            domain = domain_or_none(str(account.get("domain") or ""))
            if domain is None:
                key = str(account.get("domain") or "").strip() or f"<row {index}>"
                result.failures[key] = f"not a web domain: {account.get('domain')!r}"
                continue
            try:
                values = account_values(account)
            except ValueError as exc:
                result.failures[domain] = str(exc)
                rows.pop(domain, None)
                continue
            rows[domain] = {spec.name: values[spec.key] for spec in self.fields}
            names[domain] = (str(account.get("name") or "").strip() or domain)[:255]
            result.failures.pop(domain, None)
        return rows, names

    @staticmethod
    def _not_sent(domains: Sequence[str], reason: str, result: WriteBackResult) -> None:
        for domain in domains:
            result.failures[domain] = f"not sent: {reason}"

    @staticmethod
    def _failed(domains: Sequence[str], exc: ApiError, result: WriteBackResult) -> str | None:
        """Fail these domains with the request's error; returns why to stop sending when
        Salesforce is unavailable or out of API requests."""
        for domain in domains:
            result.failures[domain] = str(exc)[:500]
        return f"Salesforce unavailable ({exc.reason})" if exc.retryable else None

    @staticmethod
    def _outcome(domain: str, item: Any, result: WriteBackResult) -> None:
        """Count one SaveResult/UpsertResult: `success`, `id`, `created`, `errors`."""
        if isinstance(item, dict) and item.get("success") and item.get("id"):
            result.crm_ids[domain] = str(item["id"])
            if item.get("created"):
                result.created += 1
            else:
                result.updated += 1
        else:
            result.failures[domain] = _record_errors(item)

    def _push_collections(
        self,
        rows: Mapping[str, dict[str, Any]],
        names: Mapping[str, str],
        known: Mapping[str, str],
        result: WriteBackResult,
    ) -> None:
        """sObject Collections: update by id (PATCH .../composite/sobjects) for known ids,
        upsert on the domain field (PATCH .../composite/sobjects/Account/<field>) for the
        rest, `allOrNone: false` so that each record succeeds or fails alone."""
        by_id = [d for d in rows if d in known]
        by_domain = [d for d in rows if d not in known]
        batches = [
            (by_id[i : i + self.batch_size], True) for i in range(0, len(by_id), self.batch_size)
        ] + [
            (by_domain[i : i + self.batch_size], False)
            for i in range(0, len(by_domain), self.batch_size)
        ]
        stop: str | None = None
        for chunk, update in batches:
            if stop:
                self._not_sent(chunk, stop, result)
                continue
            records = []
            for domain in chunk:
                record: dict[str, Any] = {"attributes": {"type": "Account"}}
                if update:
                    record["id"] = known[domain]
                else:
                    record["Name"] = names[domain]
                record[self.domain_field] = domain
                record.update(rows[domain])
                records.append(record)
            path = f"{self._data}/composite/sobjects"
            if not update:
                path += f"/Account/{self.domain_field}"
            try:
                # keyed by id or by a unique external id: sending twice writes once
                response = self._call(
                    "PATCH",
                    path,
                    json={"allOrNone": False, "records": records},
                    repeatable=True,
                )
            except ApiError as exc:
                stop = self._failed(chunk, exc, result)
                continue
            try:
                outcomes = response.json()
            except ValueError:
                outcomes = []
            if not isinstance(outcomes, list):
                outcomes = []
            # results come back in the order of the records sent
            for index, domain in enumerate(chunk):
                self._outcome(domain, outcomes[index] if index < len(outcomes) else None, result)
        result.stopped = stop

    def _push_bulk(
        self,
        rows: Mapping[str, dict[str, Any]],
        names: Mapping[str, str],
        known: Mapping[str, str],
        result: WriteBackResult,
    ) -> None:
        """Bulk API 2.0: an `update` job for known ids, an `upsert` job on the domain field
        for the rest, each split only if its CSV would pass `bulk_max_bytes`."""
        columns = [spec.name for spec in self.fields]
        jobs: list[tuple[str, list[str], str]] = []
        for update in (True, False):
            domains = [d for d in rows if (d in known) == update]
            if not domains:
                continue
            head = ["Id", self.domain_field] if update else [self.domain_field, "Name"]
            header = _csv_line(head + columns)
            part: list[str] = []
            lines = [header]
            size = len(header.encode())
            for domain in domains:
                lead = [known[domain], domain] if update else [domain, names[domain]]
                line = _csv_line(lead + [rows[domain][c] for c in columns])
                if part and size + len(line.encode()) > self.bulk_max_bytes:
                    jobs.append(("update" if update else "upsert", part, "".join(lines)))
                    part, lines, size = [], [header], len(header.encode())
                part.append(domain)
                lines.append(line)
                size += len(line.encode())
            jobs.append(("update" if update else "upsert", part, "".join(lines)))
        stop: str | None = None
        for operation, domains, data in jobs:
            if stop:
                self._not_sent(domains, stop, result)
            else:
                stop = self._bulk_job(operation, domains, data, known, result)
        result.stopped = stop

    def _bulk_job(
        self,
        operation: str,
        domains: list[str],
        data: str,
        known: Mapping[str, str],
        result: WriteBackResult,
    ) -> str | None:
        """Create the job, upload the CSV, close it, wait for it, read its results. Returns
        why later jobs should not be sent, if anything."""
        jobs = f"{self._data}/jobs/ingest"
        spec: dict[str, Any] = {
            "object": "Account",
            "contentType": "CSV",
            "operation": operation,
            "lineEnding": "LF",
        }
        if operation == "upsert":
            spec["externalIdFieldName"] = self.domain_field
        try:
            job = self._call("POST", jobs, json=spec).json()
        except ApiError as exc:
            return self._failed(domains, exc, result)
        job_id = str(job.get("id") or "") if isinstance(job, dict) else ""
        if not _RECORD_ID.fullmatch(job_id):
            self._not_sent(domains, "Salesforce created no Bulk API job", result)
            return "Salesforce created no Bulk API job"
        try:
            self._call(
                "PUT",
                f"{jobs}/{job_id}/batches",
                content=data.encode("utf-8"),
                headers={"Content-Type": "text/csv"},
            )
            self._call("PATCH", f"{jobs}/{job_id}", json={"state": "UploadComplete"})
        except ApiError as exc:
            self._abort(job_id)
            return self._failed(domains, exc, result)
        try:
            info = self._wait_for(job_id)
        except ApiError as exc:
            return self._failed(domains, exc, result)
        state = str(info.get("state") or "")
        if state not in FINAL_JOB_STATES:
            reason = (
                f"Bulk API job {job_id} still {state or 'unknown'} after "
                f"{self.bulk_max_wait:.0f}s; Salesforce may still write these, and the next "
                "push sends them again"
            )
            self._not_sent(domains, reason, result)
            return reason
        sent = set(domains)
        id_to_domain = {known[d]: d for d in domains if d in known}
        failed = int(info.get("numberRecordsFailed") or 0)
        processed = int(info.get("numberRecordsProcessed") or 0)
        try:
            if failed:
                for row in self._csv_results(f"{jobs}/{job_id}/failedResults/"):
                    domain = self._row_domain(row, sent, id_to_domain)
                    if domain:
                        result.failures[domain] = (row.get("sf__Error") or "failed")[:500]
            if processed > failed:
                for row in self._csv_results(f"{jobs}/{job_id}/successfulResults/"):
                    domain = self._row_domain(row, sent, id_to_domain)
                    if not domain or domain in result.failures:
                        continue
                    if row.get("sf__Id"):
                        result.crm_ids[domain] = row["sf__Id"]
                    if str(row.get("sf__Created")).lower() == "true":
                        result.created += 1
                    else:
                        result.updated += 1
        except ApiError as exc:
            reported = set(result.crm_ids) | set(result.failures)
            return self._failed([d for d in domains if d not in reported], exc, result)
        error = str(info.get("errorMessage") or "").strip()
        unprocessed = f"not processed: Bulk API job {job_id} {state}" + (
            f" ({error})" if error else ""
        )
        for domain in domains:
            if domain not in result.crm_ids and domain not in result.failures:
                result.failures[domain] = unprocessed[:500]
        return unprocessed if state != "JobComplete" else None

    def _row_domain(
        self, row: Mapping[str, str], sent: set[str], id_to_domain: Mapping[str, str]
    ) -> str | None:
        """Which account a result row is: its domain column, else (update job) its id."""
        domain = domain_or_none(row.get(self.domain_field) or "")
        if domain in sent:
            return domain
        return id_to_domain.get(row.get("sf__Id") or row.get("Id") or "")

    def _wait_for(self, job_id: str) -> dict[str, Any]:
        """Poll the job until it ends or `bulk_max_wait` seconds of waiting have passed,
        backing off from `bulk_poll_first` to `bulk_poll_max` seconds between polls."""
        waited = 0.0
        delay = self.bulk_poll_first
        while True:
            info = self._call("GET", f"{self._data}/jobs/ingest/{job_id}").json()
            info = info if isinstance(info, dict) else {}
            if info.get("state") in FINAL_JOB_STATES or waited + delay > self.bulk_max_wait:
                return info
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, self.bulk_poll_max)

    def _csv_results(self, path: str) -> list[dict[str, str]]:
        response = self._call("GET", path, headers={"Accept": "text/csv"})
        return list(csv.DictReader(io.StringIO(response.text)))

    def _abort(self, job_id: str) -> None:
        """Best effort: an open job whose upload failed is aborted so it does not linger."""
        try:
            self._call("PATCH", f"{self._data}/jobs/ingest/{job_id}", json={"state": "Aborted"})
        except (ApiError, ConfigError) as exc:
            log.warning("salesforce: could not abort Bulk API job %s: %s", job_id, exc)

    # --- pull ----------------------------------------------------------------------------

    def soql(self, kind: PullKind, cursor: str | None) -> str:
        """The SOQL of one pull: changes since the cursor in `SystemModstamp, Id` order."""
        df = self.domain_field
        since = f"SystemModstamp >= {soql_datetime(cursor)}" if cursor else ""
        if kind == "accounts":
            select = (
                f"Id, {df}, Website, OwnerId, Owner.Email, Owner.Name, Owner.IsActive, "
                "SystemModstamp"
            )
            source, where = "Account", [since]
        elif kind == "deals":
            select = (
                "Id, Name, StageName, IsClosed, IsWon, Amount, AccountId, "
                f"Account.{df}, Account.Website, SystemModstamp"
            )
            source, where = "Opportunity", [since]
        elif kind == "meetings":
            # Who is polymorphic (Contact or Lead): TYPEOF reads each one's own Email. Child
            # events are invitees' copies of a group event: the parent is the meeting.
            select = (
                "Id, Subject, StartDateTime, TYPEOF Who WHEN Contact THEN Email "
                f"WHEN Lead THEN Email END, AccountId, Account.{df}, Account.Website, "
                "SystemModstamp"
            )
            source, where = "Event", ["IsChild = false", since]
        else:
            raise ValueError(f"unknown pull kind {kind!r}")
        clauses = " AND ".join(w for w in where if w)
        return (
            f"SELECT {select} FROM {source}"
            + (f" WHERE {clauses}" if clauses else "")
            + " ORDER BY SystemModstamp, Id"
        )

    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        """One page per query response, following `nextRecordsUrl`; each page's cursor is
        its last record's `SystemModstamp` (whole seconds, UTC), so it never passes a record
        not yet yielded."""
        path: str | None = f"{self._data}/query"
        params: dict[str, str] | None = {"q": self.soql(kind, cursor)}
        seen: set[str] = set()
        current = cursor or ""
        while path:
            start = self._requests
            body = self._call("GET", path, params=params).json()
            page = PullPage(kind=kind, records=[], cursor=current)
            for raw in body.get("records") or []:
                if not isinstance(raw, dict):
                    continue
                modified = parse_datetime(raw.get("SystemModstamp"))
                if modified is None:
                    page.skipped.append(f"{kind} record {raw.get('Id')}: no SystemModstamp")
                    continue
                current = modified.strftime("%Y-%m-%dT%H:%M:%SZ")
                record, why = self._record(kind, raw, modified)
                if record is None:
                    page.skipped.append(why)
                else:
                    page.records.append(record)
            page.cursor = current
            page.requests = self._requests - start
            yield page
            following = body.get("nextRecordsUrl")
            if body.get("done", True) or not following:
                break
            if following in seen:
                raise ApiError(f"salesforce: query pages loop at {following}", reason="page loop")
            seen.add(following)
            path, params = str(following), None

    def _domain_of(self, record: Mapping[str, Any] | None) -> str | None:
        """An Account's domain: the domain field, else its Website's host."""
        if not isinstance(record, dict):
            return None
        raw = str(record.get(self.domain_field) or "").strip()
        if raw:
            return raw
        return domain_or_none(str(record.get("Website") or ""))

    def _record(
        self, kind: PullKind, raw: Mapping[str, Any], modified: datetime
    ) -> tuple[CrmRecord | None, str]:
        """A query record as ours, or None and why it cannot be used."""
        record_id = str(raw.get("Id") or "")
        if kind == "accounts":
            domain = self._domain_of(raw)
            if domain is None:
                return None, f"Account {record_id}: no {self.domain_field} and no Website"
            owner_raw = raw.get("Owner")
            owner = None
            if raw.get("OwnerId"):
                owner_raw = owner_raw if isinstance(owner_raw, dict) else {}
                owner = CrmOwner(
                    str(raw["OwnerId"]),
                    owner_raw.get("Email") or None,
                    owner_raw.get("Name"),
                    active=owner_raw.get("IsActive") is not False,
                )
            return CrmAccount(record_id, domain, owner, modified), ""
        if kind == "deals":
            if not raw.get("AccountId"):
                return None, f"Opportunity {record_id} ({raw.get('Name')}): no Account"
            domain = self._domain_of(raw.get("Account"))
            if domain is None:
                return None, (
                    f"Opportunity {record_id} ({raw.get('Name')}): its Account "
                    f"{raw.get('AccountId')} has no {self.domain_field} and no Website"
                )
            if not raw.get("StageName"):
                return None, f"Opportunity {record_id}: no StageName"
            amount = raw.get("Amount")
            return CrmDeal(
                crm_id=record_id,
                name=raw.get("Name"),
                stage=str(raw["StageName"]),
                pipeline=None,
                closed=raw.get("IsClosed") if isinstance(raw.get("IsClosed"), bool) else None,
                won=raw.get("IsWon") if isinstance(raw.get("IsWon"), bool) else None,
                amount=float(amount) if isinstance(amount, (int, float)) else None,
                domains=(domain,),
                modified_at=modified,
            ), ""
        who = raw.get("Who")
        email = who.get("Email") if isinstance(who, dict) else None
        domain = self._domain_of(raw.get("Account"))
        if not email and domain is None:
            return None, (
                f"Event {record_id} ({raw.get('Subject')}): no contact or lead with an email "
                "and no Account with a domain"
            )
        return CrmMeeting(
            crm_id=record_id,
            title=raw.get("Subject"),
            start_at=parse_datetime(raw.get("StartDateTime")),
            outcome=None,
            attendee_emails=(str(email),) if email else (),
            domains=(domain,) if domain else (),
            modified_at=modified,
        ), ""

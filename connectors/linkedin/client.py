"""LinkedIn Marketing API: matched audiences, ad analytics by company and lead-gen forms.

Two modes behind one interface. `api` calls the versioned REST API through the shared
`ApiClient` (retries, Retry-After, rate limit, redaction). `sandbox` makes no call: it writes
each request it would send, token redacted, as a numbered JSON file. Writes (audience
uploads) get LinkedIn's acknowledgement; reads (analytics, lead forms) are answered only from
the files the user put in the sandbox files folder (see `connectors/linkedin/sandbox.py`),
filtered by the dates asked for as LinkedIn would, and then parsed by the same code as real
answers. With no files a read answers nothing: the sandbox never invents data. Both modes
send exactly the same sequence of requests.

Personal data leaves only as SHA-256 hashes of normalised emails; every returned row carries
a stable `provider_event_id` so that a re-run can be de-duplicated by the caller. The facts
and sources behind the request shapes are in connectors/linkedin/README.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from connectors.http import REDACTED, ApiClient, ApiError, Closing, RetryPolicy, redact
from connectors.linkedin.sandbox import (
    ANALYTICS_FILE,
    LEADS_FILE,
    Check,
    analytics_day,
    check_analytics_element,
    check_lead_element,
    read_sandbox_file,
)
from core.domains import domain_or_none
from core.errors import ConfigError
from core.settings import LINKEDIN_SOURCE_PLATFORM, LINKEDIN_VERSION

log = logging.getLogger(__name__)

Mode = Literal["sandbox", "api"]

DEFAULT_BASE_URL = "https://api.linkedin.com"
# Versions are monthly (YYYYMM) and each is supported for about a year; a missing or sunset
# version is refused (426), so this is a setting (ABM_LINKEDIN_VERSION), not a constant.
DEFAULT_VERSION = LINKEDIN_VERSION
DEFAULT_SOURCE_PLATFORM = LINKEDIN_SOURCE_PLATFORM
VERSIONING_DOCS = "https://learn.microsoft.com/en-us/linkedin/marketing/versioning"
RESTLI_PROTOCOL_VERSION = "2.0.0"
# Reported ceiling for one BATCH_CREATE call to /dmpSegments/{id}/users or /companies; the
# default stays well below it so that one failed call replays little.
MAX_BATCH_SIZE = 5000
DEFAULT_BATCH_SIZE = 1000
# "After you create a DMP segment, wait 5 seconds for it to become available."
SEGMENT_READY_SECONDS = 5.0
SEGMENT_NOT_READY_RETRIES = 3
# adAnalytics has no pagination and truncates large answers: ask for short date windows.
ANALYTICS_WINDOW_DAYS = 30
LEADS_PAGE_SIZE = 100
LEADS_MAX_PAGES = 1000
# Well below the documented 300 (companies) and 600 (users) requests a minute per member.
REQUESTS_PER_SECOND = 4.0
EMAIL_FIELDS = ("WORK_EMAIL", "EMAIL")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9]+")


def hash_email(email: str) -> str:
    """SHA-256 hex of the trimmed, lowercased address: LinkedIn's SHA256_EMAIL id type.

    Normalising first matters: " Jane@Acme.com" and "jane@acme.com" must hash the same or
    the member is not matched."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def account_urn(ad_account: str) -> str:
    """`urn:li:sponsoredAccount:<id>` from the numeric id or the URN itself; ConfigError
    naming ABM_LINKEDIN_AD_ACCOUNT for anything else."""
    value = ad_account.strip()
    if value.isdigit():
        return f"urn:li:sponsoredAccount:{value}"
    if re.fullmatch(r"urn:li:sponsoredAccount:\d+", value):
        return value
    raise ConfigError(
        f"ABM_LINKEDIN_AD_ACCOUNT={ad_account!r}: use the numeric ad account id "
        "or urn:li:sponsoredAccount:<id>"
    )


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()


def _encode(value: str) -> str:
    """Rest.li 2.0 wants URNs inside query values percent-encoded (`:` as `%3A`)."""
    return quote(value, safe="")


def _restli_date(day: date) -> str:
    return f"(year:{day.year},month:{day.month},day:{day.day})"


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("use a timezone-aware datetime (UTC) so the cursor is unambiguous")
    return int(moment.timestamp() * 1000)


@dataclass
class _Reply:
    """A response reduced to what the connector reads: JSON body and headers."""

    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class LinkedInConfigError(ConfigError):
    """LinkedIn refused a request for a reason only a setting can fix (a sunset version, a
    sourcePlatform it does not know, a dead token): retrying the same request cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LinkedInAuthError(LinkedInConfigError):
    """LinkedIn refused the credentials: expired, revoked or missing a permission."""


class LinkedInConnector(Closing):
    """The LinkedIn channel: audiences out (hashed), analytics and leads in.

    `mode="api"` needs `access_token` (sent only as `Authorization: Bearer`) and
    `ad_account` (numeric id or `urn:li:sponsoredAccount:...`); audience uploads also need
    a `source_platform` (`LIST_UPLOAD` for an advertiser's own lists, or the value LinkedIn
    assigned a DMP partner when it granted Audiences API access).
    `mode="sandbox"` needs `sandbox_dir` (where its requests are written) and reads
    analytics and leads only from the files in `sandbox_files` (none when None); lines it
    could not use land in `sandbox_problems`, plain-words remarks in `sandbox_notes`.
    `transport`, `sleep` and `clock` are test seams.
    """

    def __init__(
        self,
        mode: Mode = "sandbox",
        *,
        sandbox_dir: Path | None = None,
        sandbox_files: Path | None = None,
        access_token: str | None = None,
        ad_account: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        version: str = DEFAULT_VERSION,
        source_platform: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if mode not in ("sandbox", "api"):
            raise ConfigError(f"ABM_LINKEDIN_MODE={mode}: use sandbox or api")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        if not re.fullmatch(r"\d{6}", version):
            raise ConfigError(
                f"ABM_LINKEDIN_VERSION={version!r}: use a LinkedIn API version as YYYYMM, "
                f"e.g. {DEFAULT_VERSION}"
            )
        self.mode: Mode = mode
        self.version = version
        self.batch_size = batch_size
        self.source_platform = source_platform
        self._token = access_token or ""
        self._sleep = sleep
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._http: ApiClient | None = None
        self._sandbox_dir = sandbox_dir
        self._sandbox_files = sandbox_files
        self._next_file: int | None = None
        self.sandbox_problems: list[str] = []
        self.sandbox_notes: list[str] = []
        self.account_urn = account_urn(ad_account) if ad_account else None
        if mode == "sandbox":
            if sandbox_dir is None:
                raise ConfigError("LinkedIn sandbox mode needs a folder for its request files")
            self.account_urn = self.account_urn or "urn:li:sponsoredAccount:0"
            return
        if not access_token:
            raise ConfigError(
                "ABM_LINKEDIN_MODE=api needs ABM_LINKEDIN_ACCESS_TOKEN (an OAuth access token "
                "with rw_dmp_segments, r_ads_reporting and r_marketing_leadgen_automation)"
            )
        if not ad_account:
            raise ConfigError("ABM_LINKEDIN_MODE=api needs ABM_LINKEDIN_AD_ACCOUNT")
        self._http = ApiClient(
            self._base_url,
            name="linkedin",
            headers=self._headers(access_token),
            secrets=[access_token],
            retry=RetryPolicy(),
            rate_per_second=REQUESTS_PER_SECOND,
            burst=int(REQUESTS_PER_SECOND),
            transport=transport,
            sleep=sleep,
        )

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "LinkedIn-Version": self.version,
            "X-Restli-Protocol-Version": RESTLI_PROTOCOL_VERSION,
            "Accept": "application/json",
        }

    # --- matched audiences -------------------------------------------------------------

    def upload_company_audience(self, name: str, domains: list[str]) -> str:
        """Create (or reuse) a company DMP segment named `name` and add `domains` to it.

        Returns the DMP segment id. Re-running with the same name adds to the same segment:
        LinkedIn answers 201 for an id that is already there, so a replayed batch is harmless.
        """
        cleaned = list(dict.fromkeys(d for d in map(domain_or_none, domains) if d))
        elements = [{"action": "ADD", "companyWebsiteDomain": d} for d in cleaned]
        return self._upload_segment("COMPANY", "companies", name, elements)

    def upload_contact_audience(self, name: str, emails: list[str]) -> str:
        """Create (or reuse) a user DMP segment named `name` and add the contacts to it.

        Only `hash_email(email)` leaves this process: LinkedIn matches SHA256_EMAIL ids to
        members without ever seeing an address."""
        hashes = list(dict.fromkeys(hash_email(e) for e in emails if "@" in e))
        skipped = len(emails) - len(hashes)
        if skipped:
            log.info("linkedin: %d empty, invalid or repeated emails not uploaded", skipped)
        elements = [
            {"action": "ADD", "userIds": [{"idType": "SHA256_EMAIL", "idValue": h}]} for h in hashes
        ]
        return self._upload_segment("USER", "users", name, elements)

    def _upload_segment(
        self, kind: Literal["USER", "COMPANY"], resource: str, name: str, elements: list[dict]
    ) -> str:
        if not name.strip():
            raise ValueError("an audience needs a name")
        platform = self.source_platform or ("ABM_SANDBOX" if self.mode == "sandbox" else None)
        if not platform:
            raise ConfigError(
                "LinkedIn audience uploads need a sourcePlatform: set "
                f"ABM_LINKEDIN_SOURCE_PLATFORM ({DEFAULT_SOURCE_PLATFORM} for your own lists, "
                "or the value LinkedIn assigned your app when it granted Audiences API access)"
            )
        source_id = "abm-" + _digest(kind, name.strip()).hex()[:24]
        segment_id, created = self._find_or_create_segment(kind, name.strip(), source_id, platform)
        path = f"/rest/dmpSegments/{segment_id}/{resource}"
        for start in range(0, len(elements), self.batch_size):
            batch = elements[start : start + self.batch_size]
            reply = self._batch_create(path, batch, created and start == 0)
            results = (reply.body or {}).get("elements", [])
            rejected = [r for r in results if not 200 <= int(r.get("status", 201)) < 300]
            if rejected:
                log.warning(
                    "linkedin: segment %s: %d of %d %s rejected by LinkedIn",
                    segment_id,
                    len(rejected),
                    len(batch),
                    resource,
                )
        return segment_id

    def _find_or_create_segment(
        self, kind: str, name: str, source_id: str, platform: str
    ) -> tuple[str, bool]:
        """The segment this name maps to, creating it once; True when it was just created."""
        query = (
            f"q=account&account={_encode(str(self.account_urn))}"
            f"&sourceSegmentId={_encode(source_id)}&sourcePlatform={_encode(platform)}"
        )
        found = self._send(
            "GET", "/rest/dmpSegments", query=query, sandbox_reply=_Reply({"elements": []})
        )
        for element in (found.body or {}).get("elements", []):
            if element.get("type", kind) == kind and element.get("id") is not None:
                return str(element["id"]), False
        body = {
            "name": name,
            "sourcePlatform": platform,
            "sourceSegmentId": source_id,
            "account": self.account_urn,
            "accessPolicy": "PRIVATE",
            "type": kind,
            "destinations": [{"destination": "LINKEDIN"}],
        }
        sandbox_id = str(int.from_bytes(_digest("segment", kind, name)[:5], "big"))
        reply = self._send(
            "POST",
            "/rest/dmpSegments",
            body=body,
            sandbox_reply=_Reply(headers={"x-linkedin-id": sandbox_id}),
        )
        segment_id = self._created_id(reply)
        if self.mode == "api":
            self._sleep(SEGMENT_READY_SECONDS)
        return segment_id, True

    @staticmethod
    def _created_id(reply: _Reply) -> str:
        headers = {k.lower(): v for k, v in reply.headers.items()}
        for name in ("x-linkedin-id", "x-restli-id"):
            if headers.get(name):
                return headers[name].rsplit(":", 1)[-1]
        if headers.get("location"):
            return headers["location"].rstrip("/").rsplit("/", 1)[-1]
        if isinstance(reply.body, dict) and reply.body.get("id") is not None:
            return str(reply.body["id"])
        raise ApiError(
            "linkedin: POST /rest/dmpSegments: created, but the answer named no segment id",
            status=201,
            reason="no segment id in the response",
            retryable=False,
        )

    def _batch_create(self, path: str, batch: list[dict], just_created: bool) -> _Reply:
        """One BATCH_CREATE call; a segment created seconds ago may still answer 404."""
        sandbox_reply = _Reply({"elements": [{"status": 201} for _ in batch]})
        attempts = SEGMENT_NOT_READY_RETRIES if just_created else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._send(
                    "POST",
                    path,
                    body={"elements": batch},
                    extra_headers={"X-RestLi-Method": "BATCH_CREATE"},
                    sandbox_reply=sandbox_reply,
                )
            except ApiError as exc:
                if exc.status != 404 or attempt == attempts:
                    raise
                self._sleep(SEGMENT_READY_SECONDS * attempt)
        raise AssertionError("unreachable")

    # --- ad analytics ------------------------------------------------------------------

    def ad_analytics_by_company(
        self, start: date, end: date, domains: dict[str, str] | None = None
    ) -> list[dict]:
        """Daily impressions and clicks per member company, `start` to `end` inclusive.

        `domains` maps LinkedIn organization URN -> account domain. LinkedIn reports
        companies only as organization URNs, so rows of organizations outside the map are
        dropped; with no map every row comes back with `domain: None` (useful to build the
        map, or to map and count unknown organizations yourself). LinkedIn approximates
        these demographic figures for privacy, so a re-read of the same day may differ
        slightly: upsert on `provider_event_id` rather than insert-if-absent.
        """
        if end < start:
            raise ValueError("end is before start")
        stored = [
            (day, e)
            for e in self._sandbox_elements(ANALYTICS_FILE, check_analytics_element)
            if (day := analytics_day(e)) is not None
        ]
        answered = 0
        rows: list[dict] = []
        for window_start, window_end in _windows(start, end, ANALYTICS_WINDOW_DAYS):
            query = (
                "q=analytics&pivot=MEMBER_COMPANY&timeGranularity=DAILY"
                f"&dateRange=(start:{_restli_date(window_start)},end:{_restli_date(window_end)})"
                f"&accounts=List({_encode(str(self.account_urn))})"
                "&fields=dateRange,pivotValues,impressions,clicks"
            )
            in_window = [e for day, e in stored if window_start <= day <= window_end]
            answered += len(in_window)
            reply = self._send(
                "GET",
                "/rest/adAnalytics",
                query=query,
                sandbox_reply=_Reply({"elements": in_window}),
            )
            rows.extend(self._analytics_rows(reply.body, domains))
        if len(stored) > answered:
            self._note(
                ANALYTICS_FILE,
                f"{_count(len(stored) - answered, 'row')} dated outside {start} to {end}, the "
                "days this sync asked LinkedIn for: not pulled",
            )
        rows.sort(key=lambda r: (r["date"], r["domain"] or "", r["organization"]))
        return rows

    @staticmethod
    def _analytics_rows(body: Any, domains: dict[str, str] | None) -> Iterator[dict]:
        unmapped = 0
        for element in (body or {}).get("elements", []):
            pivots = element.get("pivotValues") or [element.get("pivotValue")]
            organization = pivots[0] if pivots and pivots[0] else None
            day = (element.get("dateRange") or {}).get("start")
            if not organization or not day:
                continue
            domain = None
            if domains is not None:
                domain = domains.get(organization)
                if domain is None:
                    unmapped += 1
                    continue
            when = date(int(day["year"]), int(day["month"]), int(day["day"]))
            yield {
                "domain": domain,
                "date": when,
                "impressions": int(element.get("impressions") or 0),
                "clicks": int(element.get("clicks") or 0),
                "organization": organization,
                "provider_event_id": f"linkedin:ad_analytics:{organization}:{when.isoformat()}",
            }
        if unmapped:
            log.info("linkedin: %d analytics rows for organizations not in the map", unmapped)

    # --- lead-gen forms ----------------------------------------------------------------

    def lead_form_responses(self, since: datetime, until: datetime | None = None) -> list[dict]:
        """Sponsored lead-gen form submissions in [since, until) (until: now), oldest first.

        Pass the stored cursor as `since`; rows at the boundary may come back again and
        their `provider_event_id` (LinkedIn's response id) lets the caller skip them.
        LinkedIn keeps responses for 365 days. Test leads are left out."""
        until = until or self._clock()
        start_ms, end_ms = _epoch_ms(since), _epoch_ms(until)
        if end_ms <= start_ms:
            return []
        base_query = (
            f"q=owner&owner=(sponsoredAccount:{_encode(str(self.account_urn))})"
            "&leadType=(leadType:SPONSORED)&limitedToTestLeads=false"
            f"&submittedAtTimeRange=(start:{start_ms},end:{end_ms})"
            "&fields=id,submittedAt,testLead,versionedLeadGenFormUrn,formResponse,"
            "form:(id,name,content)"
        )
        answer = self._sandbox_leads(start_ms, end_ms, since, until)
        rows: list[dict] = []
        start = 0
        for _ in range(LEADS_MAX_PAGES):
            page = answer[start : start + LEADS_PAGE_SIZE]
            sandbox_reply = _Reply(
                {
                    "elements": page,
                    "paging": {"start": start, "count": LEADS_PAGE_SIZE, "total": len(answer)},
                }
            )
            query = f"{base_query}&count={LEADS_PAGE_SIZE}&start={start}"
            reply = self._send(
                "GET", "/rest/leadFormResponses", query=query, sandbox_reply=sandbox_reply
            )
            body = reply.body or {}
            elements = body.get("elements", [])
            rows.extend(r for r in map(_lead_row, elements) if r is not None)
            start += len(elements)
            total = (body.get("paging") or {}).get("total")
            if len(elements) < LEADS_PAGE_SIZE or (total is not None and start >= int(total)):
                break
        unique = {row["provider_event_id"]: row for row in rows}
        return sorted(unique.values(), key=lambda r: (r["submitted_at"], r["provider_event_id"]))

    def _sandbox_leads(
        self, start_ms: int, end_ms: int, since: datetime, until: datetime
    ) -> list[dict]:
        """The sandbox file's leads LinkedIn would answer for [start_ms, end_ms), oldest first."""
        stored = self._sandbox_elements(LEADS_FILE, check_lead_element)
        tests = [e for e in stored if e.get("testLead")]
        real = [e for e in stored if not e.get("testLead")]
        answer = [e for e in real if start_ms <= e["submittedAt"] < end_ms]
        if tests:
            self._note(
                LEADS_FILE,
                f"{_count(len(tests), 'test lead')} (testLead: true) left out, as LinkedIn "
                "leaves them out",
            )
        if len(real) > len(answer):
            self._note(
                LEADS_FILE,
                f"{_count(len(real) - len(answer), 'lead')} submitted outside "
                f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}"
                ", the time this sync asked LinkedIn for: not pulled",
            )
        return sorted(answer, key=lambda e: (e["submittedAt"], str(e["id"])))

    # --- sandbox files -----------------------------------------------------------------

    def _sandbox_elements(self, name: str, check: Check) -> list[dict]:
        """The usable elements of one sandbox file; none in api mode or without the file."""
        if self.mode != "sandbox" or self._sandbox_files is None:
            return []
        path = self._sandbox_files / name
        if not path.is_file():
            return []
        found = read_sandbox_file(path, check)
        self.sandbox_problems.extend(found.problems)
        return found.elements

    def _note(self, name: str, text: str) -> None:
        assert self._sandbox_files is not None
        self.sandbox_notes.append(f"{self._sandbox_files / name}: {text}")

    # --- transport ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: Any = None,
        extra_headers: Mapping[str, str] | None = None,
        sandbox_reply: _Reply,
    ) -> _Reply:
        """Send (api), or record and answer with `sandbox_reply` (sandbox), one request."""
        target = f"{path}?{query}" if query else path
        if self._http is None:
            self._record(method, target, body, extra_headers or {})
            return sandbox_reply
        kwargs: dict[str, Any] = {"headers": dict(extra_headers or {})}
        if body is not None:
            kwargs["json"] = body
        try:
            response = self._http.request(method, target, **kwargs)
        except ApiError as exc:
            refusal = self._configuration_error(exc, path)
            if refusal is not None:
                raise refusal from None
            raise
        parsed = response.json() if response.content else None
        return _Reply(parsed, dict(response.headers))

    def _configuration_error(self, exc: ApiError, path: str) -> LinkedInConfigError | None:
        """The setting to fix when LinkedIn's answer is one a retry cannot change: 401/403
        (the token), 426 (a version LinkedIn no longer serves) or 400 to the DMP segment
        finder or create call, whose every field comes from settings; None otherwise."""
        if exc.status in (401, 403):
            return self._auth_error(exc)
        if exc.status == 426:
            return LinkedInConfigError(
                f"LinkedIn no longer serves API version {self.version} (HTTP 426: "
                f"{exc.reason}). Set ABM_LINKEDIN_VERSION to a version from the last 12 "
                f"months (YYYYMM), see {VERSIONING_DOCS}",
                status=426,
            )
        if exc.status == 400 and path == "/rest/dmpSegments":
            return LinkedInConfigError(
                f"LinkedIn refused to find or create the audience segment (HTTP 400: "
                f"{exc.reason}). Check ABM_LINKEDIN_SOURCE_PLATFORM={self.source_platform} "
                "(the sourcePlatform LinkedIn gave you; LIST_UPLOAD for your own lists) and "
                f"ABM_LINKEDIN_AD_ACCOUNT ({self.account_urn})",
                status=400,
            )
        return None

    def _auth_error(self, exc: ApiError) -> LinkedInAuthError:
        if exc.status == 401:
            return LinkedInAuthError(
                "LinkedIn rejected the access token (HTTP 401: expired, revoked or invalid). "
                "Refresh ABM_LINKEDIN_ACCESS_TOKEN: member access tokens last 60 days; get a "
                "new one with a refresh token or by signing in to the LinkedIn app again.",
                status=401,
            )
        return LinkedInAuthError(
            "LinkedIn refused access (HTTP 403). The token needs rw_dmp_segments (audiences), "
            "r_ads_reporting (analytics) or r_marketing_leadgen_automation (leads), and its "
            f"member a role above VIEWER on {self.account_urn}. Refresh "
            "ABM_LINKEDIN_ACCESS_TOKEN after granting them.",
            status=403,
        )

    def _record(
        self, method: str, target: str, body: Any, extra_headers: Mapping[str, str]
    ) -> Path:
        """Write one would-be request as the next numbered JSON file in the sandbox folder."""
        assert self._sandbox_dir is not None
        folder = self._sandbox_dir
        folder.mkdir(parents=True, exist_ok=True)
        if self._next_file is None:
            numbers = [
                int(m.group(1)) for p in folder.glob("*.json") if (m := re.match(r"(\d+)-", p.name))
            ]
            self._next_file = max(numbers, default=0) + 1
        headers = {**self._headers(REDACTED), **extra_headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
        record = {
            "method": method,
            "url": f"{self._base_url}{target}",
            "path": target,
            "headers": headers,
            "json": body,
        }
        text = redact(json.dumps(record, indent=2, ensure_ascii=False), [self._token]) + "\n"
        resource = _SAFE_NAME.sub("-", target.split("?", 1)[0].removeprefix("/rest/")).strip("-")
        while True:
            path = folder / f"{self._next_file:05d}-{method}-{resource}.json"
            self._next_file += 1
            try:
                with path.open("x", encoding="utf-8") as handle:
                    handle.write(text)
                return path
            except FileExistsError:
                continue

    def close(self) -> None:
        """Close the pooled HTTP connections (api mode)."""
        if self._http is not None:
            self._http.close()


def _windows(start: date, end: date, days: int) -> Iterator[tuple[date, date]]:
    current = start
    while current <= end:
        last = min(end, current + timedelta(days=days - 1))
        yield current, last
        current = last + timedelta(days=1)


def _answer_text(answer: Mapping[str, Any]) -> str | None:
    details = answer.get("answerDetails") or {}
    text = (details.get("textQuestionAnswer") or {}).get("answer")
    return str(text).strip() if text is not None else None


def _lead_row(element: Mapping[str, Any]) -> dict | None:
    """One lead-form response as a plain row, or None for a test lead or an odd element."""
    if element.get("testLead") or element.get("id") is None or element.get("submittedAt") is None:
        return None
    form = element.get("form") or {}
    fields_by_question = {
        q.get("questionId"): q.get("predefinedField")
        for q in ((form.get("content") or {}).get("questions") or [])
    }
    values: dict[str, str] = {}
    for answer in (element.get("formResponse") or {}).get("answers") or []:
        predefined = fields_by_question.get(answer.get("questionId"))
        text = _answer_text(answer)
        if predefined and text:
            values.setdefault(predefined, text)
    email = next((values[f].lower() for f in EMAIL_FIELDS if values.get(f)), None)
    domain = domain_or_none(email.rpartition("@")[2]) if email and "@" in email else None
    submitted = datetime.fromtimestamp(int(element["submittedAt"]) / 1000, tz=UTC)
    return {
        "provider_event_id": f"linkedin:lead:{element['id']}",
        "submitted_at": submitted,
        "email": email,
        "first_name": values.get("FIRST_NAME"),
        "last_name": values.get("LAST_NAME"),
        "title": values.get("JOB_TITLE"),
        "company_domain": domain,
        "form": form.get("name") or element.get("versionedLeadGenFormUrn"),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

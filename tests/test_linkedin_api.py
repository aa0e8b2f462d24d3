"""LinkedIn connector in api mode, tested at the wire with respx: the versioned headers on
every request, hashes and never addresses, a clear message for a dead token, and 429s
retried by the shared client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
import respx

from connectors.linkedin import LinkedInAuthError, LinkedInConnector, hash_email
from connectors.linkedin import client as linkedin_client
from core.errors import ConfigError

BASE = "https://api.linkedin.com"
TOKEN = "tok-3xAmPle-S3cret"
ACCOUNT = "urn:li:sponsoredAccount:123"
EMAILS = [f"Person.{i}@Example{i % 7}.com " for i in range(2500)]


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def api(sleeps: list[float]) -> Iterator[LinkedInConnector]:
    connector = LinkedInConnector(
        "api",
        access_token=TOKEN,
        ad_account="123",
        source_platform="ABM_TEST",
        sleep=sleeps.append,
        clock=lambda: datetime(2026, 3, 1, tzinfo=UTC),
    )
    yield connector
    connector.close()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def _segment_routes(router: respx.MockRouter, existing: list[dict] | None = None) -> None:
    router.get("/rest/dmpSegments", name="find").respond(200, json={"elements": existing or []})
    router.post("/rest/dmpSegments", name="create").respond(
        201, headers={"x-linkedin-id": "555", "Location": "/rest/dmpSegments/555"}
    )


def _batch_reply(request: httpx.Request) -> httpx.Response:
    elements = json.loads(request.content)["elements"]
    return httpx.Response(200, json={"elements": [{"status": 201} for _ in elements]})


def test_every_request_carries_the_versioned_headers(
    api: LinkedInConnector, router: respx.MockRouter
) -> None:
    _segment_routes(router)
    router.post("/rest/dmpSegments/555/companies").mock(side_effect=_batch_reply)
    router.get("/rest/adAnalytics").respond(200, json={"elements": []})

    api.upload_company_audience("Tier 1 accounts", ["acme.com"])
    api.ad_analytics_by_company(date(2026, 1, 1), date(2026, 1, 2), {})

    assert len(router.calls) == 4
    for call in router.calls:
        headers = call.request.headers
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["LinkedIn-Version"] == linkedin_client.DEFAULT_VERSION
        assert headers["X-Restli-Protocol-Version"] == "2.0.0"
    batch = router.calls[2].request
    assert batch.headers["X-RestLi-Method"] == "BATCH_CREATE"
    assert json.loads(batch.content) == {
        "elements": [{"action": "ADD", "companyWebsiteDomain": "acme.com"}]
    }


def test_contact_audience_sends_only_hashes_in_batches(
    api: LinkedInConnector,
    router: respx.MockRouter,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _segment_routes(router)
    users = router.post("/rest/dmpSegments/555/users").mock(side_effect=_batch_reply)

    assert api.upload_contact_audience("Tier 1 committee", EMAILS) == "555"

    assert users.call_count == 3
    sent = []
    for call in users.calls:
        for element in json.loads(call.request.content)["elements"]:
            assert element["action"] == "ADD"
            assert [i["idType"] for i in element["userIds"]] == ["SHA256_EMAIL"]
            sent.append(element["userIds"][0]["idValue"])
    assert sent == [hash_email(e) for e in EMAILS]
    create = json.loads(router.routes["create"].calls[0].request.content)
    assert create["type"] == "USER"
    assert create["account"] == ACCOUNT
    assert create["sourcePlatform"] == "ABM_TEST"
    assert sleeps[0] == linkedin_client.SEGMENT_READY_SECONDS

    wire = [
        str(c.request.url) + c.request.content.decode() + str(c.request.headers)
        for c in router.calls
    ]
    for email in EMAILS:
        normalised = email.strip().lower()
        assert not any(normalised in text or email.strip() in text for text in wire)
        assert normalised not in caplog.text
    assert TOKEN not in caplog.text


def test_an_existing_segment_is_reused_without_creating_or_waiting(
    api: LinkedInConnector, router: respx.MockRouter, sleeps: list[float]
) -> None:
    _segment_routes(router, existing=[{"id": 777, "type": "USER", "name": "Tier 1 committee"}])
    users = router.post("/rest/dmpSegments/777/users").mock(side_effect=_batch_reply)

    assert api.upload_contact_audience("Tier 1 committee", ["jane@acme.com"]) == "777"

    assert not router.routes["create"].called
    assert users.call_count == 1
    assert sleeps == []
    find = router.routes["find"].calls[0].request.url
    assert "account=urn%3Ali%3AsponsoredAccount%3A123" in str(find)
    assert "sourcePlatform=ABM_TEST" in str(find)


def test_a_segment_not_ready_yet_is_retried_after_a_wait(
    api: LinkedInConnector, router: respx.MockRouter, sleeps: list[float]
) -> None:
    _segment_routes(router)
    users = router.post("/rest/dmpSegments/555/users").mock(
        side_effect=[httpx.Response(404), _batch_reply]
    )

    assert api.upload_contact_audience("New list", ["jane@acme.com"]) == "555"

    assert users.call_count == 2
    assert sleeps == [linkedin_client.SEGMENT_READY_SECONDS] * 2


def test_401_asks_for_a_fresh_token_without_showing_it(
    api: LinkedInConnector, router: respx.MockRouter
) -> None:
    router.get("/rest/adAnalytics").respond(
        401,
        json={
            "status": 401,
            "serviceErrorCode": 65601,
            "code": "EXPIRED_ACCESS_TOKEN",
            "message": "The token used in the request has expired",
        },
    )

    with pytest.raises(LinkedInAuthError) as caught:
        api.ad_analytics_by_company(date(2026, 1, 1), date(2026, 1, 1), {})

    message = str(caught.value)
    assert "ABM_LINKEDIN_ACCESS_TOKEN" in message
    assert "401" in message
    assert TOKEN not in message
    assert caught.value.status == 401
    assert caught.value.__cause__ is None
    assert len(router.calls) == 1


def test_429_then_200_is_retried_by_the_shared_client(
    api: LinkedInConnector, router: respx.MockRouter, sleeps: list[float]
) -> None:
    org = "urn:li:organization:1001"
    element = {
        "pivotValues": [org],
        "dateRange": {
            "start": {"year": 2026, "month": 1, "day": 2},
            "end": {"year": 2026, "month": 1, "day": 2},
        },
        "impressions": 40,
        "clicks": 3,
    }
    route = router.get("/rest/adAnalytics").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json={"elements": [element]}),
        ]
    )

    rows = api.ad_analytics_by_company(date(2026, 1, 1), date(2026, 1, 3), {org: "acme.com"})

    assert route.call_count == 2
    assert 2.0 in sleeps
    assert rows == [
        {
            "domain": "acme.com",
            "date": date(2026, 1, 2),
            "impressions": 40,
            "clicks": 3,
            "organization": org,
            "provider_event_id": f"linkedin:ad_analytics:{org}:2026-01-02",
        }
    ]


def test_analytics_query_and_urn_mapping(api: LinkedInConnector, router: respx.MockRouter) -> None:
    def day(org: str, d: int, impressions: int) -> dict:
        when = {"year": 2026, "month": 2, "day": d}
        return {
            "pivotValues": [org],
            "dateRange": {"start": when, "end": when},
            "impressions": impressions,
            "clicks": 1,
        }

    route = router.get("/rest/adAnalytics").respond(
        200,
        json={
            "elements": [
                day("urn:li:organization:1", 1, 10),
                day("urn:li:organization:2", 1, 99),
            ]
        },
    )

    rows = api.ad_analytics_by_company(
        date(2026, 1, 1), date(2026, 2, 14), {"urn:li:organization:1": "acme.com"}
    )

    assert route.call_count == 2, "45 days are asked for in two windows"
    query = route.calls[0].request.url.query.decode()
    assert "q=analytics" in query
    assert "pivot=MEMBER_COMPANY" in query
    assert "timeGranularity=DAILY" in query
    assert "dateRange=(start:(year:2026,month:1,day:1),end:(year:2026,month:1,day:30))" in query
    assert "accounts=List(urn%3Ali%3AsponsoredAccount%3A123)" in query
    assert "fields=dateRange,pivotValues,impressions,clicks" in query
    assert {r["domain"] for r in rows} == {"acme.com"}

    unmapped = api.ad_analytics_by_company(date(2026, 2, 1), date(2026, 2, 1))
    assert {r["organization"] for r in unmapped} == {
        "urn:li:organization:1",
        "urn:li:organization:2",
    }
    assert {r["domain"] for r in unmapped} == {None}


def _lead(lead_id: str, millis: int, answers: list[str], test: bool = False) -> dict:
    return {
        "id": lead_id,
        "submittedAt": millis,
        "testLead": test,
        "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:9,1)",
        "form": {
            "id": 9,
            "name": "Whitepaper",
            "content": {
                "questions": [
                    {"questionId": 11, "predefinedField": "FIRST_NAME"},
                    {"questionId": 12, "predefinedField": "LAST_NAME"},
                    {"questionId": 13, "predefinedField": "EMAIL"},
                    {"questionId": 14, "predefinedField": "JOB_TITLE"},
                ]
            },
        },
        "formResponse": {
            "answers": [
                {"questionId": 11 + i, "answerDetails": {"textQuestionAnswer": {"answer": a}}}
                for i, a in enumerate(answers)
            ]
        },
    }


def test_lead_form_responses_page_through_and_map_fields(
    api: LinkedInConnector, router: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkedin_client, "LEADS_PAGE_SIZE", 2)
    jan = int(datetime(2026, 1, 10, 9, 30, tzinfo=UTC).timestamp() * 1000)
    pages = [
        [
            _lead("a-1", jan, ["Jane", "Doe", "Jane.Doe@Acme.COM", "VP Engineering"]),
            _lead("t-1", jan + 1, ["Test", "Lead", "t@acme.com", "QA"], test=True),
        ],
        [_lead("b-2", jan + 5000, ["Omar", "Haddad", "omar@www.globex.io", "CFO"])],
    ]
    route = router.get("/rest/leadFormResponses").mock(
        side_effect=[
            httpx.Response(200, json={"elements": p, "paging": {"total": 3}}) for p in pages
        ]
    )
    since = datetime(2026, 1, 1, tzinfo=UTC)

    rows = api.lead_form_responses(since)

    assert route.call_count == 2
    first = route.calls[0].request.url.query.decode()
    assert "q=owner" in first
    assert "owner=(sponsoredAccount:urn%3Ali%3AsponsoredAccount%3A123)" in first
    assert "leadType=(leadType:SPONSORED)" in first
    assert f"submittedAtTimeRange=(start:{int(since.timestamp() * 1000)}," in first
    assert "start=0" in first and "count=2" in first
    assert "start=2" in route.calls[1].request.url.query.decode()
    assert rows == [
        {
            "provider_event_id": "linkedin:lead:a-1",
            "submitted_at": datetime(2026, 1, 10, 9, 30, tzinfo=UTC),
            "email": "jane.doe@acme.com",
            "first_name": "Jane",
            "last_name": "Doe",
            "title": "VP Engineering",
            "company_domain": "acme.com",
            "form": "Whitepaper",
        },
        {
            "provider_event_id": "linkedin:lead:b-2",
            "submitted_at": datetime(2026, 1, 10, 9, 30, 5, tzinfo=UTC),
            "email": "omar@www.globex.io",
            "first_name": "Omar",
            "last_name": "Haddad",
            "title": "CFO",
            "company_domain": "globex.io",
            "form": "Whitepaper",
        },
    ]


def test_api_mode_needs_token_and_account() -> None:
    with pytest.raises(ConfigError, match="ABM_LINKEDIN_ACCESS_TOKEN"):
        LinkedInConnector("api", ad_account="123")
    with pytest.raises(ConfigError, match="ABM_LINKEDIN_AD_ACCOUNT"):
        LinkedInConnector("api", access_token=TOKEN)
    with pytest.raises(ConfigError, match="ABM_LINKEDIN_AD_ACCOUNT"):
        LinkedInConnector("api", access_token=TOKEN, ad_account="acme")


def test_audience_upload_without_source_platform_says_what_is_missing(
    router: respx.MockRouter,
) -> None:
    connector = LinkedInConnector("api", access_token=TOKEN, ad_account="123")
    with connector, pytest.raises(ConfigError, match="sourcePlatform"):
        connector.upload_company_audience("Tier 1", ["acme.com"])
    assert not router.calls


def test_version_and_source_platform_are_settings_with_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.settings import Settings, get_settings, reset_settings

    defaults = Settings()
    assert defaults.linkedin_version == linkedin_client.DEFAULT_VERSION == "202608"
    assert defaults.linkedin_source_platform == "LIST_UPLOAD"
    for name, value in [
        ("ABM_LINKEDIN_VERSION", "2026-08"),
        ("ABM_LINKEDIN_VERSION", "202613"),
        ("ABM_LINKEDIN_VERSION", "20260801"),
        ("ABM_LINKEDIN_SOURCE_PLATFORM", "list upload"),
    ]:
        monkeypatch.setenv(name, value)
        reset_settings()
        with pytest.raises(ConfigError, match=name):
            get_settings()
        monkeypatch.delenv(name)
    reset_settings()


def _api_settings(**overrides: str):  # type: ignore[no-untyped-def]
    from core.settings import Settings

    values = {
        "linkedin_mode": "api",
        "linkedin_access_token": TOKEN,
        "linkedin_ad_account": "123",
        "linkedin_version": "202611",
        "linkedin_source_platform": "ACME_DMP",
        **overrides,
    }
    return Settings(**values)


def test_the_configured_connector_sends_the_version_and_source_platform_set(
    router: respx.MockRouter,
) -> None:
    """`get_connector` (what campaign runs use) passes both settings through: an audience
    upload in api mode used to stop at a missing sourcePlatform before any request."""
    from connectors.linkedin import get_connector

    _segment_routes(router, existing=[{"id": 777, "type": "COMPANY", "name": "Tier 1"}])
    companies = router.post("/rest/dmpSegments/777/companies").mock(side_effect=_batch_reply)

    with get_connector(_api_settings()) as connector:
        assert connector.upload_company_audience("Tier 1", ["acme.com"]) == "777"

    assert companies.call_count == 1
    assert {call.request.headers["LinkedIn-Version"] for call in router.calls} == {"202611"}
    assert "sourcePlatform=ACME_DMP" in str(router.routes["find"].calls[0].request.url)


def test_the_segment_create_body_is_what_linkedin_documents(
    router: respx.MockRouter, sleeps: list[float]
) -> None:
    """POST /rest/dmpSegments: name, sourcePlatform, account, accessPolicy PRIVATE, type and
    destinations LINKEDIN (learn.microsoft.com, "DMP Segments", Create DMP Segment), plus
    the sourceSegmentId the segment is found by on a re-run."""
    settings = _api_settings()
    _segment_routes(router)
    router.post("/rest/dmpSegments/555/users").mock(side_effect=_batch_reply)
    connector = LinkedInConnector(
        "api",
        access_token=TOKEN,
        ad_account=settings.linkedin_ad_account,
        version=settings.linkedin_version,
        source_platform=settings.linkedin_source_platform,
        sleep=sleeps.append,
    )
    with connector:
        connector.upload_contact_audience("Tier 1 committee", ["jane@acme.com"])

    create = router.routes["create"].calls[0].request
    assert create.headers["LinkedIn-Version"] == "202611"
    assert create.headers["Content-Type"] == "application/json"
    body = json.loads(create.content)
    assert body.pop("sourceSegmentId").startswith("abm-")
    assert body == {
        "name": "Tier 1 committee",
        "sourcePlatform": "ACME_DMP",
        "account": ACCOUNT,
        "accessPolicy": "PRIVATE",
        "type": "USER",
        "destinations": [{"destination": "LINKEDIN"}],
    }


NONEXISTENT_VERSION = {
    "status": 426,
    "code": "NONEXISTENT_VERSION",
    "message": "Requested version 202611 is not active",
}


@pytest.mark.parametrize(
    ("status", "body", "setting"),
    [
        (426, NONEXISTENT_VERSION, "ABM_LINKEDIN_VERSION"),
        (400, {"status": 400, "message": "Invalid sourcePlatform"}, "ABM_LINKEDIN_SOURCE_PLATFORM"),
        (401, {"status": 401, "code": "EXPIRED_ACCESS_TOKEN"}, "ABM_LINKEDIN_ACCESS_TOKEN"),
        (403, {"status": 403, "code": "ACCESS_DENIED"}, "ABM_LINKEDIN_ACCESS_TOKEN"),
    ],
)
def test_configuration_answers_on_segment_create_are_configuration_errors(
    router: respx.MockRouter, sleeps: list[float], status: int, body: dict, setting: str
) -> None:
    router.get("/rest/dmpSegments", name="find").respond(200, json={"elements": []})
    create = router.post("/rest/dmpSegments").respond(status, json=body)
    connector = LinkedInConnector(
        "api", access_token=TOKEN, ad_account="123", source_platform="ACME_DMP", sleep=sleeps.append
    )
    with connector, pytest.raises(ConfigError) as caught:
        connector.upload_company_audience("Tier 1", ["acme.com"])
    message = str(caught.value)
    assert setting in message and str(status) in message
    assert TOKEN not in message
    assert create.call_count == 1  # refused at once, never retried


def test_a_sunset_version_on_any_call_names_the_version_setting(
    api: LinkedInConnector, router: respx.MockRouter
) -> None:
    router.get("/rest/adAnalytics").respond(426, json=NONEXISTENT_VERSION)
    with pytest.raises(ConfigError, match="ABM_LINKEDIN_VERSION"):
        api.ad_analytics_by_company(date(2026, 1, 1), date(2026, 1, 1), {})
    assert len(router.calls) == 1


def _audience_backend(sleeps: list[float], **overrides: object):  # type: ignore[no-untyped-def]
    from connectors.linkedin.backends import MatchedAudienceBackend

    options: dict = {
        "access_token": TOKEN,
        "ad_account": "123",
        "source_platform": "ACME_DMP",
        "sleep": sleeps.append,
        **overrides,
    }
    return MatchedAudienceBackend(
        lambda: LinkedInConnector("api", **options), "Tier 1", "companies"
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [(426, NONEXISTENT_VERSION), (400, {"message": "bad sourcePlatform"}), (401, {}), (403, {})],
)
def test_the_audience_backend_reports_configuration_answers_as_blocked_not_retryable(
    router: respx.MockRouter, sleeps: list[float], status: int, body: dict
) -> None:
    """A retry cannot fix a setting: the items are `blocked` (the run stops, the campaign
    waits for a person), never `retryable` (tried again and again) nor dead."""
    router.get("/rest/dmpSegments").respond(200, json={"elements": []})
    router.post("/rest/dmpSegments").respond(status, json=body)
    with _audience_backend(sleeps) as backend:
        results = backend.send_messages(["acme.com", "globex.io"])
    assert [r.outcome for r in results] == ["blocked", "blocked"]
    assert all(r.error and "ABM_LINKEDIN_" in r.error and TOKEN not in r.error for r in results)


def test_the_audience_backend_blocks_when_api_mode_lacks_a_setting(sleeps: list[float]) -> None:
    with _audience_backend(sleeps, access_token=None) as backend:
        results = backend.send_messages(["acme.com"])
    assert [r.outcome for r in results] == ["blocked"]
    assert "ABM_LINKEDIN_ACCESS_TOKEN" in (results[0].error or "")


def test_the_audience_backend_leaves_an_outage_retryable(
    router: respx.MockRouter, sleeps: list[float]
) -> None:
    router.get("/rest/dmpSegments").respond(503)
    with _audience_backend(sleeps) as backend:
        results = backend.send_messages(["acme.com"])
    assert [r.outcome for r in results] == ["retryable"]

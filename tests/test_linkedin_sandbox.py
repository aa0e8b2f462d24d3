"""LinkedIn connector in sandbox mode: the requests it would send land as numbered files with
the token redacted and no address in them, and what it pulls comes only from the files the
user put in its folder, answered as LinkedIn would; it never invents any."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from connectors.linkedin import LinkedInConnector, hash_email
from connectors.linkedin import client as linkedin_client
from core.errors import ConfigError

TOKEN = "tok-sandbox-S3cret"
EMAILS = ["Jane.Doe@Acme.com", " omar@globex.io ", "Li.Wei@Initech.example"]
DOMAINS = ["acme.com", "globex.io", "initech.example"]


def _sandbox(folder: Path) -> LinkedInConnector:
    return LinkedInConnector("sandbox", sandbox_dir=folder, access_token=TOKEN, ad_account="42")


def test_hash_email_normalises_before_hashing() -> None:
    expected = hashlib.sha256(b"jane.doe@acme.com").hexdigest()
    assert hash_email("  Jane.Doe@ACME.com\n") == expected
    assert len(expected) == 64


def test_requests_are_written_as_numbered_files_with_the_token_redacted(tmp_path: Path) -> None:
    folder = tmp_path / "linkedin"
    connector = _sandbox(folder)

    audience = connector.upload_contact_audience("Tier 1 committee", EMAILS)
    connector.upload_company_audience("Tier 1 accounts", ["https://www.Acme.com/", "globex.io"])
    connector.ad_analytics_by_company(date(2026, 1, 1), date(2026, 1, 7), {})
    connector.lead_form_responses(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC)
    )

    files = sorted(folder.iterdir())
    assert [f.name.split("-", 2)[:2] for f in files] == [
        ["00001", "GET"],
        ["00002", "POST"],
        ["00003", "POST"],
        ["00004", "GET"],
        ["00005", "POST"],
        ["00006", "POST"],
        ["00007", "GET"],
        ["00008", "GET"],
    ]
    records = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    for record in records:
        assert record["headers"]["Authorization"] == "Bearer ***"
        assert record["headers"]["LinkedIn-Version"]
        assert record["headers"]["X-Restli-Protocol-Version"] == "2.0.0"
        assert record["url"].startswith("https://api.linkedin.com/rest/")
    users = records[2]
    assert users["path"] == f"/rest/dmpSegments/{audience}/users"
    assert users["headers"]["X-RestLi-Method"] == "BATCH_CREATE"
    assert [e["userIds"][0]["idValue"] for e in users["json"]["elements"]] == [
        hash_email(e) for e in EMAILS
    ]
    companies = records[5]["json"]["elements"]
    assert [c["companyWebsiteDomain"] for c in companies] == ["acme.com", "globex.io"]

    text = "".join(f.read_text(encoding="utf-8") for f in files)
    assert TOKEN not in text
    for email in EMAILS:
        assert email.strip().lower() not in text.lower()
        assert email.split("@")[0].strip().lower() not in text.lower()


def test_numbering_continues_in_a_folder_that_already_has_requests(tmp_path: Path) -> None:
    _sandbox(tmp_path).upload_company_audience("A", ["acme.com"])
    _sandbox(tmp_path).upload_company_audience("B", ["acme.com"])

    assert [p.name[:5] for p in sorted(tmp_path.iterdir())] == [
        "00001",
        "00002",
        "00003",
        "00004",
        "00005",
        "00006",
    ]


def test_batches_respect_the_batch_size(tmp_path: Path) -> None:
    connector = LinkedInConnector("sandbox", sandbox_dir=tmp_path, batch_size=2)
    connector.upload_contact_audience("Five", [f"p{i}@acme.com" for i in range(5)])

    batches = [
        json.loads(p.read_text())["json"]["elements"] for p in sorted(tmp_path.glob("*-users.json"))
    ]
    assert [len(b) for b in batches] == [2, 2, 1]


def _analytics(organization: str, day: date, impressions: int = 10, clicks: int = 1) -> dict:
    when = {"year": day.year, "month": day.month, "day": day.day}
    return {
        "pivotValues": [organization],
        "dateRange": {"start": when, "end": when},
        "impressions": impressions,
        "clicks": clicks,
    }


def _lead(lead_id: str, at: datetime, email: str, test: bool = False) -> dict:
    return {
        "id": lead_id,
        "submittedAt": int(at.timestamp() * 1000),
        "testLead": test,
        "form": {
            "name": "Whitepaper",
            "content": {"questions": [{"questionId": 1, "predefinedField": "WORK_EMAIL"}]},
        },
        "formResponse": {
            "answers": [
                {"questionId": 1, "answerDetails": {"textQuestionAnswer": {"answer": email}}}
            ]
        },
    }


def _jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_without_files_the_sandbox_pulls_nothing_and_still_records_its_requests(
    tmp_path: Path,
) -> None:
    connector = LinkedInConnector("sandbox", sandbox_dir=tmp_path / "requests")
    jan, mar = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)

    assert connector.ad_analytics_by_company(date(2026, 1, 1), date(2026, 2, 28), {}) == []
    assert connector.lead_form_responses(jan, mar) == []
    assert len(list((tmp_path / "requests").glob("*-GET-adAnalytics.json"))) == 2
    assert len(list((tmp_path / "requests").glob("*-GET-leadFormResponses.json"))) == 1
    assert connector.sandbox_problems == []


def test_the_sandbox_answers_from_its_files_as_linkedin_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkedin_client, "LEADS_PAGE_SIZE", 2)
    files = tmp_path / "files"
    org = "urn:li:organization:7"
    _jsonl(
        files / "ad_analytics.jsonl",
        [
            _analytics(org, date(2026, 1, 3), 40, 3),
            {"elements": [_analytics(org, date(2026, 2, 10)), _analytics(org, date(2026, 4, 1))]},
        ],
    )
    jan = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
    _jsonl(
        files / "lead_forms.jsonl",
        [
            _lead("a", jan, "Jane@Acme.com"),
            _lead("b", jan + timedelta(hours=1), "omar@globex.io"),
            _lead("c", jan + timedelta(hours=2), "li@initech.example"),
            _lead("t", jan, "test@acme.com", test=True),
            _lead("late", datetime(2026, 5, 1, tzinfo=UTC), "late@acme.com"),
        ],
    )
    connector = LinkedInConnector("sandbox", sandbox_dir=tmp_path / "requests", sandbox_files=files)

    rows = connector.ad_analytics_by_company(date(2026, 1, 1), date(2026, 2, 28), {org: "acme.com"})
    leads = connector.lead_form_responses(jan, datetime(2026, 3, 1, tzinfo=UTC))

    assert [(r["date"], r["domain"], r["impressions"], r["clicks"]) for r in rows] == [
        (date(2026, 1, 3), "acme.com", 40, 3),
        (date(2026, 2, 10), "acme.com", 10, 1),
    ]
    assert [lead["provider_event_id"] for lead in leads] == [
        "linkedin:lead:a",
        "linkedin:lead:b",
        "linkedin:lead:c",
    ]
    assert leads[0]["email"] == "jane@acme.com" and leads[0]["company_domain"] == "acme.com"
    assert len(list((tmp_path / "requests").glob("*-GET-leadFormResponses.json"))) == 2
    assert connector.sandbox_problems == []
    notes = " ".join(connector.sandbox_notes)
    assert "1 row" in notes and "ad_analytics.jsonl" in notes
    assert "lead_forms.jsonl" in notes and "test lead" in notes


def test_bad_lines_are_reported_with_file_line_and_reason(tmp_path: Path) -> None:
    files = tmp_path / "files"
    path = files / "lead_forms.jsonl"
    path.parent.mkdir(parents=True)
    good = _lead("ok", datetime(2026, 1, 5, tzinfo=UTC), "jane@acme.com")
    path.write_bytes(
        b"\n".join(
            [
                json.dumps(good).encode(),
                b"{broken",
                json.dumps({**good, "id": "x", "submittedAt": "yesterday"}).encode(),
                json.dumps({k: v for k, v in good.items() if k != "id"}).encode(),
                b"\xff\xfe not UTF-8",
            ]
        )
    )
    connector = LinkedInConnector("sandbox", sandbox_dir=tmp_path / "r", sandbox_files=files)

    leads = connector.lead_form_responses(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    )

    assert [lead["provider_event_id"] for lead in leads] == ["linkedin:lead:ok"]
    assert [p.split(": ", 1)[0] for p in connector.sandbox_problems] == [
        f"{path}:{n}" for n in (2, 3, 4, 5)
    ]
    assert "submittedAt" in connector.sandbox_problems[1]
    assert "id" in connector.sandbox_problems[2]


def test_sandbox_needs_a_folder_and_naive_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LinkedInConnector("sandbox")
    with pytest.raises(ValueError, match="timezone"):
        _sandbox(tmp_path).lead_form_responses(
            datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC)
        )

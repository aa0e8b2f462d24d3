"""LinkedIn connector in sandbox mode: the requests it would send land as numbered files with
the token redacted and no address in them, and the simulated figures are a pure function of
the inputs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.linkedin import LinkedInConnector, hash_email, simulated_organizations
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


def test_same_inputs_give_the_same_analytics_and_audience_ids(tmp_path: Path) -> None:
    organizations = simulated_organizations(DOMAINS)
    runs = []
    for name in ("one", "two"):
        connector = _sandbox(tmp_path / name)
        runs.append(
            (
                connector.ad_analytics_by_company(
                    date(2026, 1, 1), date(2026, 2, 28), organizations
                ),
                connector.upload_company_audience("Tier 1", DOMAINS),
            )
        )

    assert runs[0] == runs[1]
    rows = runs[0][0]
    assert rows, "59 days of three accounts produce some delivery"
    assert {r["domain"] for r in rows} == set(DOMAINS)
    assert all(r["impressions"] >= 3 and 0 <= r["clicks"] <= r["impressions"] for r in rows)
    assert all(date(2026, 1, 1) <= r["date"] <= date(2026, 2, 28) for r in rows)
    ids = [r["provider_event_id"] for r in rows]
    assert len(ids) == len(set(ids))
    acme_alone = _sandbox(tmp_path / "three").ad_analytics_by_company(
        date(2026, 1, 1), date(2026, 2, 28), simulated_organizations(["acme.com"])
    )
    assert acme_alone == [r for r in rows if r["domain"] == "acme.com"]


def test_simulated_leads_are_stable_across_overlapping_windows(tmp_path: Path) -> None:
    connector = _sandbox(tmp_path)
    jan, feb, mar = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))

    whole = connector.lead_form_responses(jan, mar, domains=DOMAINS)
    halves = connector.lead_form_responses(jan, feb, domains=DOMAINS)
    halves += connector.lead_form_responses(feb, mar, domains=DOMAINS)

    assert whole
    assert whole == halves
    for lead in whole:
        assert jan <= lead["submitted_at"] < mar
        assert lead["company_domain"] in DOMAINS
        assert lead["email"].endswith("@" + lead["company_domain"])
        assert lead["provider_event_id"].startswith("linkedin:lead:")
        assert lead["first_name"] and lead["last_name"] and lead["title"] and lead["form"]


def test_sandbox_needs_a_folder_and_naive_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LinkedInConnector("sandbox")
    with pytest.raises(ValueError, match="timezone"):
        _sandbox(tmp_path).lead_form_responses(
            datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC)
        )

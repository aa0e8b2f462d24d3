"""LinkedIn engagement sync: analytics and leads in, incremental, never double. In sandbox
mode (the default) it pulls only what the user put in the sandbox folder and never invents
anything; with no files there it changes nothing and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import respx
import yaml
from sqlalchemy import Engine, func, select
from tests_support import write_file

from abm.demo_data import write_demo_csvs
from core.settings import get_settings, reset_settings
from models.tables import Account, Contact, EngagementEvent, StageChange, SyncCursor, utcnow
from stages.engagement.linkedin_sync import sync_linkedin
from stages.importing import import_file

TODAY = date(2026, 11, 25)
REPO = Path(__file__).resolve().parents[1]
ACME, GLOBEX = "urn:li:organization:1001", "urn:li:organization:1002"
ACCOUNTS = (
    "domain,name,industry,employees,country,linkedin_organization\n"
    f"acme.example,Acme,Software,1200,US,{ACME}\n"
    f"globex.example,Globex,Manufacturing,800,DE,{GLOBEX}\n"
    "initech.example,Initech,Software,300,US,\n"
)


def analytics_line(organization: str, day: date, impressions: int, clicks: int) -> dict:
    """One element of LinkedIn's adAnalytics answer (MEMBER_COMPANY pivot, DAILY)."""
    when = {"year": day.year, "month": day.month, "day": day.day}
    return {
        "pivotValues": [organization],
        "dateRange": {"start": when, "end": when},
        "impressions": impressions,
        "clicks": clicks,
    }


def lead_line(lead_id: str, at: datetime, answers: list[str]) -> dict:
    """One element of LinkedIn's leadFormResponses answer, with the form expanded."""
    fields = ("FIRST_NAME", "LAST_NAME", "WORK_EMAIL", "JOB_TITLE")
    return {
        "id": lead_id,
        "submittedAt": int(at.timestamp() * 1000),
        "testLead": False,
        "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:9,1)",
        "form": {
            "id": 9,
            "name": "Whitepaper",
            "content": {
                "questions": [
                    {"questionId": 11 + i, "predefinedField": f} for i, f in enumerate(fields)
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


def sandbox_folder() -> Path:
    return get_settings().state_dir / "sandbox" / "linkedin"


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    return write_file(
        path, "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    )


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything a sync could change in the user's database."""
    with engine.connect() as connection:
        return {
            "events": sorted(
                connection.execute(
                    select(EngagementEvent.provider, EngagementEvent.provider_event_id)
                ).all()
            ),
            "contacts": sorted(connection.execute(select(Contact.email, Contact.status)).all()),
            "stage_changes": connection.execute(
                select(func.count()).select_from(StageChange)
            ).scalar_one(),
            "cursors": sorted(
                connection.execute(select(SyncCursor.source, SyncCursor.cursor)).all()
            ),
            "accounts": sorted(
                connection.execute(
                    select(Account.domain, Account.stage, Account.engagement_score)
                ).all()
            ),
        }


def events_by_type(engine: Engine) -> dict[tuple[str, str], int]:
    """(type, account domain) -> the count the event carries."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(EngagementEvent.type, Account.domain, EngagementEvent.data).join(
                Account, Account.id == EngagementEvent.account_id
            )
        ).all()
    found: dict[tuple[str, str], int] = {}
    for kind, domain, data in rows:
        found[(kind, domain)] = found.get((kind, domain), 0) + int(data.get("count", 1))
    return found


@pytest.fixture
def user_db(engine: Engine, tmp_path: Path) -> Engine:
    """A user's database: demo-shaped accounts and people, and one fully suppressed domain."""
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=400)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    with engine.connect() as connection:
        domain = connection.execute(select(Account.domain).limit(1)).scalar_one()
    suppressions = write_file(tmp_path / "data" / "suppressions.csv", f"domain\n{domain}\n")
    import_file("suppressions", suppressions, engine, get_settings())
    return engine


@pytest.fixture
def small_db(engine: Engine, tmp_path: Path) -> Engine:
    """Three accounts, two of them with their LinkedIn organization URN."""
    import_file("accounts", write_file(tmp_path / "accounts.csv", ACCOUNTS), engine, get_settings())
    return engine


def test_sandbox_without_files_changes_nothing_and_says_so(user_db: Engine) -> None:
    before = snapshot(user_db)

    report = sync_linkedin(user_db, get_settings(), today=TODAY)

    assert snapshot(user_db) == before
    assert (report.analytics_events, report.lead_events, report.lead_contacts) == (0, 0, 0)
    assert report.mode == "sandbox"
    assert len(report.notes) == 1
    note = report.notes[0]
    assert "nothing pulled" in note
    assert str(sandbox_folder()) in note
    assert "ABM_LINKEDIN_MODE=api" in note and "README" in note
    assert not list(sandbox_folder().parent.parent.rglob("*.json")), "no request recorded"


def test_sandbox_ingests_exactly_the_rows_in_its_files(small_db: Engine) -> None:
    now = utcnow()
    write_jsonl(
        sandbox_folder() / "ad_analytics.jsonl",
        [
            analytics_line(ACME, TODAY - timedelta(days=3), 40, 2),
            analytics_line(GLOBEX, TODAY - timedelta(days=5), 10, 0),
            analytics_line("urn:li:organization:9999", TODAY - timedelta(days=3), 7, 1),
        ],
    )
    write_jsonl(
        sandbox_folder() / "lead_forms.jsonl",
        [
            lead_line("a-1", now - timedelta(days=2), ["Jane", "Doe", "Jane@Acme.example", "CIO"]),
            lead_line("b-2", now - timedelta(days=1), ["Li", "Wei", "li@elsewhere.example", "CFO"]),
        ],
    )

    report = sync_linkedin(small_db, get_settings(), today=TODAY)

    assert events_by_type(small_db) == {
        ("ad_impression", "acme.example"): 40,
        ("ad_click", "acme.example"): 2,
        ("ad_impression", "globex.example"): 10,
        ("lead_form", "acme.example"): 1,
    }
    assert (report.analytics_rows, report.analytics_events) == (3, 3)
    assert (report.leads, report.lead_contacts, report.lead_events) == (2, 1, 1)
    assert report.unmatched == 2
    assert report.problems == []
    assert any(
        "urn:li:organization:9999" in note and "linkedin_organization" in note
        for note in report.notes
    )
    with small_db.connect() as connection:
        jane = connection.execute(
            select(Contact.email, Contact.role, Contact.attributes, Account.domain).join(Account)
        ).one()
    assert jane.email == "jane@acme.example" and jane.domain == "acme.example"
    assert jane.role and jane.attributes == {"source": "linkedin_lead_form"}

    events = snapshot(small_db)["events"]
    again = sync_linkedin(small_db, get_settings(), today=TODAY)
    assert again.lead_events == 0 and again.lead_contacts == 0
    assert snapshot(small_db)["events"] == events


def test_a_bad_line_is_reported_with_file_and_line_and_good_lines_still_go_in(
    small_db: Engine,
) -> None:
    analytics = write_jsonl(
        sandbox_folder() / "ad_analytics.jsonl",
        [
            analytics_line(ACME, TODAY - timedelta(days=2), 5, 1),
            "{not json",
            {"pivotValues": [GLOBEX], "impressions": 5},
            "",
            analytics_line(GLOBEX, TODAY - timedelta(days=2), 9, 0),
        ],
    )
    leads = write_jsonl(sandbox_folder() / "lead_forms.jsonl", [["not", "an", "object"]])

    report = sync_linkedin(small_db, get_settings(), today=TODAY)

    assert [p.split(": ", 1)[0] for p in report.problems] == [
        f"{analytics}:2",
        f"{analytics}:3",
        f"{leads}:1",
    ]
    assert "dateRange" in report.problems[1]
    assert events_by_type(small_db) == {
        ("ad_impression", "acme.example"): 5,
        ("ad_click", "acme.example"): 1,
        ("ad_impression", "globex.example"): 9,
    }


def test_the_sandbox_folder_is_a_setting(small_db: Engine, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "my-linkedin-files"
    monkeypatch.setenv("ABM_LINKEDIN_SANDBOX_DIR", str(folder))
    reset_settings()
    write_jsonl(
        folder / "ad_analytics.jsonl", [analytics_line(ACME, TODAY - timedelta(days=1), 3, 0)]
    )

    report = sync_linkedin(small_db, get_settings(), today=TODAY)

    assert events_by_type(small_db) == {("ad_impression", "acme.example"): 3}
    assert any("lead_forms.jsonl" in note and str(folder) in note for note in report.notes)


def test_the_sandbox_never_writes_a_plain_email(user_db: Engine) -> None:
    with user_db.connect() as connection:
        emails = connection.execute(select(Contact.email)).scalars().all()
    write_jsonl(
        sandbox_folder() / "lead_forms.jsonl",
        [lead_line("x-1", utcnow() - timedelta(hours=1), ["A", "B", emails[0], "CTO"])],
    )
    sync_linkedin(user_db, get_settings(), today=TODAY)
    written = " ".join(
        path.read_text() for path in (get_settings().state_dir / "linkedin").rglob("*.json")
    )
    assert written and not [email for email in emails if email in written]


def test_api_mode_maps_organizations_through_the_accounts(small_db: Engine, monkeypatch) -> None:
    monkeypatch.setenv("ABM_LINKEDIN_MODE", "api")
    monkeypatch.setenv("ABM_LINKEDIN_ACCESS_TOKEN", "tok-test")
    monkeypatch.setenv("ABM_LINKEDIN_AD_ACCOUNT", "123")
    reset_settings()
    lead = lead_line(
        "c-3", utcnow() - timedelta(hours=3), ["Omar", "H", "omar@globex.example", "VP IT"]
    )
    with respx.mock(base_url="https://api.linkedin.com", assert_all_called=True) as router:
        router.get("/rest/adAnalytics").respond(
            200, json={"elements": [analytics_line(ACME, TODAY - timedelta(days=4), 12, 1)]}
        )
        router.get("/rest/leadFormResponses").respond(
            200, json={"elements": [lead], "paging": {"start": 0, "count": 100, "total": 1}}
        )
        report = sync_linkedin(small_db, get_settings(), today=TODAY)

    assert report.mode == "api" and report.notes == [] and report.problems == []
    assert events_by_type(small_db) == {
        ("ad_impression", "acme.example"): 12,
        ("ad_click", "acme.example"): 1,
        ("lead_form", "globex.example"): 1,
    }


def _abm(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ABM_DATABASE_URL": database_url},
        timeout=120,
    )


def test_cli_sync_without_files_says_nothing_was_pulled(user_db: Engine, database_url: str) -> None:
    before = snapshot(user_db)

    as_json = _abm("engagement", "sync", "--json", database_url=database_url)
    human = _abm("engagement", "sync", database_url=database_url)

    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["stage_changes"] == 0 and result["analytics_events"] == 0
    assert any("nothing pulled" in note for note in result["notes"])
    assert human.returncode == 0, human.stderr
    assert "nothing pulled" in " ".join(human.stderr.split())
    assert snapshot(user_db) == before


def test_cli_sync_exits_1_and_names_the_bad_line(small_db: Engine, database_url: str) -> None:
    path = write_jsonl(
        sandbox_folder() / "ad_analytics.jsonl",
        [analytics_line(ACME, date.today() - timedelta(days=2), 5, 1), "{oops"],
    )

    result = _abm("engagement", "sync", database_url=database_url)

    assert result.returncode == 1
    assert f"{path}:2:" in result.stderr
    assert events_by_type(small_db) == {
        ("ad_impression", "acme.example"): 5,
        ("ad_click", "acme.example"): 1,
    }


def test_the_scheduled_flow_without_files_does_nothing(
    user_db: Engine, database_url: str, monkeypatch, prefect_server
) -> None:
    from flows.scheduled import sync_engagement

    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    before = snapshot(user_db)

    result = sync_engagement()

    assert snapshot(user_db) == before
    assert result["stage_changes"] == 0
    assert any("nothing pulled" in note for note in result["notes"])


def test_the_sync_schedule_is_off_until_the_api_is_configured() -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    sync = next(d for d in deployments if d["name"] == "sync-engagement")
    assert sync["schedules"] and all(s["active"] is False for s in sync["schedules"])
    text = (REPO / "prefect.yaml").read_text()
    assert "ABM_LINKEDIN_MODE=api" in text

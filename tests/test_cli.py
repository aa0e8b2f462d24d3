"""The `abm` command as a user runs it: output contract, JSON shapes and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ABM = [sys.executable, "-m", "abm"]
CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


def abm(*args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [*ABM, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def initialised(database_url, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    result = abm("init")
    assert result.returncode == 0, result.stderr
    return database_url


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_commands_before_init_ask_for_abm_init(tmp_path, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    result = abm("accounts", "list")
    assert result.returncode == 2
    assert "abm init" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_prints_counts_last_and_exits_1_when_rows_were_rejected(initialised, tmp_path):
    accounts = _write(
        tmp_path / "accounts.csv",
        "domain,name,industry,employees\nacme.example,Acme,Software,1200\nbad domain,X,,\n",
    )
    result = abm("import", "accounts", str(accounts))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "imported=1 updated=0 rejected=1"
    assert f"{accounts}:3:" in result.stderr
    assert (tmp_path / "accounts.rejects.csv").exists()
    again = abm("import", "accounts", str(accounts))
    assert again.stdout.strip().splitlines()[-1] == "imported=0 updated=0 rejected=1"


def test_a_missing_file_is_a_usage_error_not_a_traceback(initialised, tmp_path):
    result = abm("import", "contacts", str(tmp_path / "nope.csv"))
    assert result.returncode == 2
    assert "nope.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_accounts_and_contacts_list_as_json(initialised, tmp_path):
    abm("import", "accounts", str(_write(tmp_path / "a.csv", "domain,name\nacme.example,Acme\n")))
    abm(
        "import",
        "contacts",
        str(_write(tmp_path / "c.csv", "email,title\nana@acme.example,VP Engineering\n")),
    )
    assert abm("score").returncode == 0
    accounts = json.loads(abm("accounts", "list", "--json").stdout)
    assert set(accounts[0]) >= {"domain", "name", "score", "tier", "stage", "engagement_score"}
    contacts = json.loads(abm("contacts", "list", "--account", "acme.example", "--json").stdout)
    assert contacts == [
        {
            "email": "ana@acme.example",
            "account_domain": "acme.example",
            "first_name": None,
            "last_name": None,
            "title": "VP Engineering",
            "seniority": "vp",
            "function": "engineering",
            "role": "decision_maker",
            "status": "active",
        }
    ]
    shown = json.loads(abm("accounts", "show", "acme.example", "--json").stdout)
    assert shown["committee"]["covered"] == ["decision_maker"]
    assert "approver" in shown["committee"]["gaps"]
    assert abm("accounts", "show", "nobody.example").returncode == 2


def test_stakeholders_classify_reads_titles_from_stdin_in_order(sqlite_url, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    result = abm(
        "stakeholders", "classify", "--json", stdin="CFO & COO\nSr. Dir, IT Infrastructure\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"title": "CFO & COO", "seniority": "c_level", "function": "finance", "role": "approver"},
        {
            "title": "Sr. Dir, IT Infrastructure",
            "seniority": "director",
            "function": "it",
            "role": "specifier",
        },
    ]


def test_campaign_validate_accepts_the_demo_and_names_the_line_of_a_mistake(tmp_path):
    assert abm("campaign", "validate", str(CAMPAIGN)).returncode == 0
    broken = _write(
        tmp_path / "broken.yaml",
        "name: Broken\nsteps:\n  - id: intro\n    template: intro\n    colour: red\n",
    )
    result = abm("campaign", "validate", str(broken))
    assert result.returncode == 2
    assert f"{broken}:5: steps[0].colour:" in result.stderr


def test_engagement_ingest_stores_each_event_once_and_reports_bad_lines(initialised, tmp_path):
    abm("import", "accounts", str(_write(tmp_path / "a.csv", "domain\nacme.example\n")))
    abm("import", "contacts", str(_write(tmp_path / "c.csv", "email\nana@acme.example\n")))
    line = (
        '{"email": "ana@acme.example", "timestamp": 1764000000, "event": "%s", '
        '"sg_event_id": "%s"}\n'
    )
    export = _write(
        tmp_path / "events.jsonl",
        line % ("delivered", "e1") + line % ("click", "e2") + "{broken\n" + line % ("open", "e1"),
    )
    first = abm("engagement", "ingest", str(export), "--provider", "sendgrid", "--json")
    assert first.returncode == 1
    assert f"{export}:3:" in first.stderr
    assert json.loads(first.stdout) == {
        "received": 3,
        "stored": 2,
        "ignored": 0,
        "unmatched": 0,
        "reconciled": 0,
        "malformed": 1,
    }
    again = abm("engagement", "ingest", str(export), "--json")
    assert json.loads(again.stdout)["stored"] == 0

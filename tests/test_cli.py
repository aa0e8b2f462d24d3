"""The `abm` command as a user runs it: output contract, JSON shapes and exit codes."""

import json
import os
import subprocess
import sys
import time
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
    assert result.stdout.strip().splitlines()[-1] == "imported=1 updated=0 rejected=1 warned=0"
    assert f"{accounts}:3:" in result.stderr
    assert (tmp_path / "accounts.rejects.csv").exists()
    again = abm("import", "accounts", str(accounts))
    assert again.stdout.strip().splitlines()[-1] == "imported=0 updated=0 rejected=1 warned=0"


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


def test_set_stage_is_kept_with_its_source_and_reason_and_shown(initialised, tmp_path):
    accounts = _write(tmp_path / "a.csv", "domain,stage\nacme.example,MQA\n")
    assert abm("import", "accounts", str(accounts)).returncode == 0
    moved = abm("accounts", "set-stage", "acme.example", "Opportunity", "--reason", "deal opened")
    assert moved.returncode == 0, moved.stderr
    assert "mqa -> opportunity" in moved.stderr
    again = abm("accounts", "set-stage", "acme.example", "opportunity", "--reason", "again")
    assert again.returncode == 0 and "already" in again.stderr

    shown = json.loads(abm("accounts", "show", "acme.example", "--json").stdout)
    assert shown["stage"] == "opportunity"
    assert [
        (c["from_stage"], c["to_stage"], c["source"], c["reason"]) for c in shown["stage_history"]
    ] == [
        ("target", "mqa", "import", f"imported from {accounts.name}, line 2"),
        ("mqa", "opportunity", "person", "deal opened"),
    ]
    human = abm("accounts", "show", "acme.example").stdout
    assert "mqa -> opportunity (person): deal opened" in human
    assert "target -> mqa (import)" in human


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody.example", "mqa", "--reason", "x"), "no account with domain 'nobody.example'"),
        (("acme.example", "won", "--reason", "x"), "'won' is not a journey stage"),
        (("acme.example", "mqa", "--reason", " "), "reason for the change must not be blank"),
        (("acme.example", "mqa"), "--reason"),
    ],
    ids=["unknown-domain", "unknown-stage", "blank-reason", "no-reason"],
)
def test_set_stage_refuses_what_it_cannot_do_with_exit_2(initialised, tmp_path, args, message):
    abm("import", "accounts", str(_write(tmp_path / "a.csv", "domain\nacme.example\n")))
    result = abm("accounts", "set-stage", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_stage_in_accounts_csv_is_reported_with_file_line_and_value(
    initialised, tmp_path
):
    accounts = _write(tmp_path / "a.csv", "domain,stage\nacme.example,hot\nbeta.example,aware\n")
    strict = abm("import", "accounts", "--strict", str(accounts))
    assert strict.returncode == 1
    assert f"{accounts}:2: stage: 'hot' is not a journey stage" in strict.stderr
    assert strict.stdout.strip().splitlines()[-1] == "imported=1 updated=0 rejected=1 warned=0"
    # without --strict the account goes in with its stage left blank, and a warning
    result = abm("import", "accounts", str(accounts))
    assert result.returncode == 0
    assert f"{accounts}:2: warning: stage 'hot': left blank: 'hot' is not a journey stage" in (
        result.stderr
    )
    assert result.stdout.strip().splitlines()[-1] == "imported=1 updated=0 rejected=0 warned=1"


def test_engagement_commands_use_abm_engagement_rules(initialised, tmp_path):
    from core.settings import DEFAULTS_DIR

    abm("import", "accounts", str(_write(tmp_path / "a.csv", "domain\nacme.example\n")))
    abm("import", "contacts", str(_write(tmp_path / "c.csv", "email\nana@acme.example\n")))
    export = _write(
        tmp_path / "events.jsonl",
        json.dumps(
            {
                "email": "ana@acme.example",
                "timestamp": int(time.time()),
                "event": "click",
                "sg_event_id": "e1",
            }
        )
        + "\n",
    )
    default = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    rules = _write(tmp_path / "rules.yaml", default.replace("  click: 5\n", "  click: 50\n"))
    env = {"ABM_ENGAGEMENT_RULES": str(rules)}
    assert abm("engagement", "ingest", str(export), env=env).returncode == 0
    accounts = json.loads(abm("accounts", "list", "--json").stdout)
    # the click's 50, and 5 for the committee role Ana's (blank) title gives her
    assert accounts[0]["engagement_score"] == pytest.approx(55, abs=0.1)


@pytest.mark.parametrize("content", [None, "weights: 3\n"], ids=["missing", "invalid"])
def test_a_bad_engagement_rules_file_is_a_configuration_error(initialised, tmp_path, content):
    rules = tmp_path / "rules.yaml"
    if content is not None:
        _write(rules, content)
    export = _write(tmp_path / "events.jsonl", "")
    for args in (("engagement", "sync"), ("engagement", "ingest", str(export))):
        result = abm(*args, env={"ABM_ENGAGEMENT_RULES": str(rules)})
        assert result.returncode == 2, (args, result.stderr)
        assert "ABM_ENGAGEMENT_RULES" in result.stderr and str(rules) in result.stderr
        assert "Traceback" not in result.stderr

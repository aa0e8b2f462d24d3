"""`abm campaign run` tells a scheduler or script when messages of the run failed: exit 1,
with where to look, not 0 as if all were well."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_support import run_abm

from abm.demo_data import write_demo_csvs
from core.settings import get_settings, reset_settings
from models.db import get_engine, migrate
from stages.importing import import_file

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = REPO / "campaigns" / "demo.yaml"


@pytest.mark.slow
def test_a_run_whose_messages_all_fail_exits_1(
    sqlite_url, tmp_path, monkeypatch, capsys, prefect_server
) -> None:
    broken = tmp_path / "templates"
    shutil.copytree(REPO / "templates", broken)
    for subject in (broken / "email" / "intro").rglob("subject.j2"):
        subject.write_text("Hello {{ account.attributes.no_such_column }}", encoding="utf-8")
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(broken))
    for name in ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    engine = get_engine(sqlite_url)
    migrate(engine)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=40)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())

    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(CAMPAIGN), "--json")

    assert code == 1, err
    assert "failed" in err and "abm campaign people" in err


@pytest.mark.slow
def test_a_run_that_reaches_nobody_says_why(
    sqlite_url, tmp_path, monkeypatch, capsys, prefect_server
) -> None:
    """Found trying it on my own accounts: all were customers or untiered, and the run
    showed a row of zeros without a word."""
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    for name in ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    migrate(get_engine(sqlite_url))
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("domain,name,stage\nacme.example,Acme,customer\n", encoding="utf-8")
    import_file("accounts", accounts, get_engine(sqlite_url), get_settings())

    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(CAMPAIGN))

    assert code == 0, err
    assert f"no account is in the audience of {CAMPAIGN}: tiers 1, 2, 3 at stages" in err

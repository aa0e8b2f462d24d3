"""Mistakes on the command line: one line saying what is wrong, the usage hint, exit code 2,
never a traceback; choices are checked (in any case) and output folders are made."""

from __future__ import annotations

import json

import pytest
from cli_support import run_abm
from sqlalchemy import Engine

from core.settings import reset_settings
from core.vocabulary import STAGES
from models.db import session_scope
from models.tables import Account


@pytest.fixture
def db(engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    with session_scope(engine) as session:
        session.add_all(
            [
                Account(domain="mqa.example", name="Q", tier=1, stage="mqa"),
                Account(domain="aware.example", name="A", tier=1, stage="aware"),
            ]
        )
    return engine


@pytest.mark.parametrize(
    ("args", "problem", "hint"),
    [
        (("acounts", "list"), "No such command 'acounts'", "abm --help"),
        (("accounts", "list", "--teir", "1"), "No such option: --teir", "abm accounts list --help"),
        (("campaign", "run"), "Missing argument", "abm campaign run --help"),
        (("import", "contacts"), "Missing argument", "abm import contacts --help"),
        (("accounts", "list", "--tier", "4"), "'--tier'", "abm accounts list --help"),
    ],
)
def test_a_usage_error_is_one_line_and_the_usage_hint(capsys, monkeypatch, args, problem, hint):
    code, out, err = run_abm(capsys, monkeypatch, *args)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    (error,) = [line for line in lines if line.startswith("Error:")]
    assert problem in error
    assert [line for line in lines if line.startswith("Usage: abm")]
    assert [line for line in lines if line.startswith("Try '") and hint in line]
    assert len(lines) == 3, err


def test_the_stage_filter_is_read_in_any_case(db, capsys, monkeypatch):
    code, out, err = run_abm(capsys, monkeypatch, "accounts", "list", "--stage", "MQA", "--json")
    assert code == 0, err
    assert [row["domain"] for row in json.loads(out)] == ["mqa.example"]


def test_an_unknown_stage_is_a_usage_error_listing_the_stages(db, capsys, monkeypatch):
    code, out, err = run_abm(capsys, monkeypatch, "accounts", "list", "--stage", "foo")
    assert code == 2 and out == "" and "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("Error:")]
    assert "'foo'" in error and all(stage in error for stage in STAGES)


def test_report_html_makes_the_folders_it_writes_into(db, tmp_path, capsys, monkeypatch):
    page = tmp_path / "reports" / "2026" / "x.html"
    code, _, err = run_abm(capsys, monkeypatch, "report", "--html", str(page))
    assert code == 0, err
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

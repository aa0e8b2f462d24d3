"""Rep task export: one header, append-only, and a touch is never listed twice."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from connectors.linkedin import export_rep_tasks


def _task(contact: str, step: str = "connect-1", **extra: str) -> dict:
    return {
        "campaign": "q3-manufacturing",
        "step": step,
        "contact": contact,
        "account_domain": "acme.com",
        "contact_name": "Zoë Ångström",
        "title": "VP Engineering",
        "linkedin_url": "https://www.linkedin.com/in/zoe-angstrom",
        "action": "connect",
        "text": "Hi Zoë, I saw your talk on predictive maintenance.",
        **extra,
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_is_idempotent_and_writes_the_header_once(tmp_path: Path) -> None:
    path = tmp_path / "reps" / "linkedin_tasks.csv"
    tasks = [_task("zoe@acme.com"), _task("omar@acme.com")]

    assert export_rep_tasks(path, tasks) == 2
    assert export_rep_tasks(path, tasks) == 0
    assert export_rep_tasks(path, [_task("ZOE@acme.com "), _task("li@acme.com")]) == 1
    assert export_rep_tasks(path, [_task("zoe@acme.com", step="message-1", action="message")]) == 1

    text = path.read_text(encoding="utf-8")
    assert text.count("task_key,campaign,step") == 1
    rows = _rows(path)
    assert [r["task_key"] for r in rows] == [
        "q3-manufacturing/connect-1/zoe@acme.com",
        "q3-manufacturing/connect-1/omar@acme.com",
        "q3-manufacturing/connect-1/li@acme.com",
        "q3-manufacturing/message-1/zoe@acme.com",
    ]
    assert rows[0]["contact_name"] == "Zoë Ångström"
    assert rows[3]["action"] == "message"


def test_duplicates_within_one_call_are_written_once(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    assert export_rep_tasks(path, [_task("zoe@acme.com"), _task("zoe@acme.com")]) == 1
    assert export_rep_tasks(path, []) == 0
    assert len(_rows(path)) == 1


def test_a_torn_last_line_does_not_merge_with_the_next_row(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    export_rep_tasks(path, [_task("zoe@acme.com")])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("q3-manufacturing/connect-1/half")

    assert export_rep_tasks(path, [_task("omar@acme.com")]) == 1

    keys = [r["task_key"] for r in _rows(path)]
    assert keys[-1] == "q3-manufacturing/connect-1/omar@acme.com"


def test_cells_that_would_run_as_formulas_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    export_rep_tasks(path, [_task("x@acme.com", contact_name='=HYPERLINK("http://evil")')])
    assert _rows(path)[0]["contact_name"] == '\'=HYPERLINK("http://evil")'


def test_bad_tasks_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    with pytest.raises(ValueError, match="connect or message"):
        export_rep_tasks(path, [_task("a@acme.com"), _task("b@acme.com", action="inmail")])
    with pytest.raises(ValueError, match="contact"):
        export_rep_tasks(path, [_task("")])
    assert not path.exists()


def test_the_owner_column_is_written_and_an_older_file_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    old_header = "task_key,campaign,step,account_domain,contact_name,title,linkedin_url,action,text"
    path.write_text(
        old_header + "\r\nq3-manufacturing/connect-1/li@acme.com,q3-manufacturing,connect-1,"
        "acme.com,Li,CTO,,connect,Hi Li\r\n",
        encoding="utf-8",
    )

    assert export_rep_tasks(path, [_task("zoe@acme.com", owner="Dana Whitfield")]) == 1
    assert export_rep_tasks(path, [_task("li@acme.com", owner="Dana Whitfield")]) == 0

    rows = _rows(path)
    assert path.read_text(encoding="utf-8").splitlines()[0].endswith(",owner")
    assert [(r["task_key"], r["owner"]) for r in rows] == [
        ("q3-manufacturing/connect-1/li@acme.com", ""),
        ("q3-manufacturing/connect-1/zoe@acme.com", "Dana Whitfield"),
    ]
    assert rows[0]["text"] == "Hi Li"

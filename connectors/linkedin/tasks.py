"""Rep tasks for LinkedIn touches, appended to a CSV that reps (or a CRM import) work from.

LinkedIn's public Marketing API has no endpoint to message members or send connection
requests, so a `linkedin_task` step becomes a row for a person to act on. The file is
append-only and idempotent on `task_key` (campaign, step, contact): a re-run, or a retry
after a crash, never hands a rep the same touch twice.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; one writer at a time there
    fcntl = None  # type: ignore[assignment]

COLUMNS = (
    "task_key",
    "campaign",
    "step",
    "account_domain",
    "contact_name",
    "title",
    "linkedin_url",
    "action",
    "text",
    "owner",
)
ACTIONS = ("connect", "message")
# Spreadsheet apps run a cell that starts with one of these as a formula: a contact name
# such as "=HYPERLINK(...)" from an import must stay text in a rep's Excel.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def task_key(campaign: str, step: str, contact: str) -> str:
    """The idempotency key of one rep task: one touch per contact per campaign step."""
    return f"{campaign}/{step}/{contact.strip().lower()}"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the CSV while reading its keys and appending."""
    if fcntl is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _existing(path: Path) -> tuple[list[str], set[str]]:
    """The file's header and the task keys already in it."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        keys = {row.get("task_key") or "" for row in reader}
        return list(reader.fieldnames or ()), keys


def _add_columns(path: Path, header: list[str]) -> list[str]:
    """A file written before a column was added (`owner`) gets it, blank in its rows, so
    new rows never land under the wrong heading. Rewritten beside it and swapped in."""
    wider = header + [name for name in COLUMNS if name not in header]
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=wider, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return wider


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) in (b"\n", b"\r")


def export_rep_tasks(path: Path, tasks: list[dict]) -> int:
    """Append the tasks not already in `path` and return how many rows were written.

    Each task has `campaign`, `step`, `contact` (email or id: the key, not written apart),
    `action` (`connect` or `message`), `text`, and optionally `account_domain`,
    `contact_name`, `title`, `linkedin_url`, `owner` (the account's owner, for routing).
    The header is written once, with the file; columns a person added to it are kept."""
    rows = [_row(task) for task in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        fresh = not path.exists() or path.stat().st_size == 0
        header, seen = (list(COLUMNS), set()) if fresh else _existing(path)
        new_rows = []
        for row in rows:
            if row["task_key"] not in seen:
                seen.add(row["task_key"])
                new_rows.append(row)
        if not new_rows:
            return 0
        if not set(COLUMNS) <= set(header):
            header = _add_columns(path, header)
        repair = not fresh and not _ends_with_newline(path)
        with path.open("a", encoding="utf-8", newline="") as handle:
            if repair:
                handle.write("\r\n")
            writer = csv.DictWriter(handle, fieldnames=header, restval="")
            if fresh:
                writer.writeheader()
            writer.writerows(new_rows)
            handle.flush()
            os.fsync(handle.fileno())
    return len(new_rows)


def _row(task: Mapping[str, object]) -> dict[str, str]:
    missing = [name for name in ("campaign", "step", "contact", "action") if not task.get(name)]
    if missing:
        raise ValueError(f"a rep task needs {', '.join(missing)}")
    action = str(task["action"])
    if action not in ACTIONS:
        raise ValueError(f"rep task action {action!r}: use connect or message")
    key = task_key(str(task["campaign"]), str(task["step"]), str(task["contact"]))
    row = {name: _cell(task.get(name)) for name in COLUMNS if name != "task_key"}
    row["task_key"] = _cell(key)
    return row

"""The sandbox CRM: a folder of files in place of a CRM, chosen with ABM_CRM=sandbox
(folder: ABM_CRM_SANDBOX_DIR, default <state dir>/sandbox/crm). Nothing is ever invented.

A push appends each account to `pushed.jsonl` (one JSON object a line, with `pushed_at`)
and reports it updated, with the CRM id `sandbox:<domain>`.

A pull reads only the CSV files you put there (UTF-8, a header row; times in ISO 8601,
`2026-03-01T09:30:00+00:00` or `2026-03-01`, UTC when no offset is given):

- `accounts.csv`: domain, owner_email, owner_name, modified_at (optional: id, owner_id).
  Both owner columns blank: the account has no owner in the CRM.
- `deals.csv`: id, domain, name, stage, closed, won, amount, modified_at (optional:
  pipeline). `closed`/`won`: true/false (yes/no, 1/0), blank when the CRM does not say;
  several domains are separated by `;`.
- `meetings.csv`: id, domain, attendee_emails (`;` between several; `attendee_email`
  works too), title, start_at, outcome, modified_at. A meeting needs an attendee or a domain.

Rows come in `modified_at` order, pages never split rows of one time, and the cursor is
the last `modified_at` applied: a pull reads the rows modified after it. A row that cannot
be used is skipped with `file:line: field: why` (in every pull, until it is fixed), and it
holds the cursor below its `modified_at` (where that cannot be read, where it is): once
fixed it is read, and the rows after it are applied again meanwhile, which changes nothing.
A missing file pulls nothing of its kind and `notes` says where to put it."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.crm.base import (
    CrmAccount,
    CrmBackend,
    CrmDeal,
    CrmMeeting,
    CrmOwner,
    CrmRecord,
    PullKind,
    PullPage,
    WriteBackResult,
)
from core.domains import domain_or_none

PUSHED_FILE = "pushed.jsonl"
FILES: dict[str, str] = {
    "accounts": "accounts.csv",
    "deals": "deals.csv",
    "meetings": "meetings.csv",
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "accounts": ("domain", "modified_at"),
    "deals": ("id", "stage", "modified_at"),
    "meetings": ("id", "start_at", "modified_at"),
}
COLUMNS: dict[str, str] = {
    "accounts": "domain, owner_email, owner_name, modified_at",
    "deals": "id, domain, name, stage, closed, won, amount, modified_at",
    "meetings": "id, domain, attendee_emails, title, start_at, outcome, modified_at",
}
PAGE_SIZE = 100
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}


class RowProblem(ValueError):
    """Why a row cannot be used: the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def _time(row: dict[str, str], field: str) -> datetime:
    raw = (row.get(field) or "").strip()
    if not raw:
        raise RowProblem(field, "a time is required")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise RowProblem(
            field, f"{raw!r} is not an ISO 8601 time like 2026-03-01T09:30:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _flag(row: dict[str, str], field: str) -> bool | None:
    raw = (row.get(field) or "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise RowProblem(field, f"{raw!r}: use true or false (or leave it blank)")


def _amount(row: dict[str, str]) -> float | None:
    raw = (row.get("amount") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RowProblem("amount", f"{raw!r} is not a number like 12000.50")
    return value


def _text(row: dict[str, str], field: str) -> str | None:
    value = (row.get(field) or "").strip()
    return value or None


def _required(row: dict[str, str], field: str) -> str:
    value = _text(row, field)
    if value is None:
        raise RowProblem(field, "required")
    return value


def _domains(row: dict[str, str]) -> tuple[str, ...]:
    raw = [part.strip() for part in (row.get("domain") or "").split(";") if part.strip()]
    for value in raw:
        if domain_or_none(value) is None:
            raise RowProblem("domain", f"{value!r} is not a web domain like acme.com")
    return tuple(raw)


def _account(row: dict[str, str]) -> CrmAccount:
    domain = _domains(row)
    if len(domain) != 1:
        raise RowProblem("domain", "one web domain is required")
    email, name = _text(row, "owner_email"), _text(row, "owner_name")
    if email is not None and "@" not in email:
        raise RowProblem("owner_email", f"{email!r} is not an email address")
    owner = None
    if email or name:
        owner = CrmOwner(_text(row, "owner_id") or email or name or "", email, name)
    return CrmAccount(
        crm_id=_text(row, "id") or f"sandbox:{domain[0]}",
        domain=domain[0],
        owner=owner,
        modified_at=_time(row, "modified_at"),
    )


def _deal(row: dict[str, str]) -> CrmDeal:
    domains = _domains(row)
    if not domains:
        raise RowProblem("domain", "a deal needs the domain of its company")
    return CrmDeal(
        crm_id=_required(row, "id"),
        name=_text(row, "name"),
        stage=_required(row, "stage"),
        pipeline=_text(row, "pipeline"),
        closed=_flag(row, "closed"),
        won=_flag(row, "won"),
        amount=_amount(row),
        domains=domains,
        modified_at=_time(row, "modified_at"),
    )


def _meeting(row: dict[str, str]) -> CrmMeeting:
    raw = row.get("attendee_emails") or row.get("attendee_email") or ""
    parts = raw.replace(",", ";").split(";")
    emails = tuple(part.strip().lower() for part in parts if part.strip())
    for email in emails:
        if "@" not in email:
            raise RowProblem("attendee_emails", f"{email!r} is not an email address")
    domains = _domains(row)
    if not emails and not domains:
        raise RowProblem("attendee_emails", "a meeting needs an attendee's email or a domain")
    return CrmMeeting(
        crm_id=_required(row, "id"),
        title=_text(row, "title"),
        start_at=_time(row, "start_at"),
        outcome=(_text(row, "outcome") or "").upper() or None,
        attendee_emails=emails,
        domains=domains,
        modified_at=_time(row, "modified_at"),
    )


PARSERS = {"accounts": _account, "deals": _deal, "meetings": _meeting}


class SandboxCrm(CrmBackend):
    """A CRM made of files in `folder` (see the module docstring); no network, no inventions.

    `notes` collects what a pull of a missing file should tell the user."""

    name = "sandbox"
    batch_size = 1000

    def __init__(self, folder: Path, page_size: int = PAGE_SIZE) -> None:
        self.folder = Path(folder)
        self.page_size = page_size
        self.notes: list[str] = []

    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        """Append each account to pushed.jsonl and report it updated."""
        result = WriteBackResult()
        lines = []
        now = datetime.now(UTC).isoformat()
        for number, account in enumerate(accounts, start=1):
            domain = domain_or_none(str(account.get("domain") or ""))
            if domain is None:
                result.failures[f"<row {number}>"] = "no web domain to file the account under"
                continue
            lines.append(json.dumps({**account, "domain": domain, "pushed_at": now}, default=str))
            result.crm_ids[domain] = (known_ids or {}).get(domain) or f"sandbox:{domain}"
        if lines:
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / PUSHED_FILE).open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
            result.requests = 1
        result.updated = len(lines)
        return result

    def pull_notes(self) -> list[str]:
        """Where to put the files a pull found missing."""
        return list(self.notes)

    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        """The rows of `kind`'s file modified after `cursor`, in pages of whole times."""
        path = self.folder / FILES[kind]
        if not path.is_file():
            self.notes.append(
                f"CRM sandbox: no {FILES[kind]} in {self.folder}, no {kind} pulled; put one "
                f"there with the columns {COLUMNS[kind]} (see connectors/crm/README.md)"
            )
            return
        records, skipped, held = read_rows(path, kind)
        since = datetime.fromisoformat(cursor) if cursor else None
        fresh = sorted(
            (r for r in records if since is None or r.modified_at > since),
            key=lambda r: r.modified_at,
        )
        # a bad row holds the cursor below its time (where it has none, where it is), so
        # that once fixed it is read, even if rows after it were applied meanwhile
        hold = _hold(held, since, bool(skipped))
        pages = list(_pages(fresh, self.page_size))
        if not pages:
            if skipped:  # nothing new, but the bad rows are said
                yield PullPage(kind, [], cursor or "", skipped)
            return
        reached = cursor or ""
        for index, page in enumerate(pages):
            before = [r.modified_at for r in page if hold is None or r.modified_at < hold]
            if before:
                reached = max(before).isoformat()
            yield PullPage(kind, page, reached, skipped if index == 0 else [])


def _hold(held: list[datetime | None], since: datetime | None, any_bad: bool) -> datetime | None:
    """The time the cursor must stay below: the earliest bad row's after the cursor; the
    cursor itself when a bad row's time cannot be read (or the file cannot be)."""
    if not any_bad:
        return None
    if any(time is None for time in held) or len(held) == 0:
        return since or datetime.min.replace(tzinfo=UTC)
    later = [time for time in held if time is not None and (since is None or time > since)]
    return min(later) if later else None


def read_rows(path: Path, kind: str) -> tuple[list[CrmRecord], list[str], list[datetime | None]]:
    """Every usable record of a sandbox file, `file:line: field: why` per bad row, and each
    bad row's modification time (None when it cannot be read)."""
    parse = PARSERS[kind]
    records: list[CrmRecord] = []
    skipped: list[str] = []
    held: list[datetime | None] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            missing = [name for name in REQUIRED[kind] if name not in header]
            if missing:
                return (
                    [],
                    [
                        f"{path}:1: {', '.join(missing)}: missing column(s); the columns "
                        f"are {COLUMNS[kind]}"
                    ],
                    [],
                )
            for row in reader:
                try:
                    records.append(parse(row))
                except RowProblem as exc:
                    skipped.append(f"{path}:{reader.line_num}: {exc}")
                    try:
                        held.append(_time(row, "modified_at"))
                    except RowProblem:
                        held.append(None)
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror}"], []
    except UnicodeDecodeError:
        return [], [f"{path}: not UTF-8 text; save the file as UTF-8"], []
    except csv.Error as exc:
        return records, [*skipped, f"{path}: not CSV past this point ({exc})"], [*held, None]
    return records, skipped, held


def _pages(records: list[CrmRecord], size: int) -> Iterator[list[CrmRecord]]:
    """Pages of about `size` records that never split records of one modification time, so
    a cursor at a page's last time loses nothing."""
    page: list[CrmRecord] = []
    for record in records:
        if len(page) >= size and record.modified_at != page[-1].modified_at:
            yield page
            page = []
        page.append(record)
    if page:
        yield page

"""Import one CSV file into the database: read, parse, upsert and report the rejects and
the warnings.

The only part of the importing stage that touches the database; contacts stream through in
batches, and their warnings straight to the warnings file, so memory does not grow with the
file.
"""

from __future__ import annotations

import functools
import gc
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from core.currency import load_currency_rates
from core.settings import Settings
from stages.importing.csv_file import (
    CsvRow,
    CsvTable,
    Reject,
    Rows,
    gc_paused,
    inspect_source,
    read_csv,
    read_rows,
)
from stages.importing.intent import (
    IntentParse,
    detect_source,
    intent_events,
    intent_parser,
    source_name,
)
from stages.importing.limits import listing
from stages.importing.records import (
    Merger,
    ParseResult,
    contact_merger,
    contact_parser,
    parse_accounts,
    parse_suppressions,
)
from stages.importing.rejects import write_rejects
from stages.importing.values import normalise_email
from stages.importing.warnings_file import WARNINGS_KEPT, FieldWarning, WarningLog

if TYPE_CHECKING:
    from models.store import UpsertCounts

__all__ = ["IMPORT_BATCH_ROWS", "ImportReport", "import_file"]


@dataclass
class ImportReport:
    """What an import did, for the command line and the demo.

    `warnings` are the first `WARNINGS_KEPT` of `warning_count` (all are in
    `warnings_path`); `warned` counts the kept rows with at least one."""

    imported: int
    updated: int
    unchanged: int
    rejects: list[Reject]
    rejects_path: Path | None
    notes: list[str]
    warnings: list[FieldWarning] = field(default_factory=list)
    warned: int = 0
    warning_count: int = 0
    warnings_path: Path | None = None


IMPORT_BATCH_ROWS = 20_000


def import_file(
    kind: str,
    path: Path,
    engine: Engine,
    settings: Settings,
    *,
    batch_rows: int = IMPORT_BATCH_ROWS,
    strict: bool = False,
    source: str | None = None,
    as_of: date | None = None,
) -> ImportReport:
    """Read, validate and bulk-upsert one CSV file; rejected rows go to FILE.rejects.csv,
    warnings about kept rows to FILE.warnings.csv.

    Good rows are written even when others are rejected; re-importing the same file
    changes nothing; a file that cannot be read changes nothing. Only identity rejects a
    row; a cell that cannot be used is blanked, mapped or converted with a warning, or with
    `strict` rejects its row. Contacts stream through in batches of `batch_rows`, so memory
    does not grow with the file (see `_import_contacts`). Intent data (`kind` "intent")
    takes the provider's name as `source` (else guessed from the columns) and, for a file
    without a date column, the day of the export as `as_of` (see `_import_intent`)."""
    from models import store

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    if kind not in ("accounts", "contacts", "suppressions", "intent"):
        raise ValueError(f"unknown import kind {kind!r}")
    if kind != "intent" and (source is not None or as_of is not None):
        raise ValueError("source and as_of are for intent data only")
    path = Path(path)
    source = None if source is None else source_name(source)
    log = WarningLog(WARNINGS_KEPT, source=path)
    staged = 0
    notes = []
    try:
        if kind == "intent":
            table, rejects, merged, counts = _import_intent(
                path, engine, settings, strict, log, source, as_of, notes
            )
        elif kind == "contacts":
            table, rejects, merged, counts = _import_contacts(
                path, engine, settings, batch_rows, strict, log
            )
        else:
            table = read_csv(path)
            log.format_like(table.delimiter, table.encoding)
            if kind == "accounts":
                rates = load_currency_rates(settings.currency_rates)
                result = parse_accounts(table, settings.currency, rates, strict=strict, log=log)
                counts = store.upsert_accounts(engine, result.records)
                staged = _set_stages(engine, path, result, notes)
            else:
                result = parse_suppressions(table, strict=strict, log=log)
                added = store.add_suppressions(engine, result.records)
                counts = store.UpsertCounts(imported=added, unchanged=len(result.records) - added)
            rejects, merged = result.rejects, result.duplicates_merged
        written = write_rejects(path, table, rejects)
        warned_path = log.finish()
    except BaseException:
        log.discard()
        raise
    if staged:
        notes.append(f"{path}: stages set: {staged} (kept in each account's stage history)")
    if table.encoding != "utf-8":
        notes.append(f"{path}: not UTF-8; read as {table.encoding}")
    if merged:
        notes.append(f"{path}: {merged} duplicate rows merged")
    if counts.unchanged:
        notes.append(f"{path}: {counts.unchanged} rows already up to date")
    return ImportReport(
        imported=counts.imported,
        updated=counts.updated,
        unchanged=counts.unchanged,
        rejects=rejects,
        rejects_path=written,
        notes=notes,
        warnings=log.kept,
        warned=log.rows,
        warning_count=log.count,
        warnings_path=warned_path,
    )


def _set_stages(
    engine: Engine, path: Path, result: ParseResult, notes: list[str] | None = None
) -> int:
    """Apply the file's `stage` column: each real change is kept in the stage history with
    the file and line as its reason; a stage this import source set before is not set again,
    so importing the same file again never moves back an account that has moved on since.
    A stage a person or the CRM set since stands (precedence person > crm > import), and
    `notes` says which."""
    from stages.engagement.journey import WantedStage, set_stages

    wanted = {
        record["domain"]: WantedStage(
            record["stage"], f"imported from {path.name}, line {lines[-1]}"
        )
        for record, lines in zip(result.records, result.record_lines, strict=True)
        if record.get("stage")
    }
    if not wanted:
        return 0
    kept: list[tuple[str, str]] = []
    made = set_stages(engine, wanted, "import", once=True, kept=kept)
    if kept and notes is not None:
        shown = ", ".join(f"{domain} (set by {who})" for domain, who in kept[:10])
        more = f" and {len(kept) - 10} more" if len(kept) > 10 else ""
        notes.append(
            f"{path}: stages kept, set since by a person or the CRM, which come before an "
            f"import: {shown}{more} (`abm accounts set-stage` changes one)"
        )
    return len(made)


def _import_intent(
    path: Path,
    engine: Engine,
    settings: Settings,
    strict: bool,
    log: WarningLog,
    source: str | None,
    as_of: date | None,
    notes: list[str],
) -> tuple[CsvTable, list[Reject], int, UpsertCounts]:
    """Import intent signals as engagement events of type `intent`, one per account, topic
    and day from one source, then roll up the accounts whose signals changed, in the same
    transaction, so that their scores and stages count them when the import returns.

    Rows stream in one pass (parsed records, not raw rows, are what is kept); a signal for a
    domain that is not an imported account is rejected, never made into an account. The
    engagement rules are read before anything is written: a bad rules file writes nothing.
    """
    from models import store
    from models.db import session_scope
    from models.tables import utcnow
    from stages.engagement.rollup import counted_types, engagement_rules_from, rollup_in

    rules = engagement_rules_from(settings)
    found = inspect_source(path)
    log.format_like(found.delimiter, found.encoding)
    known = store.known_domains(engine)
    now = utcnow()

    def parse(rows: Rows) -> IntentParse:
        """One pass (read_rows may start a second one, checking every row's quoting)."""
        result = IntentParse()
        pending = iter(rows)
        head = list(itertools.islice(pending, 1))  # reading a row reads the header first
        parse_rows = intent_parser(
            rows.table([]), known, today=now.date(), as_of=as_of, strict=strict
        )
        with gc_paused():
            parse_rows(itertools.chain(head, pending), result)
        return result

    rows, result = read_rows(found, parse)
    table = rows.table([])
    for line, warns in result.warnings:
        log.add(line, warns)
    detected = detect_source(table.original_header or table.header)
    if source is None:
        source = detected or "csv"
        how = "recognised from its columns" if detected else "not recognised from its columns"
        notes.append(f"{path}: intent source: {source} ({how}; --source names it)")
    else:
        notes.append(f"{path}: intent source: {source}")
    read = ", ".join(f"{what} = {column}" for what, column in result.columns.items())
    notes.append(f"{path}: columns read: {read}")
    if result.unused:
        notes.append(f"{path}: columns not used: {listing(result.unused)}")
    if as_of is not None and "date" not in result.columns:
        notes.append(f"{path}: every signal dated {as_of.isoformat()} (--date)")
    elif as_of is not None:
        notes.append(
            f"{path}: --date {as_of.isoformat()} not used: the file's {result.columns['date']} "
            "column dates each signal"
        )
    ids = store.account_ids_by_domain(engine, {record["domain"] for record in result.records})
    events = intent_events(result.records, source, ids)
    # intent that weighs nothing under the rules (no topic listed, no `or_intent`) cannot
    # change a score or a stage: then there is nothing to roll up
    counted = "intent" in counted_types(rules)
    with session_scope(engine) as session:
        counts, touched = store.upsert_events(session, engine, events, now)
        if touched and counted:
            rollup_in(session, touched, rules, now)
    if touched and counted:
        notes.append(f"{path}: engagement rolled up for {len(touched)} accounts")
    elif touched:
        notes.append(
            f"{path}: no topic weighs anything in the engagement rules (`topics`), so these "
            "signals change no score or stage yet"
        )
    rejects = [*rows.rejects, *result.rejects]
    rejects.sort(key=lambda r: r.line)
    return table, rejects, result.merged, counts


def _import_contacts(
    path: Path, engine: Engine, settings: Settings, batch_rows: int, strict: bool, log: WarningLog
) -> tuple[CsvTable, list[Reject], int, UpsertCounts]:
    """Import contacts in two passes over the file, each in constant memory.

    The first pass reads the whole file, so that every whole-file error is raised before a
    row is written, and notes which emails may repeat (`_repeated`). The second validates,
    merges, classifies and upserts `batch_rows` rows at a time, in one transaction
    (`store.contact_batches`); a contact whose email repeats in a later batch waits in a
    `_Carry` until its last row, so duplicates merge, and are counted, as if the whole file
    were read at once. Warnings go to `log` as the rows are parsed. Returns the table
    (header only), the rejects, the number of rows merged into others and the upsert counts.
    """
    from models import store
    from stages.committee.titles import classify_title, load_title_table

    source = inspect_source(path)
    log.format_like(source.delimiter, source.encoding)
    bits = 1 << min(26, max(16, source.file.size().bit_length()))
    scan, repeated = read_rows(source, functools.partial(_repeated, key=_email_key, bits=bits))
    parse = contact_parser(scan.table([]), store.known_domains(engine), strict=strict, log=log)
    titles = load_title_table(settings.title_rules)
    rows = Rows(source, check_quotes=scan.check_quotes)
    pending = iter(rows)
    carry = _Carry(repeated, contact_merger())
    rejects: list[Reject] = []
    merged = 0

    def step(batches: store.ContactBatches) -> bool:
        """Parse, merge, classify and write the next batch; False once the file is done."""
        nonlocal merged
        batch = list(itertools.islice(pending, batch_rows))
        if batch:
            merger = contact_merger()
            parse(batch, merger, rejects)
            merged += merger.merged
            records = carry.settle(merger, batch[-1].line)
        else:
            records = carry.rest()
        for record in records:
            found = classify_title(record.get("title"), titles)
            record.update(seniority=found.seniority, function=found.function, role=found.role)
        batches.write(records)
        return bool(batch)

    # The collector stays off (see `gc_paused`): a batch's rows and records form no cycles
    # and are freed as soon as `step` returns, so a young-generation pass after each batch
    # finds the little cyclic garbage the database layer leaves, without rescanning the rest.
    with gc_paused(), store.contact_batches(engine) as batches:
        while step(batches):
            gc.collect(1)
    rejects.extend(rows.rejects)
    rejects.sort(key=lambda r: r.line)
    return rows.table([]), rejects, merged + carry.merged, batches.counts


def _email_key(values: dict[str, str]) -> str | None:
    """The key `parse_contacts` files a row under, if it has one."""
    raw = values.get("email")
    if not raw:
        return None
    try:
        return normalise_email(raw)
    except ValueError:
        return None


def _repeated(
    rows: Iterable[CsvRow], key: Callable[[dict[str, str]], Any], bits: int
) -> dict[int, int]:
    """hash(key) -> line of the last row, for every key that may be on more than one row.

    The keys seen are remembered in a Bloom filter (two bits per key in a fixed array of
    `bits` bits), so the pass needs the same memory for any file. A key it wrongly takes for
    seen costs one entry here and nothing else: `_Carry` only holds a record back while rows
    for its key are still to come.
    """
    seen = bytearray(bits >> 3)
    mask = bits - 1
    repeated: dict[int, int] = {}
    with gc_paused():
        for row in rows:
            k = key(row.values)
            if k is None:
                continue
            h = hash(k)
            a = h & mask
            b = (h >> 32) & mask
            bit_a = 1 << (a & 7)
            bit_b = 1 << (b & 7)
            if seen[a >> 3] & bit_a and seen[b >> 3] & bit_b:
                repeated[h] = row.line
            else:
                seen[a >> 3] |= bit_a
                seen[b >> 3] |= bit_b
    return repeated


class _Carry:
    """Merged records whose key still has rows in a later batch, held until their last row.

    So a contact on lines 10 and 900,000 is written once, merged from both rows in file
    order, and counted once, as when the whole file was merged in memory. Only keys with
    rows still to come are held: memory follows the open duplicates, not the file.
    """

    def __init__(self, repeated: dict[int, int], merger: Merger) -> None:
        self.repeated = repeated
        self.merge = merger.merge
        self.waiting: dict[Any, tuple[int, dict[str, Any]]] = {}
        self.due: list[tuple[int, int, Any]] = []  # (last line, tie-breaker, key), a heap
        self.order = itertools.count()
        self.merged = 0

    def settle(self, batch: Merger, last_line: int) -> list[dict[str, Any]]:
        """The records to write after a batch whose rows end at `last_line`: its own, in
        first-seen order, except those to be continued, then held ones now complete."""
        repeated, waiting = self.repeated, self.waiting
        if not repeated:
            return batch.records
        ready = []
        records = batch.records
        for key, i in batch.index.items():
            record = records[i]
            held = waiting.pop(key, None)
            if held is not None:
                self.merge(held[1], record)
                self.merged += 1
                record = held[1]
            end = repeated.get(hash(key), 0)
            if end > last_line:
                if held is None or held[0] != end:
                    heapq.heappush(self.due, (end, next(self.order), key))
                waiting[key] = (end, record)
            else:
                ready.append(record)
        due = self.due
        while due and due[0][0] <= last_line:
            end, _, key = heapq.heappop(due)
            held = waiting.get(key)
            if held is not None and held[0] == end:
                del waiting[key]
                ready.append(held[1])
        return ready

    def rest(self) -> list[dict[str, Any]]:
        """What still waits at the end of the file: nothing, unless it changed between the
        two passes."""
        ready = [record for _, record in self.waiting.values()]
        self.waiting.clear()
        self.due.clear()
        return ready

"""Read and validate CSV imports (accounts, contacts, suppressions) without touching the database.

The CLI reads a file with `read_csv`, turns it into clean, de-duplicated records with one of
the `parse_*` functions, upserts them and writes the rows it could not use with
`write_rejects`. Keeping this layer pure makes it cheap to test exhaustively: every data row
ends up either in a record or in a reject, never silently dropped.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gc
import heapq
import io
import itertools
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

from sqlalchemy import Engine

from core.errors import ConfigError
from core.settings import Settings
from stages.importing.values import (
    HOST,
    PERSONAL_MAILBOX_DOMAINS,
    SEPARATOR_JUNK,
    TRIM,
    nfc,
    normalise_consent,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_linkedin_url,
    normalise_timezone,
    parse_number,
    show,
)

if TYPE_CHECKING:
    from models.store import UpsertCounts

__all__ = [
    "PERSONAL_MAILBOX_DOMAINS",
    "CsvRow",
    "CsvTable",
    "ImportFileError",
    "ParseResult",
    "Reject",
    "normalise_consent",
    "normalise_country",
    "normalise_domain",
    "normalise_email",
    "normalise_linkedin_url",
    "normalise_timezone",
    "parse_accounts",
    "parse_contacts",
    "parse_number",
    "parse_suppressions",
    "read_csv",
    "rejects_path",
    "write_rejects",
]


class ImportFileError(ConfigError):
    """The file as a whole cannot be imported; the message names the file (and line)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.detail = message
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass(slots=True)
class CsvRow:
    """One data record; `line` is the physical line where it starts (header is line 1)."""

    line: int
    values: dict[str, str]


@dataclass(slots=True)
class Reject:
    """A row that cannot be used, with a reason a marketer can act on."""

    line: int
    reason: str
    values: dict[str, str]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class CsvTable:
    """A decoded CSV file with normalised header names.

    `rejects` holds rows that were unreadable as rows (too many fields, broken quoting); the
    `parse_*` functions pass them on so they are reported with the others.
    """

    header: list[str]
    rows: list[CsvRow]
    delimiter: str
    encoding: str
    path: Path
    original_header: list[str] = field(default_factory=list)
    header_line: int = 1
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class ParseResult:
    """Clean records in first-seen order plus everything that was rejected.

    `record_lines[i]` lists the lines merged into `records[i]`, so the caller can point at
    the source when the database refuses a record. Invariant:
    rows_read == len(records) + duplicates_merged + len(rejects).
    """

    records: list[dict]
    rejects: list[Reject]
    rows_read: int
    duplicates_merged: int
    record_lines: list[list[int]] = field(default_factory=list)


_HEADER_JUNK = re.compile(r"\W+")
_HEADER_ALIASES: dict[str, str] = {
    "e_mail": "email",
    "email_address": "email",
    "e_mail_address": "email",
    "work_email": "email",
    "business_email": "email",
    "website": "domain",
    "web_site": "domain",
    "company_domain": "domain",
    "company_website": "domain",
    "domain_name": "domain",
    "firstname": "first_name",
    "given_name": "first_name",
    "forename": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "job_title": "title",
    "jobtitle": "title",
    "position": "title",
    "linkedin": "linkedin_url",
    "linkedin_profile": "linkedin_url",
    "linkedin_profile_url": "linkedin_url",
    "time_zone": "timezone",
    "tz": "timezone",
    "employee_count": "employees",
    "number_of_employees": "employees",
    "num_employees": "employees",
    "headcount": "employees",
    "company_size": "employees",
    "revenue": "annual_revenue",
    "annualrevenue": "annual_revenue",
    "technology": "technologies",
    "tech_stack": "technologies",
    "techstack": "technologies",
    "sector": "industry",
    "country_code": "country",
    "tier_override": "tier",
    "account_tier": "tier",
}
_ACCOUNT_NAME_COLUMNS = ("name", "company", "company_name", "account_name", "organization")
_REJECT_COLUMNS = ["line", "reason"]
_SEP_LINE = re.compile(r"^\ufeff?sep=(.)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- reading

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a bulk loop.

    Parsing 100,000 rows allocates hundreds of thousands of dicts and lists that form no
    cycles; with the collector on, its full passes rescan the growing result again and again
    and cost about a third of the run time. Reference counting still frees everything.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _bulk(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `func` with the collector paused (see `_gc_paused`)."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _gc_paused():
            return func(*args, **kwargs)

    return wrapper


_CHUNK = 1 << 20
_NUL = (
    "contains a NUL character; the file may be UTF-16 without a byte-order mark "
    "or not a text file at all"
)


@dataclass(frozen=True)
class _File:
    """A file the import reads more than once. A pipe or device (`/dev/stdin`) can be read
    only once, so its bytes are kept; a regular file is read from disk on every pass."""

    path: Path
    data: bytes | None = None

    @classmethod
    def at(cls, path: Path) -> _File:
        try:
            mode = path.stat().st_mode
        except OSError:
            return cls(path)  # reading it raises the error, naming the file
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return cls(path)
        return cls(path, b"".join(cls(path).chunks()))

    def chunks(self) -> Iterator[bytes]:
        """The bytes a megabyte at a time; reading errors name the file."""
        if self.data is not None:
            for start in range(0, len(self.data), _CHUNK):
                yield self.data[start : start + _CHUNK]
            return
        path = self.path
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise ImportFileError(path, "no such file") from None
        except IsADirectoryError:
            raise ImportFileError(path, "is a directory, not a CSV file") from None
        except OSError as exc:
            raise ImportFileError(path, f"cannot be read ({exc.strerror or exc})") from None

    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def text(self, encoding: str) -> TextIO:
        """Text lines with their line ends (a lone CR ends a line too), as csv expects."""
        if self.data is not None:
            return io.TextIOWrapper(io.BytesIO(self.data), encoding=encoding, newline="")
        try:
            return self.path.open(encoding=encoding, newline="")
        except OSError as exc:
            raise ImportFileError(self.path, f"cannot be read ({exc.strerror or exc})") from None


def _undecodable(file: _File, codec: str, skip: int = 0) -> tuple[int | None, bool]:
    """Decode the whole file a chunk at a time without keeping it: the offset of the first
    byte that is not `codec` (None if all are) and whether the text holds a NUL."""
    decoder = codecs.getincrementaldecoder(codec)()
    fed = 0
    buffered = 0
    nul = False
    try:
        for chunk in file.chunks():
            if skip and not fed:
                chunk = chunk[skip:]
            buffered = len(decoder.getstate()[0])
            nul = "\x00" in decoder.decode(chunk) or nul
            fed += len(chunk)
        buffered = len(decoder.getstate()[0])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return skip + fed - buffered + exc.start, nul
    return None, nul


def _byte_line(file: _File, offset: int) -> int:
    """The line (counting LF bytes, as an editor would) that holds the byte at `offset`."""
    newlines = 0
    for chunk in file.chunks():
        if offset < len(chunk):
            return newlines + chunk.count(b"\n", 0, offset) + 1
        newlines += chunk.count(b"\n")
        offset -= len(chunk)
    return newlines + 1


def _encoding(file: _File) -> str:
    """UTF-8 (BOM optional), UTF-16 with a BOM, else Windows-1252: the whole file must decode
    and may not hold a NUL. Reads the file once without keeping it."""
    path = file.path
    chunks = file.chunks()
    head = next(chunks, b"")
    blank = not head.strip(b" \t\r\n")
    for chunk in chunks if blank else ():
        if chunk.strip(b" \t\r\n"):
            blank = False
            break
    chunks.close()
    if blank:
        raise ImportFileError(path, "the file is empty")
    if head.startswith(b"PK\x03\x04"):
        raise ImportFileError(
            path, "is an Excel workbook (or another zip file), not CSV; save it as 'CSV UTF-8'"
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        tries = [("utf-16", "utf-16", 0, "is not valid UTF-16 text")]
    elif head.startswith(b"\xef\xbb\xbf"):
        failure = "starts like UTF-8 but contains bytes that are not UTF-8"
        tries = [("utf-8-sig", "utf-8", 3, failure)]
    else:
        failure = "is neither UTF-8 nor Windows-1252 text; save it as 'CSV UTF-8'"
        tries = [("utf-8", "utf-8", 0, ""), ("cp1252", "cp1252", 0, failure)]
    for encoding, codec, skip, failure in tries:
        offset, nul = _undecodable(file, codec, skip)
        if offset is not None:
            if failure:
                raise ImportFileError(path, failure, _byte_line(file, offset))
            continue
        if nul:
            with file.text(encoding) as handle:
                line = next(n for n, text in enumerate(handle, 1) if "\x00" in text)
            raise ImportFileError(path, _NUL, line)
        return encoding
    raise AssertionError("cp1252 is always tried last")


def _sniff(lines: Iterable[str]) -> tuple[str, int]:
    """Pick the delimiter from the header line (quotes respected); honour Excel's `sep=`.

    Returns the delimiter and the index of the first line the CSV reader should see. Reads
    only as far as the header.
    """
    it = iter(lines)
    start = 0
    head = next(it, None)
    while head is not None and not head.strip(TRIM + ',;\t"'):
        start += 1
        head = next(it, None)
    if head is None:
        return ",", 0
    match = _SEP_LINE.match(head.rstrip("\r\n"))
    if match and match.group(1) in ",;\t|":
        return match.group(1), start + 1
    counts = {",": 0, ";": 0, "\t": 0}
    in_quotes = False
    scanned = 0
    for line in itertools.chain([head], it):
        for ch in line:
            if ch == '"':
                in_quotes = not in_quotes
            elif not in_quotes and ch in counts:
                counts[ch] += 1
        scanned += len(line)
        if not in_quotes or scanned > 65536:
            break
    best = max(counts, key=lambda d: counts[d])
    return (best if counts[best] else ","), 0


@functools.cache
def _record_patterns(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Regexes for a well-quoted record and for one that ends inside an open quote.

    Like the csv module with skipinitialspace, but whitespace after a closing quote is
    tolerated (`"Acme, Inc" ,x` is a common hand edit and means no harm).
    """
    d = re.escape(delimiter)
    quoted = rf'[ ]*"(?:[^"]|"")*"[^\S\r\n{d}]*'
    unquoted = rf'[ ]*(?:[^"{d}\r\n ][^{d}\r\n]*)?'
    field = rf"(?:{quoted}|{unquoted})"
    good = re.compile(rf"{field}(?:{d}{field})*(?:\r\n|\r|\n)?")
    unclosed = re.compile(rf'(?:{field}{d})*[ ]*"(?:[^"]|"")*')
    return good, unclosed


def _quote_problem(raw: str, delimiter: str) -> str | None:
    """None for a well-quoted record, else "unclosed" or "misplaced"."""
    good, unclosed = _record_patterns(delimiter)
    if good.fullmatch(raw):
        return None
    return "unclosed" if unclosed.fullmatch(raw) else "misplaced"


def _normalise_header(raw: list[str], path: Path, line: int, offset: int = 0) -> list[str]:
    """Canonical column names; `offset` counts leading columns already dropped."""
    names = []
    for i, cell in enumerate(raw, start=1 + offset):
        name = _HEADER_JUNK.sub("_", cell.lower()).strip("_")
        names.append(name or f"column_{i}")
    taken = set(names)
    for i, name in enumerate(names):
        target = _HEADER_ALIASES.get(name)
        if target and target not in taken:
            names[i] = target
            taken.add(target)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            j = seen[name]
            raise ImportFileError(
                path,
                f"columns {j + 1 + offset} ('{raw[j]}') and {i + 1 + offset} ('{raw[i]}') "
                f"both mean '{name}'; "
                "remove or rename one",
                line,
            )
        seen[name] = i
    return names


def _row_values(header: list[str], cells: list[str]) -> dict[str, str]:
    values = dict(zip(header, cells, strict=False))
    for k, extra in enumerate(cells[len(header) :], start=1):
        values[f"(extra {k})"] = extra
    for name in header[len(cells) :]:
        values[name] = ""
    return values


@dataclass(frozen=True)
class _Source:
    """How to read a file, decided once by looking at all of it: see `_inspect`."""

    file: _File
    encoding: str
    delimiter: str
    first: int  # lines before the CSV records: blank lines and Excel's `sep=` line

    @property
    def path(self) -> Path:
        return self.file.path


def _inspect(path: Path) -> _Source:
    """Encoding and delimiter, with the whole-file checks that come before any row."""
    file = _File.at(path)
    encoding = _encoding(file)
    with file.text(encoding) as handle:
        delimiter, first = _sniff(handle)
    return _Source(file, encoding, delimiter, first)


class _NotStrict(Exception):
    """Raised by a strict `_Rows` pass at the first quote out of place."""


class _Lines:
    """An iterator of lines that keeps the ones read since `take` and knows when none are
    left: the raw text of each record, for checking its quoting."""

    __slots__ = ("_lines", "_next", "taken")

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._next = next(lines, None)
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._next
        if line is None:
            raise StopIteration
        self._next = next(self._lines, None)
        self.taken.append(line)
        return line

    @property
    def done(self) -> bool:
        return self._next is None

    def take(self) -> str:
        raw = "".join(self.taken)
        self.taken.clear()
        return raw


class _Rows:
    """One pass over the records of a file, yielding its data rows one at a time.

    The header (and `rejects`, rows that are not rows at all) fill in as the pass goes, so
    a file of any size is read in constant memory. `check_quotes` checks each record's
    quoting, which a file that is not strictly quoted needs; `strict` instead raises
    `_NotStrict` at the first quote out of place, which is how a pass finds out.
    """

    def __init__(self, source: _Source, *, check_quotes: bool, strict: bool = False) -> None:
        self.source = source
        self.check_quotes = check_quotes
        self.strict = strict
        self.header: list[str] = []
        self.original_header: list[str] = []
        self.header_line = 0
        self.rejects: list[Reject] = []

    def table(self, rows: list[CsvRow]) -> CsvTable:
        source = self.source
        return CsvTable(
            header=self.header,
            rows=rows,
            delimiter=source.delimiter,
            encoding=source.encoding,
            path=source.path,
            original_header=self.original_header,
            header_line=self.header_line,
            rejects=self.rejects,
        )

    def __iter__(self) -> Iterator[CsvRow]:
        path, delimiter, first = self.source.path, self.source.delimiter, self.source.first
        check_quotes = self.check_quotes
        header: list[str] = []
        skip = 0
        width = 0
        rejects = self.rejects
        strip = str.strip
        trims = itertools.repeat(TRIM)
        end = first
        with self.source.file.text(self.source.encoding) as handle:
            lines: Iterator[str] = itertools.islice(handle, first, None)
            tracked = _Lines(lines) if check_quotes else None
            reader = csv.reader(
                tracked or lines, delimiter=delimiter, skipinitialspace=True, strict=self.strict
            )
            try:
                for cells in reader:
                    start = end + 1
                    end = first + reader.line_num
                    cleaned = list(map(strip, cells, trims))
                    if skip:
                        del cleaned[:skip]
                    problem = None
                    if tracked is not None:
                        raw = tracked.take()
                        if not any(cleaned):
                            continue
                        if '"' in raw:
                            problem = _quote_problem(raw, delimiter)
                        if problem == "unclosed" and tracked.done:
                            raise ImportFileError(
                                path,
                                "a quoted cell starts here and is never closed, so the rest "
                                "of the file cannot be read",
                                start,
                            )
                    elif not any(cleaned):
                        continue
                    n = len(cleaned)
                    if n == width and problem is None:
                        yield CsvRow(start, dict(zip(header, cleaned, strict=False)))
                        continue
                    if not header:
                        if problem is not None:
                            raise ImportFileError(
                                path, f"the header row is badly quoted ({problem})", start
                            )
                        self.header_line = start
                        if len(cleaned) > 2 and [c.lower() for c in cleaned[:2]] == _REJECT_COLUMNS:
                            skip = 2
                        self.original_header = cleaned[skip:]
                        header = _normalise_header(self.original_header, path, start, skip)
                        self.header = header
                        width = len(header)
                        continue
                    spans = f" (lines {start}-{end} were read as one row)" if end > start else ""
                    if problem is not None:
                        reason = (
                            'a quote is out of place (inside a quoted cell write a quote as "")'
                        )
                        rejects.append(Reject(start, reason + spans, _row_values(header, cleaned)))
                        continue
                    if n > width:
                        last = n
                        while last > width and not cleaned[last - 1]:
                            last -= 1
                        if last > width:
                            reason = f"{last} fields, header has {width}" + spans
                            values = _row_values(header, cleaned[:last])
                            rejects.append(Reject(start, reason, values))
                            continue
                        del cleaned[width:]
                    else:
                        cleaned.extend([""] * (width - n))
                    yield CsvRow(start, dict(zip(header, cleaned, strict=False)))
            except csv.Error as exc:
                if self.strict:
                    raise _NotStrict from None
                raise ImportFileError(
                    path,
                    f"cannot be read as CSV ({exc}); is a quote left open?",
                    first + reader.line_num,
                ) from None
        if not header:
            raise ImportFileError(path, "has no header row (all lines are blank)")


def _read(source: _Source, use: Callable[[_Rows], _R]) -> tuple[_Rows, _R]:
    """Run `use` over the rows of a first, strict pass; if the file turns out not to be
    strictly quoted, start again checking every record's quoting (the csv module alone would
    silently misread a stray quote)."""
    rows = _Rows(source, check_quotes=False, strict=True)
    try:
        return rows, use(rows)
    except _NotStrict:
        rows = _Rows(source, check_quotes=True)
        return rows, use(rows)


@_bulk
def read_csv(path: Path) -> CsvTable:
    """Decode and split a CSV file; rows that are not rows at all become table rejects.

    Raises ImportFileError for whole-file problems: missing, empty, undecodable, no header,
    duplicate columns, a quote that is never closed.
    """
    rows, listed = _read(_inspect(Path(path)), list)
    return rows.table(listed)


# --------------------------------------------------------------------------- row parsing


def _missing_column(table: CsvTable, what: str) -> ImportFileError:
    found = ", ".join(table.original_header or table.header)
    hint = ""
    if any("@" in h or HOST.fullmatch(h.lower()) for h in table.original_header):
        hint = "; the first row looks like data: does the file start with a header row?"
    return ImportFileError(
        table.path,
        f"required column {what} is missing (columns found: {found}){hint}",
        table.header_line,
    )


def _first_column(header: Iterable[str], names: Iterable[str]) -> str | None:
    present = set(header)
    return next((n for n in names if n in present), None)


class _Merger:
    """Collects records by key, merging duplicates: later non-empty values win."""

    def __init__(self, list_keys: tuple[str, ...] = (), dict_keys: tuple[str, ...] = ()) -> None:
        self.records: list[dict[str, Any]] = []
        self.lines: list[list[int]] = []
        self.index: dict[Any, int] = {}
        self.merged = 0
        self.list_keys = list_keys
        self.dict_keys = dict_keys

    def add(self, key: Any, record: dict[str, Any], line: int) -> None:
        i = self.index.get(key)
        if i is None:
            self.index[key] = len(self.records)
            self.records.append(record)
            self.lines.append([line])
            return
        self.merged += 1
        self.lines[i].append(line)
        self.merge(self.records[i], record)

    def merge(self, target: dict[str, Any], record: dict[str, Any]) -> None:
        """Fold a later record for the same key into `target`."""
        for name, value in record.items():
            if name in self.list_keys:
                seen = {v.casefold() for v in target[name]}
                target[name].extend(v for v in value if v.casefold() not in seen)
            elif name in self.dict_keys:
                target[name].update(value)
            elif value is not None and value != "":
                target[name] = value

    def result(self, table: CsvTable, rejects: list[Reject]) -> ParseResult:
        rejects.sort(key=lambda r: r.line)
        return ParseResult(
            records=self.records,
            rejects=rejects,
            rows_read=len(table.rows) + len(table.rejects),
            duplicates_merged=self.merged,
            record_lines=self.lines,
        )


def _text(value: str) -> str | None:
    return nfc(value) if value else None


def _attributes(values: dict[str, str], columns: list[str]) -> dict[str, str]:
    return {c: nfc(values[c]) for c in columns if values[c]}


def _field(errors: list[str], name: str, raw: str, parse: Callable[[str], Any]) -> Any:
    """Run a field parser; on failure note "name: message" and return None."""
    try:
        return parse(raw)
    except ValueError as exc:
        errors.append(f"{name}: {exc}")
        return None


_MEMO_SIZE = 1 << 14


class _Memo:
    """A field parser that remembers each raw value's outcome or error message.

    Columns such as time zone, consent or account domain repeat thousands of times. The
    memory is bounded (`_MEMO_SIZE` values, then it starts again), so that a streaming
    import of many accounts' contacts stays flat.
    """

    __slots__ = ("cache", "label", "parse")

    def __init__(self, label: str, parse: Callable[[str], Any]) -> None:
        self.label = f"{label}: " if label else ""
        self.parse = parse
        self.cache: dict[str, tuple[Any, str | None]] = {}

    def __call__(self, raw: str, errors: list[str]) -> Any:
        hit = self.cache.get(raw)
        if hit is None:
            try:
                hit = (self.parse(raw), None)
            except ValueError as exc:
                hit = (None, f"{self.label}{exc}")
            if len(self.cache) >= _MEMO_SIZE:
                self.cache.clear()
            self.cache[raw] = hit
        if hit[1] is not None:
            errors.append(hit[1])
        return hit[0]


_TECH_SPLIT = re.compile(r"[;|,]")
_TIER = re.compile(r"(?:tier|t)?\s*([123])(?:\.0*)?", re.IGNORECASE)


def _technologies(raw: str) -> list[str]:
    result: list[str] = []
    seen: set[str] = set()
    for item in _TECH_SPLIT.split(raw):
        item = nfc(item.strip(TRIM))
        key = item.casefold()
        if item and key not in seen:
            seen.add(key)
            result.append(item)
    return result


def _tier(raw: str) -> int | None:
    if not raw:
        return None
    match = _TIER.fullmatch(raw)
    if not match:
        raise ValueError(f"must be 1, 2 or 3 (or blank), not '{show(raw)}'")
    return int(match.group(1))


def _non_negative(value: float | None, raw: str) -> float | None:
    if value is not None and value < 0:
        raise ValueError(f"'{show(raw)}' is negative")
    return value


_ACCOUNT_FIELDS = ("domain", "industry", "employees", "annual_revenue", "country", "technologies")


@_bulk
def parse_accounts(table: CsvTable) -> ParseResult:
    """Account records keyed by normalised domain; bad rows become rejects with reasons."""
    header = table.header
    if "domain" not in header:
        raise _missing_column(table, "'domain'")
    name_col = _first_column(header, _ACCOUNT_NAME_COLUMNS)
    tier_col = "tier" if "tier" in header else None
    used = {*_ACCOUNT_FIELDS, name_col, tier_col}
    others = [c for c in header if c not in used]
    european = table.delimiter == ";"

    def number(raw: str) -> float | None:
        return _non_negative(parse_number(raw, european=european), raw)

    employees_memo = _Memo("employees", number)
    revenue_memo = _Memo("annual_revenue", number)
    tier_memo = _Memo("tier", _tier)
    merger = _Merger(list_keys=("technologies",), dict_keys=("attributes",))
    rejects = list(table.rejects)
    for row in table.rows:
        v = row.values
        errors: list[str] = []
        raw_domain = v["domain"]
        if raw_domain:
            domain = _field(errors, "domain", raw_domain, normalise_domain)
        else:
            domain = None
            errors.append("domain: missing (every account needs its web domain)")
        raw = v.get("employees", "")
        employees = employees_memo(raw, errors) if raw else None
        raw = v.get("annual_revenue", "")
        revenue = revenue_memo(raw, errors) if raw else None
        raw = v[tier_col] if tier_col else ""
        tier = tier_memo(raw, errors) if raw else None
        if errors:
            rejects.append(Reject(row.line, "; ".join(errors), v))
            continue
        record = {
            "domain": domain,
            "name": _text(v[name_col]) if name_col else None,
            "industry": _text(v.get("industry", "")),
            "employees": None if employees is None else math.floor(employees + 0.5),
            "annual_revenue": revenue,
            "country": normalise_country(v.get("country", "")),
            "technologies": _technologies(v.get("technologies", "")),
            "tier_override": tier,
            "attributes": _attributes(v, others),
        }
        merger.add(domain, record, row.line)
    return merger.result(table, rejects)


_CONTACT_TEXT_FIELDS = ("first_name", "last_name", "title")
_CONTACT_FIELDS = (
    "email",
    *_CONTACT_TEXT_FIELDS,
    "account_domain",
    "linkedin_url",
    "country",
    "timezone",
    "consent",
)


def _known_parent(domain: str, known: set[str]) -> str | None:
    """eu.acme.com -> acme.com when only the parent is a known account."""
    labels = domain.split(".")
    for i in range(1, len(labels) - 1):
        parent = ".".join(labels[i:])
        if parent in known:
            return parent
    return None


@_bulk
def parse_contacts(table: CsvTable, known_domains: Collection[str]) -> ParseResult:
    """Contact records keyed by normalised email, each linked to an already imported account.

    The account comes from `account_domain`, else from the email's domain (or its parent
    domain when only that is a known account). Personal mailboxes need an explicit account.
    """
    parse = _contact_parser(table, known_domains)
    merger = _contact_merger()
    rejects = list(table.rejects)
    parse(table.rows, merger, rejects)
    return merger.result(table, rejects)


def _contact_merger() -> _Merger:
    return _Merger(dict_keys=("attributes",))


def _contact_parser(
    table: CsvTable, known_domains: Collection[str]
) -> Callable[[Iterable[CsvRow], _Merger, list[Reject]], None]:
    """`parse_contacts` for a file's header, as a function of a batch of its rows: the import
    calls it once per batch, keeping what it has learnt about repeated values."""
    header = table.header
    if "email" not in header:
        raise _missing_column(table, "'email'")
    domain_col = _first_column(header, ("account_domain", "domain"))
    used = {*_CONTACT_FIELDS, domain_col}
    others = [c for c in header if c not in used]
    known = {d.strip().lower().rstrip(".") for d in known_domains}

    def account_of(email_domain: str) -> str:
        if email_domain in PERSONAL_MAILBOX_DOMAINS:
            raise ValueError(
                f"'{email_domain}' is a personal mailbox, so the company is unknown: "
                "fill in account_domain"
            )
        if email_domain in known:
            return email_domain
        parent = _known_parent(email_domain, known)
        if parent is None:
            raise ValueError(f"unknown account '{email_domain}' (import accounts first)")
        return parent

    account_memo = _Memo("account_domain", normalise_domain)
    derived_memo = _Memo("", account_of)
    timezone_memo = _Memo("timezone", normalise_timezone)
    consent_memo = _Memo("consent", normalise_consent)
    derived_cache, timezone_cache = derived_memo.cache, timezone_memo.cache
    consent_cache = consent_memo.cache
    columns = {name: name if name in header else None for name in _CONTACT_FIELDS}
    first_c, last_c, title_c = columns["first_name"], columns["last_name"], columns["title"]
    account_c, linkedin_c, country_c = domain_col, columns["linkedin_url"], columns["country"]
    timezone_c, consent_c = columns["timezone"], columns["consent"]

    def parse(rows: Iterable[CsvRow], merger: _Merger, rejects: list[Reject]) -> None:
        index, records, record_lines = merger.index, merger.records, merger.lines
        for row in rows:
            v = row.values
            errors: list[str] = []
            raw = v["email"]
            email = None
            if raw:
                try:
                    email = normalise_email(raw)
                except ValueError as exc:
                    errors.append(f"email: {exc}")
            else:
                errors.append("email: missing (every contact needs an email address)")
            raw = v[account_c] if account_c else ""
            account = None
            if raw:
                account = account_memo(raw, errors)
                if account is not None and account not in known:
                    errors.append(f"unknown account '{account}' (import accounts first)")
            elif email is not None:
                raw = email[email.rindex("@") + 1 :]
                hit = derived_cache.get(raw)
                account = hit[0] if hit and hit[1] is None else derived_memo(raw, errors)
            linkedin = None
            raw = v[linkedin_c] if linkedin_c else ""
            if raw:
                try:
                    linkedin = normalise_linkedin_url(raw)
                except ValueError as exc:
                    errors.append(f"linkedin_url: {exc}")
            timezone = None
            raw = v[timezone_c] if timezone_c else ""
            if raw:
                hit = timezone_cache.get(raw)
                timezone = hit[0] if hit and hit[1] is None else timezone_memo(raw, errors)
            consent = None
            raw = v[consent_c] if consent_c else ""
            if raw:
                hit = consent_cache.get(raw)
                consent = hit[0] if hit and hit[1] is None else consent_memo(raw, errors)
            if errors:
                rejects.append(Reject(row.line, "; ".join(errors), v))
                continue
            first = v[first_c] if first_c else ""
            last = v[last_c] if last_c else ""
            title = v[title_c] if title_c else ""
            country = v[country_c] if country_c else ""
            record = {
                "email": email,
                "first_name": nfc(first) if first else None,
                "last_name": nfc(last) if last else None,
                "title": nfc(title) if title else None,
                "account_domain": account,
                "linkedin_url": linkedin,
                "country": normalise_country(country) if country else None,
                "timezone": timezone,
                "consent": consent,
                "attributes": {c: nfc(v[c]) for c in others if v[c]} if others else {},
            }
            if email in index:
                merger.add(email, record, row.line)
            else:
                index[email] = len(records)
                records.append(record)
                record_lines.append([row.line])

    return parse


_CHANNELS = {
    "all": "all",
    "any": "all",
    "*": "all",
    "email": "email",
    "e_mail": "email",
    "linkedin": "linkedin",
}


def _suppressed_domain(raw: str) -> str:
    """A domain to suppress; "@acme.com" and "*.acme.com" are common ways to write one."""
    s = raw.strip(TRIM)
    for prefix in ("*@", "@", "*."):
        if s.startswith(prefix):
            s = s[len(prefix) :]
            break
    return normalise_domain(s)


@_bulk
def parse_suppressions(table: CsvTable) -> ParseResult:
    """Suppression records (kind, value, channel, reason) from email, domain or value columns.

    A row naming both an email and a domain is rejected rather than guessed: suppressing a
    whole company by mistake, or only one person, are both costly.
    """
    header = table.header
    sources = [c for c in ("email", "domain", "value") if c in header]
    if not sources:
        raise _missing_column(table, "'email', 'domain' or 'value'")
    has_channel = "channel" in header
    has_reason = "reason" in header

    merger = _Merger()
    rejects = list(table.rejects)
    for row in table.rows:
        v = row.values
        errors: list[str] = []
        given = [(c, v[c]) for c in sources if v[c]]
        kind = value = None
        if not given:
            errors.append("no email or domain given")
        elif len(given) > 1:
            errors.append("both " + " and ".join(c for c, _ in given) + " given; use one per row")
        else:
            column, raw = given[0]
            bare = raw.strip(TRIM)
            if column == "email" or (
                column == "value" and "@" in bare and not bare.startswith(("@", "*@"))
            ):
                kind, value = "email", _field(errors, column, raw, normalise_email)
            else:
                kind, value = "domain", _field(errors, column, raw, _suppressed_domain)
        channel = "all"
        raw_channel = v["channel"] if has_channel else ""
        if raw_channel:
            channel = _CHANNELS.get(SEPARATOR_JUNK.sub("_", raw_channel.lower()), "")
            if not channel:
                errors.append(f"channel: '{show(raw_channel)}' is not one of all, email, linkedin")
        if errors:
            rejects.append(Reject(row.line, "; ".join(errors), v))
            continue
        record = {
            "kind": kind,
            "value": value,
            "channel": channel,
            "reason": _text(v["reason"]) if has_reason else None,
        }
        merger.add((kind, value, channel), record, row.line)
    return merger.result(table, rejects)


# --------------------------------------------------------------------------- rejects file


def rejects_path(source: Path) -> Path:
    """accounts.csv -> accounts.rejects.csv, next to the source."""
    source = Path(source)
    return source.with_name(f"{source.stem}.rejects{source.suffix or '.csv'}")


def write_rejects(source: Path, table: CsvTable, rejects: list[Reject]) -> Path | None:
    """Write the rejected rows (line, reason, original columns) so they can be fixed.

    The file keeps the source's delimiter and original column names, so after fixing it can
    be imported again (read_csv drops the leading line and reason columns). A stale rejects
    file from an earlier run is removed when nothing was rejected.
    """
    target = rejects_path(source)
    if not rejects:
        target.unlink(missing_ok=True)
        return None
    originals = table.original_header or table.header
    # an unnamed column keeps its generated name (column_2): read back, it is the same column
    names = {h: o or h for h, o in zip(table.header, originals, strict=False)}
    keys = list(table.header)
    known = set(keys)
    for reject in rejects:
        for key in reject.values:
            if key not in known:
                known.add(key)
                keys.append(key)
    encoding = "utf-8" if table.encoding == "utf-8" else "utf-8-sig"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            if table.delimiter not in ",;\t":
                # only Excel's `sep=` line tells read_csv about any other delimiter
                handle.write(f"sep={table.delimiter}\r\n")
            writer = csv.writer(handle, delimiter=table.delimiter, lineterminator="\r\n")
            writer.writerow(["line", "reason", *(names.get(k, k) for k in keys)])
            for reject in rejects:
                values = reject.values
                writer.writerow([reject.line, reject.reason, *(values.get(k, "") for k in keys)])
        os.chmod(tmp, _rejects_mode(source))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _rejects_mode(source: Path) -> int:
    """The rejects file holds rows of the source (people's names and emails): it gets the
    source's permissions, never wider (it used to be world-readable whatever the source)."""
    try:
        return stat.S_IMODE(os.stat(source).st_mode) & 0o666
    except OSError:
        return 0o600


@dataclass
class ImportReport:
    """What an import did, for the command line and the demo."""

    imported: int
    updated: int
    unchanged: int
    rejects: list[Reject]
    rejects_path: Path | None
    notes: list[str]


IMPORT_BATCH_ROWS = 20_000


def import_file(
    kind: str,
    path: Path,
    engine: Engine,
    settings: Settings,
    *,
    batch_rows: int = IMPORT_BATCH_ROWS,
) -> ImportReport:
    """Read, validate and bulk-upsert one CSV file; rejected rows go to FILE.rejects.csv.

    Good rows are written even when others are rejected; re-importing the same file
    changes nothing; a file that cannot be read changes nothing. Contacts stream through in
    batches of `batch_rows`, so memory does not grow with the file (see `_import_contacts`)."""
    from models import store

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    if kind == "contacts":
        table, rejects, merged, counts = _import_contacts(Path(path), engine, settings, batch_rows)
    else:
        table = read_csv(Path(path))
        if kind == "accounts":
            result = parse_accounts(table)
            counts = store.upsert_accounts(engine, result.records)
        elif kind == "suppressions":
            result = parse_suppressions(table)
            added = store.add_suppressions(engine, result.records)
            counts = store.UpsertCounts(imported=added, unchanged=len(result.records) - added)
        else:
            raise ValueError(f"unknown import kind {kind!r}")
        rejects, merged = result.rejects, result.duplicates_merged
    notes = []
    if table.encoding != "utf-8":
        notes.append(f"{path}: not UTF-8; read as {table.encoding}")
    if merged:
        notes.append(f"{path}: {merged} duplicate rows merged")
    if counts.unchanged:
        notes.append(f"{path}: {counts.unchanged} rows already up to date")
    written = write_rejects(Path(path), table, rejects)
    return ImportReport(
        imported=counts.imported,
        updated=counts.updated,
        unchanged=counts.unchanged,
        rejects=rejects,
        rejects_path=written,
        notes=notes,
    )


def _import_contacts(
    path: Path, engine: Engine, settings: Settings, batch_rows: int
) -> tuple[CsvTable, list[Reject], int, UpsertCounts]:
    """Import contacts in two passes over the file, each in constant memory.

    The first pass reads the whole file, so that every whole-file error is raised before a
    row is written, and notes which emails may repeat (`_repeated`). The second validates,
    merges, classifies and upserts `batch_rows` rows at a time, in one transaction
    (`store.contact_batches`); a contact whose email repeats in a later batch waits in a
    `_Carry` until its last row, so duplicates merge, and are counted, as if the whole file
    were read at once. Returns the table (header only), the rejects, the number of rows
    merged into others and the upsert counts.
    """
    from models import store
    from stages.committee.titles import classify_title, load_title_table

    source = _inspect(path)
    bits = 1 << min(26, max(16, source.file.size().bit_length()))
    scan, repeated = _read(source, functools.partial(_repeated, key=_email_key, bits=bits))
    parse = _contact_parser(scan.table([]), store.known_domains(engine))
    titles = load_title_table(settings.title_rules)
    rows = _Rows(source, check_quotes=scan.check_quotes)
    pending = iter(rows)
    carry = _Carry(repeated, _contact_merger())
    rejects: list[Reject] = []
    merged = 0

    def step(batches: store.ContactBatches) -> bool:
        """Parse, merge, classify and write the next batch; False once the file is done."""
        nonlocal merged
        batch = list(itertools.islice(pending, batch_rows))
        if batch:
            merger = _contact_merger()
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

    # The collector stays off (see `_gc_paused`): a batch's rows and records form no cycles
    # and are freed as soon as `step` returns, so a young-generation pass after each batch
    # finds the little cyclic garbage the database layer leaves, without rescanning the rest.
    with _gc_paused(), store.contact_batches(engine) as batches:
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
    with _gc_paused():
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

    def __init__(self, repeated: dict[int, int], merger: _Merger) -> None:
        self.repeated = repeated
        self.merge = merger.merge
        self.waiting: dict[Any, tuple[int, dict[str, Any]]] = {}
        self.due: list[tuple[int, int, Any]] = []  # (last line, tie-breaker, key), a heap
        self.order = itertools.count()
        self.merged = 0

    def settle(self, batch: _Merger, last_line: int) -> list[dict[str, Any]]:
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

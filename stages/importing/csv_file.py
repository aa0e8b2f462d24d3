"""Read a CSV export into rows, whatever its encoding, delimiter, quoting or header names.

Marketers bring files from Excel, CRMs and hand edits; this module turns any of them into a
`CsvTable` of normalised columns, or an `ImportFileError` naming the file and line, so the
parsing in `records` only ever sees well-formed rows.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gc
import io
import itertools
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TextIO, TypeVar

from core.domains import TRIM
from core.errors import ConfigError

__all__ = ["CsvRow", "CsvTable", "ImportFileError", "Reject", "read_csv"]


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
_REJECT_COLUMNS = ["line", "reason"]
_SEP_LINE = re.compile(r"^\ufeff?sep=(.)\s*$", re.IGNORECASE)


_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


def bulk(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `func` with the collector paused (see `gc_paused`)."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with gc_paused():
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
    """How to read a file, decided once by looking at all of it: see `inspect_source`."""

    file: _File
    encoding: str
    delimiter: str
    first: int  # lines before the CSV records: blank lines and Excel's `sep=` line

    @property
    def path(self) -> Path:
        return self.file.path


def inspect_source(path: Path) -> _Source:
    """Encoding and delimiter, with the whole-file checks that come before any row."""
    file = _File.at(path)
    encoding = _encoding(file)
    with file.text(encoding) as handle:
        delimiter, first = _sniff(handle)
    return _Source(file, encoding, delimiter, first)


class _NotStrict(Exception):
    """Raised by a strict `Rows` pass at the first quote out of place."""


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


class Rows:
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


def read_rows(source: _Source, use: Callable[[Rows], _R]) -> tuple[Rows, _R]:
    """Run `use` over the rows of a first, strict pass; if the file turns out not to be
    strictly quoted, start again checking every record's quoting (the csv module alone would
    silently misread a stray quote)."""
    rows = Rows(source, check_quotes=False, strict=True)
    try:
        return rows, use(rows)
    except _NotStrict:
        rows = Rows(source, check_quotes=True)
        return rows, use(rows)


@bulk
def read_csv(path: Path) -> CsvTable:
    """Decode and split a CSV file; rows that are not rows at all become table rejects.

    Raises ImportFileError for whole-file problems: missing, empty, undecodable, no header,
    duplicate columns, a quote that is never closed.
    """
    rows, listed = read_rows(inspect_source(Path(path)), list)
    return rows.table(listed)

"""Read a CSV export into rows, whatever its encoding, delimiter, quoting or header names.

Marketers bring files from Excel, CRMs and hand edits; this module turns any of them into a
`CsvTable` of normalised columns, or an `ImportFileError` naming the file and line, so the
parsing in `records` only ever sees well-formed rows. Whatever the file, it is read in
pieces of at most a row's limit (`limits.MAX_ROW_CHARS`): a longer row is rejected by its
line number and skipped without being held whole, so memory does not grow with the
longest line.
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
from stages.importing.limits import (
    MAX_COLUMNS,
    MAX_ROW_CHARS,
    MESSAGE_CHARS,
    REASON_CHARS,
    REJECT_CELL_CHARS,
    REJECT_EXTRA_CELLS,
    cut,
    shorten,
)

__all__ = ["CsvRow", "CsvTable", "ImportFileError", "Reject", "read_csv"]


class ImportFileError(ConfigError):
    """The file as a whole cannot be imported; the message names the file (and line)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        if len(message) > MESSAGE_CHARS:
            message = shorten(message, MESSAGE_CHARS)
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

    def __post_init__(self) -> None:
        """Keep the reject bounded, whatever the row: a cell longer than
        `REJECT_CELL_CHARS` is cut (ending in its length) and the reason says so."""
        values = self.values
        if values and max(map(len, values.values())) > REJECT_CELL_CHARS:
            self.values = {name: cut(value) for name, value in values.items()}
            self.reason += f" (cells longer than {REJECT_CELL_CHARS:,} characters are cut)"
        if len(self.reason) > REASON_CHARS:
            self.reason = shorten(self.reason, REASON_CHARS)

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
_UNCLOSED = "a quoted cell starts here and is never closed, so the rest of the file cannot be read"

# The row limit is the only one: the csv module's own (128 KiB a cell, for the whole
# process) is raised to it, never lowered, so a long cell in a row within the limit is read.
if csv.field_size_limit() < MAX_ROW_CHARS + 16:
    csv.field_size_limit(MAX_ROW_CHARS + 16)


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
                line = 1
                for piece in _Feed(handle).pieces():
                    if "\x00" in piece:
                        break
                    line += piece[-1] in "\r\n"
            raise ImportFileError(path, _NUL, line)
        return encoding
    raise AssertionError("cp1252 is always tried last")


_SNIFF_CHARS = 65536
_SNIFF_NOT_BLANK = re.compile(f'[^{re.escape(TRIM)},;\t"]')


def _count_outside_quotes(piece: str, counts: dict[str, int], in_quotes: bool) -> bool:
    """Add the delimiters of `piece` that are outside quotes to `counts`; whether a quote
    is open after it."""
    parts = piece.split('"')
    for part in parts[1 if in_quotes else 0 :: 2]:
        for delimiter in counts:
            counts[delimiter] += part.count(delimiter)
    return in_quotes != (len(parts) % 2 == 0)


def _sniff(pieces: Iterable[str]) -> tuple[str, int]:
    """Pick the delimiter from the header line (quotes respected); honour Excel's `sep=`.

    `pieces` are the file's lines, a long one in pieces (see `_Feed.pieces`). Returns the
    delimiter and the index of the first line the CSV reader should see. Reads only as far
    as the header, and no more than `_SNIFF_CHARS` of it: a blank line or a header of a
    gigabyte costs no memory.
    """
    counts = dict.fromkeys(",;\t", 0)
    blank_lines = 0
    in_quotes = False
    scanned = 0
    header = False  # the header line has started
    new_line = True
    for piece in pieces:
        first_piece = new_line
        new_line = piece[-1] in "\r\n"
        if first_piece and not header:
            counts = dict.fromkeys(",;\t", 0)
            in_quotes = False
            scanned = 0
        if scanned <= _SNIFF_CHARS:
            in_quotes = _count_outside_quotes(piece, counts, in_quotes)
            scanned += len(piece)
        if not header:
            if piece.isspace() or not _SNIFF_NOT_BLANK.search(piece):
                blank_lines += new_line
                continue
            header = True
            match = _SEP_LINE.match(piece.rstrip("\r\n")) if first_piece and new_line else None
            if match and match.group(1) in ",;\t|":
                return match.group(1), blank_lines + 1
        if (new_line and not in_quotes) or scanned > _SNIFF_CHARS:
            break
    if not header:
        return ",", 0
    best = max(counts, key=counts.__getitem__)
    return (best if counts[best] else ","), 0


@functools.cache
def _record_patterns(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Regexes for a well-quoted record and for one that ends inside an open quote.

    Like the csv module with skipinitialspace, but whitespace after a closing quote is
    tolerated (`"Acme, Inc" ,x` is a common hand edit and means no harm).
    """
    quoted, _, unquoted = (p.pattern for p in _cell_patterns(delimiter))
    d = re.escape(delimiter)
    field = rf"(?:{quoted}|{unquoted})"
    good = re.compile(rf"{field}(?:{d}{field})*(?:\r\n|\r|\n)?")
    unclosed = re.compile(rf'(?:{field}{d})*[ ]*"[^"]*(?:""[^"]*)*')
    return good, unclosed


@functools.cache
def _cell_patterns(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """One well-quoted cell, one whose quote is still open at the end of the record, and
    one unquoted cell. A quoted cell's text is written `[^"]*(?:""[^"]*)*`, not the
    equivalent `(?:[^"]|"")*`, which backtracks a character at a time (1.4 s and 120 MB
    for a cell of a million characters)."""
    d = re.escape(delimiter)
    return (
        re.compile(rf'[ ]*"[^"]*(?:""[^"]*)*"[^\S\r\n{d}]*'),
        re.compile(r'[ ]*"[^"]*(?:""[^"]*)*\Z'),
        re.compile(rf'[ ]*(?:[^"{d}\r\n ][^{d}\r\n]*)?'),
    )


_REGEX_CHARS = 1 << 16
"""Up to this long, a record's quoting is checked by one regex; a longer one cell by cell,
because the regex engine keeps some hundreds of bytes for every cell it has passed."""
_LINE_ENDS = ("\r\n", "\r", "\n")


def _quote_problem(raw: str, delimiter: str) -> str | None:
    """None for a well-quoted record, else "unclosed" or "misplaced"."""
    if len(raw) > _REGEX_CHARS:
        return _quote_problem_by_cell(raw, delimiter)
    return _quote_problem_by_regex(raw, delimiter)


def _quote_problem_by_regex(raw: str, delimiter: str) -> str | None:
    good, unclosed = _record_patterns(delimiter)
    if good.fullmatch(raw):
        return None
    return "unclosed" if unclosed.fullmatch(raw) else "misplaced"


def _quote_problem_by_cell(raw: str, delimiter: str) -> str | None:
    """`_quote_problem_by_regex` a cell at a time, in constant memory. Each cell has only
    one reading (a quoted cell ends at the first lone quote, an unquoted one at the next
    delimiter), so matching the cells one after another is matching the whole record."""
    quoted, opened, unquoted = _cell_patterns(delimiter)
    pos, n = 0, len(raw)
    while True:
        end = unquoted.match(raw, pos).end()  # type: ignore[union-attr]  # always matches
        is_quoted = end < n and raw[end] == '"'
        if is_quoted:
            match = quoted.match(raw, pos)
            end = match.end() if match else n + 1
        if end == n or (end < n and raw[end:] in _LINE_ENDS):
            return None
        if end < n and raw[end] == delimiter:
            pos = end + 1
            continue
        if is_quoted and opened.match(raw, pos):
            return "unclosed"
        return "misplaced"


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
                f"columns {j + 1 + offset} ('{shorten(raw[j], 40)}') and {i + 1 + offset} "
                f"('{shorten(raw[i], 40)}') both mean '{shorten(name, 40)}'; "
                "remove or rename one",
                line,
            )
        seen[name] = i
    return names


def _row_values(header: list[str], cells: list[str]) -> dict[str, str]:
    """A rejected row's cells by column; of the cells beyond the header, the first
    `REJECT_EXTRA_CELLS` (`_extra_note` says when there were more)."""
    values = dict(zip(header, cells, strict=False))
    width = len(header)
    for k, extra in enumerate(cells[width : width + REJECT_EXTRA_CELLS], start=1):
        values[f"(extra {k})"] = extra
    for name in header[len(cells) :]:
        values[name] = ""
    return values


def _extra_note(cells: int, width: int) -> str:
    extra = cells - width
    if extra <= REJECT_EXTRA_CELLS:
        return ""
    return f"; only the first {REJECT_EXTRA_CELLS} of its {extra:,} extra fields are kept"


def _wide_header(names: list[str], path: Path, line: int) -> list[str]:
    """A header of more than `MAX_COLUMNS` cells: the named columns, if no more than that,
    with as many unnamed ones after them as fit; else an ImportFileError giving the count."""
    named = len(names)
    while named and not names[named - 1]:
        named -= 1
    if named > MAX_COLUMNS:
        raise ImportFileError(
            path,
            f"the header row has {named:,} columns, more than the {MAX_COLUMNS:,} an import "
            "reads; remove the columns you do not need (is the first line really a header?)",
            line,
        )
    return names[:MAX_COLUMNS]


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
        delimiter, first = _sniff(_Feed(handle, limit=_SNIFF_CHARS).pieces())
    return _Source(file, encoding, delimiter, first)


class _NotStrict(Exception):
    """Raised by a strict `Rows` pass at the first quote out of place."""


_START, _FIELD, _QUOTED, _QUOTE = range(4)
"""Where the csv reader is in a record: at the start of a cell, in an unquoted cell, in a
quoted one, or just after a quote inside a quoted one."""


_RUN = 4096
"""Cells (or pairs of quotes) one regex call of `_scan` passes at most: the regex engine
keeps some hundreds of bytes for each until the call returns."""
_QUOTED_TEXT = re.compile(rf'[^"]*+(?:""[^"]*+){{0,{_RUN}}}+')
_SPACES = re.compile(" *")


@functools.cache
def _cell_runs(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """A whole cell followed by its delimiter, and up to `_RUN` of them, from the start of a
    cell: unquoted, or quoted (a quoted cell ends at a quote not followed by another; the
    reader keeps what follows it in the cell, up to the delimiter). Possessive, so a cell
    that is not whole here fails at once, without backtracking."""
    d = re.escape(delimiter)
    quoted = rf'[ ]*+"[^"]*+(?:""[^"]*+){{0,64}}+"(?!")[^{d}]*+'
    unquoted = rf'[ ]*+(?:[^"{d} ][^{d}]*+)?+'
    cell = rf"(?:{quoted}|{unquoted}){d}"
    return re.compile(cell), re.compile(rf"(?:{cell}){{0,{_RUN}}}")


def _scan(text: str, state: int, delimiter: str, count: bool = False) -> tuple[int, int]:
    """Where the csv reader is after `text` (part of one line, without its line end) when
    it starts in `state`, and (exactly only with `count`) how many cells it ends there.

    The reader's own rules: a quote opens a quoted cell only at the start of a cell (after
    spaces); inside one, "" is a quote and a lone quote closes it; what follows the closing
    quote stays in the cell (the reader is not strict), quotes included, up to the next
    delimiter. Text without quotes is passed in one step, quoted cells up to `_RUN` a step
    (`_cell_runs`): a gigabyte of small quoted cells takes some 20 seconds, not an hour."""
    i, n, cells = 0, len(text), 0
    cell, run = _cell_runs(delimiter)
    spaces = _SPACES.match
    while i < n:
        if state == _QUOTED:
            i = _QUOTED_TEXT.match(text, i).end()  # type: ignore[union-attr]
            if i < n:  # at a quote: the first of a pair (past `_RUN` pairs) or the last
                if text.startswith('""', i):
                    i += 2
                else:
                    state = _QUOTE
                    i += 1
            continue
        if state == _QUOTE:  # what follows a quote in a quoted cell
            c = text[i]
            if c == '"':
                state = _QUOTED
            elif c == delimiter:
                state = _START
                cells += 1
            else:
                state = _FIELD
            i += 1
            continue
        if state == _START and text.startswith('"', spaces(text, i).end()):  # type: ignore[union-attr]
            end = run.match(text, i).end()  # type: ignore[union-attr]  # may match nothing
            if end > i:
                cells += len(cell.findall(text, i, end)) if count else 1
                i = end
            else:  # a quoted cell that is not whole here, or has many quotes in it
                state = _QUOTED
                i = text.index('"', i) + 1
            continue
        # In an unquoted cell, or at the start of one that is not quoted: the cells up to
        # the next quote hold none, so the delimiters there end a cell each.
        j = text.find('"', i)
        stop = n if j < 0 else j
        last = text.rfind(delimiter, i, stop)
        if last >= 0:
            cells += text.count(delimiter, i, last + 1)
            i, state = last + 1, _START
        at_start = state == _START and spaces(text, i).end() == stop  # type: ignore[union-attr]
        if j < 0:
            return (_START if at_start else _FIELD), cells
        if at_start:
            i, state = j + 1, _QUOTED
            continue
        # a quote inside an unquoted cell is a character like any other, to the delimiter
        i = text.find(delimiter, j + 1)
        if i < 0:
            return _FIELD, cells
        cells += 1
        i += 1
        state = _START
    return state, cells


class _TooLong(Exception):
    """A record longer than the limit, which `_Feed` skipped; raised through the csv reader
    (which starts afresh on its next call)."""

    def __init__(self, length: int, fields: int, blank: bool, unclosed: bool, head: str) -> None:
        super().__init__(length)
        self.length = length  # characters, not counting the final line end
        self.fields = fields  # cells (counted only while `_Feed.counting`)
        self.blank = blank  # nothing but spaces, delimiters and quotes: a blank row
        self.unclosed = unclosed  # a quoted cell ran to the end of the file
        self.head = head  # the record's first characters


_HEAD_CHARS = REJECT_CELL_CHARS // 2
"""What a reject keeps of a row too long to read: its first 5,000 characters."""


class _Feed:
    """The lines of a text file for the csv reader, read at most `limit` + 2 characters at
    a time (`readline` with a size), so no line is ever held whole if it is longer.

    The reader asks for a line at the start of each record and for another only while a
    quoted cell is open, so the caller sets `chars` to 0 after each record and `chars` then
    counts the characters of the record being read. A record that grows past `limit` is
    skipped to its end, following the reader's quoting rules (`_scan`), in pieces of the
    same size, and `_TooLong` is raised in the reader. `lines` counts the physical lines
    read (a lone CR, LF or CRLF ends one); with `keep`, `taken` holds the lines of the
    record being read, for checking its quoting.
    """

    __slots__ = (
        "_back",
        "_not_blank",
        "_readline",
        "_size",
        "chars",
        "counting",
        "delimiter",
        "head",
        "limit",
        "lines",
        "taken",
    )

    def __init__(
        self,
        handle: TextIO,
        delimiter: str = ",",
        *,
        keep: bool = False,
        limit: int = MAX_ROW_CHARS,
    ) -> None:
        self._readline = handle.readline
        self._size = limit + 2  # a line of `limit` characters and a CRLF is one piece
        self._back: list[str] = []  # pieces read ahead, the next one last
        self._not_blank = re.compile(f'[^{re.escape(TRIM + delimiter)}"]').search
        self.limit = limit
        self.delimiter = delimiter
        self.lines = 0
        self.chars = 0
        self.counting = True  # count the cells of a record too long to read (the header's)
        self.head = ""  # the first line of the record being read
        self.taken: list[str] | None = [] if keep else None

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = self._take() if self._back else self._readline(self._size)
        if not line:
            raise StopIteration
        self.lines += 1
        chars = self.chars + len(line)
        if chars > self.limit:
            return self._long(line)
        if not self.chars:
            self.head = line
        self.chars = chars
        if self.taken is not None:
            self.taken.append(line)
        return line

    def _take(self) -> str:
        """The next piece: a line, or the next `limit` + 2 characters of a longer one."""
        piece = self._back.pop() if self._back else self._readline(self._size)
        return self._whole_crlf(piece)

    def _whole_crlf(self, piece: str) -> str:
        """`piece` with its LF, when the size cut a CRLF in two."""
        if len(piece) == self._size and piece[-1] == "\r":
            following = self._back.pop() if self._back else self._readline(self._size)
            if following == "\n":
                return piece + following
            self._back.append(following)
        return piece

    def pieces(self) -> Iterator[str]:
        """The rest of the file in pieces (see `_take`), for reading it without the reader."""
        return iter(self._take, "")

    def skip(self, count: int) -> None:
        """Pass over `count` lines, whatever their length."""
        while count > 0 and (piece := self._take()):
            count -= piece[-1] in "\r\n"

    @property
    def done(self) -> bool:
        """Whether the file has no lines left."""
        piece = self._take()
        if piece:
            self._back.append(piece)
        return not piece

    def _long(self, line: str) -> str:
        """A line that takes the record past `limit` characters, its line end aside: the
        line, if the line end was all of the excess; else the rest of the record is
        skipped and `_TooLong` raised."""
        line = self._whole_crlf(line)
        chars = self.chars + len(line)
        ending = 2 if line.endswith("\r\n") else 1 if line[-1] in "\r\n" else 0
        if chars - ending <= self.limit:
            if not self.chars:
                self.head = line
            self.chars = chars
            if self.taken is not None:
                self.taken.append(line)
            return line
        continued = self.chars > 0  # the reader asked for this line inside a quoted cell
        head = (self.head if continued else line)[:_HEAD_CHARS]
        state = _QUOTED if continued else _START
        length = self.chars
        delimiters = 0
        blank = not continued
        piece = line
        while True:
            body = piece.rstrip("\r\n")
            length += len(body)
            state, found = _scan(body, state, self.delimiter, self.counting)
            delimiters += found
            if blank and not body.isspace() and self._not_blank(body):
                blank = False
            ended = len(body) < len(piece)
            if ended and state != _QUOTED:
                break
            following = self._take()
            if not following:
                break
            if ended:
                self.lines += 1
                length += len(piece) - len(body)
            piece = following
        self.chars = 0
        if self.taken is not None:
            self.taken.clear()
        raise _TooLong(length, delimiters + 1, blank, state == _QUOTED, head)


class Rows:
    """One pass over the records of a file, yielding its data rows one at a time.

    The header (and `rejects`, rows that are not rows at all, or longer than
    `MAX_ROW_CHARS`) fill in as the pass goes, so a file of any size, and with lines of any
    length, is read in constant memory. `check_quotes` checks each record's
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
        header: list[str] = []
        skip = 0
        width = 0
        rejects = self.rejects
        strip = str.strip
        trims = itertools.repeat(TRIM)
        end = first
        with self.source.file.text(self.source.encoding) as handle:
            feed = _Feed(handle, delimiter, keep=self.check_quotes)
            feed.skip(first)
            taken = feed.taken
            reader = csv.reader(
                feed, delimiter=delimiter, skipinitialspace=True, strict=self.strict
            )
            while True:
                try:
                    for cells in reader:
                        feed.chars = 0  # the next line the reader asks for starts a record
                        start = end + 1
                        end = first + feed.lines
                        cleaned = list(map(strip, cells, trims))
                        if skip:
                            del cleaned[:skip]
                        problem = None
                        if taken is not None:
                            raw = "".join(taken)
                            taken.clear()
                            if not any(cleaned):
                                continue
                            if '"' in raw:
                                problem = _quote_problem(raw, delimiter)
                            if problem == "unclosed" and feed.done:
                                raise ImportFileError(path, _UNCLOSED, start)
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
                            if n > 2 and [c.lower() for c in cleaned[:2]] == _REJECT_COLUMNS:
                                skip = 2
                            names = cleaned[skip:]
                            if len(names) > MAX_COLUMNS:
                                names = _wide_header(names, path, start)
                            self.original_header = names
                            header = _normalise_header(names, path, start, skip)
                            self.header = header
                            feed.counting = False
                            width = len(header)
                            continue
                        spans = _spans(start, end)
                        if problem is not None:
                            reason = (
                                'a quote is out of place (inside a quoted cell write a quote as "")'
                            )
                            reason += spans + _extra_note(n, width)
                            rejects.append(Reject(start, reason, _row_values(header, cleaned)))
                            continue
                        if n > width:
                            last = n
                            while last > width and not cleaned[last - 1]:
                                last -= 1
                            if last > width:
                                reason = f"{last:,} fields, header has {width:,}" + spans
                                reason += _extra_note(last, width)
                                values = _row_values(header, cleaned[:last])
                                rejects.append(Reject(start, reason, values))
                                continue
                            del cleaned[width:]
                        else:
                            cleaned.extend([""] * (width - n))
                        yield CsvRow(start, dict(zip(header, cleaned, strict=False)))
                    break
                except _TooLong as long:
                    start = end + 1
                    end = first + feed.lines
                    if long.unclosed:
                        raise ImportFileError(path, _UNCLOSED, start) from None
                    if long.blank:
                        continue
                    if not header:
                        raise ImportFileError(path, _long_header(long), start) from None
                    rejects.append(self._long_row(long, header, skip, start, end))
                except csv.Error as exc:
                    if self.strict:
                        raise _NotStrict from None
                    raise ImportFileError(
                        path,
                        f"cannot be read as CSV ({exc}); is a quote left open?",
                        first + feed.lines,
                    ) from None
        if not header:
            raise ImportFileError(path, "has no header row (all lines are blank)")

    def _long_row(
        self, long: _TooLong, header: list[str], skip: int, start: int, end: int
    ) -> Reject:
        """The reject for a row longer than `MAX_ROW_CHARS`: the cells of its first
        `_HEAD_CHARS` characters, the last one ending in a note of the cut."""
        try:
            cells = next(
                csv.reader([long.head], delimiter=self.source.delimiter, skipinitialspace=True),
                [],
            )
        except csv.Error:
            cells = [long.head]
        cells = [cell.strip(TRIM) for cell in cells[skip:]][: len(header) + REJECT_EXTRA_CELLS]
        cells = cells or [""]
        cells[-1] += f"… (cut: the row has {long.length:,} characters)"
        spans = _spans(start, end)
        reason = (
            f"the row has {long.length:,} characters, more than the {MAX_ROW_CHARS:,} a row may "
            f"have: skipped without reading it whole (its first {_HEAD_CHARS:,} are kept)"
        )
        return Reject(start, reason + spans, _row_values(header, cells))


def _spans(start: int, end: int) -> str:
    return f" (lines {start}-{end} were read as one row)" if end > start else ""


def _long_header(long: _TooLong) -> str:
    """The file error for a header row longer than `MAX_ROW_CHARS`."""
    if long.fields > MAX_COLUMNS:
        return (
            f"the header row has {long.fields:,} columns, more than the {MAX_COLUMNS:,} an "
            f"import reads (and {long.length:,} characters); is the first line really a header?"
        )
    return (
        f"the header row has {long.length:,} characters, more than the {MAX_ROW_CHARS:,} a row "
        "may have; is the first line really a header?"
    )


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

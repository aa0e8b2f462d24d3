"""Read and validate CSV imports (accounts, contacts, suppressions) without touching the database.

The CLI reads a file with `read_csv`, turns it into clean, de-duplicated records with one of
the `parse_*` functions, upserts them and writes the rows it could not use with
`write_rejects`. Keeping this layer pure makes it cheap to test exhaustively: every data row
ends up either in a record or in a reject, never silently dropped.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
import itertools
import math
import os
import re
import stat
import tempfile
import unicodedata
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine

from abm.errors import ConfigError
from abm.settings import Settings

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


# Every character str.strip() removes, plus zero-width space and stray byte-order marks.
_TRIM = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + "\u200b\ufeff"

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


def _show(value: str, limit: int = 60) -> str:
    """A value as it may appear inside a reason: one line, not too long."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


_nfc = functools.partial(unicodedata.normalize, "NFC")


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


def _decode(path: Path) -> tuple[str, str]:
    """Bytes to text: UTF-8 (BOM optional), UTF-16 with a BOM, else Windows-1252."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(path, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise ImportFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip(b" \t\r\n"):
        raise ImportFileError(path, "the file is empty")
    if data.startswith(b"PK\x03\x04"):
        raise ImportFileError(
            path, "is an Excel workbook (or another zip file), not CSV; save it as 'CSV UTF-8'"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise ImportFileError(path, "is not valid UTF-16 text", _byte_line(data, exc)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                path,
                "starts like UTF-8 but contains bytes that are not UTF-8",
                _byte_line(data, exc),
            ) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            path,
            "is neither UTF-8 nor Windows-1252 text; save it as 'CSV UTF-8'",
            _byte_line(data, exc),
        ) from None


def _byte_line(data: bytes, exc: UnicodeDecodeError) -> int:
    return data[: exc.start].count(b"\n") + 1


def _sniff(lines: list[str]) -> tuple[str, int]:
    """Pick the delimiter from the header line (quotes respected); honour Excel's `sep=`.

    Returns the delimiter and the index of the first line the CSV reader should see.
    """
    start = 0
    while start < len(lines) and not lines[start].strip(_TRIM + ',;\t"'):
        start += 1
    if start < len(lines):
        match = _SEP_LINE.match(lines[start].rstrip("\r\n"))
        if match and match.group(1) in ",;\t|":
            return match.group(1), start + 1
    counts = {",": 0, ";": 0, "\t": 0}
    in_quotes = False
    scanned = 0
    for line in lines[start:]:
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


def _strictly_quoted(lines: list[str], delimiter: str) -> bool:
    """True when the whole file parses under strict quoting rules (the usual case)."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, skipinitialspace=True, strict=True):
            pass
    except csv.Error:
        return False
    return True


@_bulk
def read_csv(path: Path) -> CsvTable:
    """Decode and split a CSV file; rows that are not rows at all become table rejects.

    Raises ImportFileError for whole-file problems: missing, empty, undecodable, no header,
    duplicate columns, a quote that is never closed.
    """
    path = Path(path)
    text, encoding = _decode(path)
    nul = text.find("\x00")
    if nul >= 0:
        raise ImportFileError(
            path,
            "contains a NUL character; the file may be UTF-16 without a byte-order mark "
            "or not a text file at all",
            len(io.StringIO(text[: nul + 1], newline="").readlines()),
        )
    lines = io.StringIO(text, newline="").readlines()
    delimiter, first = _sniff(lines)
    check_quotes = '"' in text and not _strictly_quoted(lines[first:], delimiter)
    reader = csv.reader(lines[first:], delimiter=delimiter, skipinitialspace=True)

    header: list[str] = []
    original: list[str] = []
    header_line = 0
    skip = 0
    width = 0
    rows: list[CsvRow] = []
    rejects: list[Reject] = []
    append = rows.append
    strip = str.strip
    trims = itertools.repeat(_TRIM)
    end = first
    try:
        for cells in reader:
            start = end + 1
            end = first + reader.line_num
            cleaned = list(map(strip, cells, trims))
            if skip:
                del cleaned[:skip]
            if not any(cleaned):
                continue
            problem = None
            if check_quotes:
                raw = "".join(lines[start - 1 : end])
                if '"' in raw:
                    problem = _quote_problem(raw, delimiter)
                if problem == "unclosed" and end == len(lines):
                    raise ImportFileError(
                        path,
                        "a quoted cell starts here and is never closed, so the rest of the "
                        "file cannot be read",
                        start,
                    )
            n = len(cleaned)
            if n == width and problem is None:
                append(CsvRow(start, dict(zip(header, cleaned, strict=False))))
                continue
            if not header_line:
                if problem is not None:
                    raise ImportFileError(
                        path, f"the header row is badly quoted ({problem})", start
                    )
                header_line = start
                if len(cleaned) > 2 and [c.lower() for c in cleaned[:2]] == _REJECT_COLUMNS:
                    skip = 2
                original = cleaned[skip:]
                header = _normalise_header(original, path, start, skip)
                width = len(header)
                continue
            spans = f" (lines {start}-{end} were read as one row)" if end > start else ""
            if problem is not None:
                reason = 'a quote is out of place (inside a quoted cell write a quote as "")'
                rejects.append(Reject(start, reason + spans, _row_values(header, cleaned)))
                continue
            if n > width:
                last = n
                while last > width and not cleaned[last - 1]:
                    last -= 1
                if last > width:
                    reason = f"{last} fields, header has {width}" + spans
                    rejects.append(Reject(start, reason, _row_values(header, cleaned[:last])))
                    continue
                del cleaned[width:]
            else:
                cleaned.extend([""] * (width - n))
            append(CsvRow(start, dict(zip(header, cleaned, strict=False))))
    except csv.Error as exc:
        raise ImportFileError(
            path,
            f"cannot be read as CSV ({exc}); is a quote left open?",
            first + reader.line_num,
        ) from None
    if not header_line:
        raise ImportFileError(path, "has no header row (all lines are blank)")
    return CsvTable(
        header=header,
        rows=rows,
        delimiter=delimiter,
        encoding=encoding,
        path=path,
        original_header=original,
        header_line=header_line,
        rejects=rejects,
    )


# --------------------------------------------------------------------------- field parsers

_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)
_LABEL_CHARS = re.compile(r"[^a-z0-9-]")
_IPV4 = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//")
_PORT = re.compile(r":[0-9]*$")
_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ANGLE = re.compile(r"<([^<>]*)>$")
_EMAIL = re.compile(rf"({_LOCAL.pattern})@({_HOST.pattern})")
_LIST_SEPARATORS = re.compile(r"[;,\s]")


@functools.lru_cache(maxsize=1 << 16)
def _check_host(host: str) -> str:
    """Validate a lowercase host name and return its ASCII (IDNA) form.

    Raises ValueError with a phrase that completes "it ...". Cached: contacts repeat domains.
    """
    if len(host) <= 253 and _HOST.fullmatch(host):
        return host
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError("is not a valid international domain name") from None
        if len(host) <= 253 and _HOST.fullmatch(host):
            return host
    if _IPV4.fullmatch(host):
        raise ValueError("is an IP address, not a domain")
    labels = host.split(".")
    if len(labels) < 2:
        raise ValueError("has no top-level domain such as .com")
    if any(not label for label in labels):
        raise ValueError("has an empty part between two dots")
    for label in labels:
        bad = _LABEL_CHARS.search(label)
        if bad:
            ch = bad.group(0)
            shown = "a space" if ch.isspace() else f"'{ch}'"
            raise ValueError(f"contains {shown}, which is not allowed in a domain")
        if len(label) > 63:
            raise ValueError("has a part longer than 63 characters")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError("has a part that starts or ends with '-'")
    if len(host) > 253:
        raise ValueError("is longer than 253 characters")
    raise ValueError(f"ends in '.{labels[-1]}', which is not a top-level domain")


@functools.lru_cache(maxsize=1 << 16)
def normalise_domain(raw: str) -> str:
    """A company domain as accounts are keyed: lowercase, bare host, IDNA-encoded.

    Pasted URLs ("https://www.Acme.com/about?x=1") are common in exports, so scheme, `www.`,
    path, query, port and a trailing dot are dropped before validation.
    """
    s = raw.strip(_TRIM).lower()
    if not s:
        raise ValueError("the domain is empty")
    if len(s) <= 253 and _HOST.fullmatch(s) and not s.startswith("www."):
        return s
    s = _SCHEME.sub("", s)
    for sep in "/?#\\":
        s = s.split(sep, 1)[0]
    if "@" in s:
        raise ValueError(f"'{_show(raw)}' looks like an email address, not a domain")
    s = _PORT.sub("", s).strip(_TRIM).rstrip(".")
    if s.startswith("www.") and s.count(".") >= 2:
        s = s[4:]
    if not s:
        raise ValueError(f"'{_show(raw)}' is not a valid domain")
    try:
        return _check_host(s)
    except ValueError as exc:
        raise ValueError(f"'{_show(raw)}' is not a valid domain: it {exc}") from None


def normalise_email(raw: str) -> str:
    """An email address as contacts are keyed: bare address, lowercase, validated.

    Accepts the wrappers people paste from mail clients: "mailto:", "Jane <jane@acme.com>".
    Non-ASCII before the @ is refused because most sending services cannot deliver to it.
    """
    s = raw.strip(_TRIM).lower()
    fast = _EMAIL.fullmatch(s)
    if fast and fast.end(1) <= 64 and len(s) - fast.start(2) <= 253:
        return s
    if not s:
        raise ValueError("the email address is empty")
    angle = _ANGLE.search(s)
    if angle:
        s = angle.group(1).strip(_TRIM)
    if s[:7].lower() == "mailto:":
        s = s[7:].split("?", 1)[0].strip(_TRIM)
    s = s.lower()
    local, at, domain = s.rpartition("@")
    if at and local and domain and _LOCAL.fullmatch(local) and len(local) <= 64:
        try:
            return f"{local}@{_check_host(domain.rstrip('.'))}"
        except ValueError as exc:
            raise ValueError(
                f"'{_show(raw)}' is not a valid email address: the part after @ {exc}"
            ) from None
    shown = _show(raw)
    if not at:
        raise ValueError(f"'{shown}' is not a valid email address: it has no @")
    if s.count("@") > 1:
        if _LIST_SEPARATORS.search(s):
            raise ValueError(f"'{shown}' holds more than one email address; use one per row")
        raise ValueError(f"'{shown}' is not a valid email address: it has more than one @")
    if any(ch.isspace() for ch in s):
        raise ValueError(f"'{shown}' is not a valid email address: it contains a space")
    if not local:
        raise ValueError(f"'{shown}' is not a valid email address: nothing before the @")
    if not domain:
        raise ValueError(f"'{shown}' is not a valid email address: nothing after the @")
    if not local.isascii():
        raise ValueError(
            f"'{shown}' is not a valid email address: letters such as accents before the @ "
            "cannot be delivered by most sending services"
        )
    if len(local) > 64:
        raise ValueError(f"'{shown}' is not a valid email address: the part before @ is too long")
    raise ValueError(
        f"'{shown}' is not a valid email address: the part before @ has a character or dot "
        "that is not allowed"
    )


_NO_NUMBER = frozenset({"", "-", "–", "—", "?", "n/a", "na", "none", "null", "unknown", "tbd"})
_CURRENCY = re.compile(
    r"^(?:[$€£¥₹]|usd|eur|gbp|chf|jpy|aud|cad|inr|sek|nok|dkk)\s*"
    r"|\s*(?:[$€£¥₹]|usd|eur|gbp|chf|jpy|aud|cad|inr|sek|nok|dkk)$"
)
_RANGE = re.compile(r"(.+?)\s*(?:-|–|—|\bto\b|\bbis\b)\s*(.+)")
_AMOUNT = re.compile(r"([-+]?)\s*([0-9.,'\s]*[0-9][0-9.,'\s]*?)\s*([a-z]*)\+?")
_GROUPED = re.compile(r"[0-9]{1,3}(?:[\s'][0-9]{3})+(?:[.,][0-9]+)?")
_GROUP_SPACES = re.compile(r"[\s']")
_PLAIN = re.compile(r"[0-9]*\.?[0-9]*")
_MULTIPLIERS = {
    "": Decimal(1),
    "k": Decimal(1_000),
    "thousand": Decimal(1_000),
    "m": Decimal(1_000_000),
    "mm": Decimal(1_000_000),
    "mn": Decimal(1_000_000),
    "mio": Decimal(1_000_000),
    "million": Decimal(1_000_000),
    "b": Decimal(1_000_000_000),
    "bn": Decimal(1_000_000_000),
    "mrd": Decimal(1_000_000_000),
    "billion": Decimal(1_000_000_000),
}


def _digits(n: str, european: bool, has_suffix: bool) -> Decimal:
    """Digits with thousands/decimal separators to a Decimal, raising ValueError if unclear."""
    if _GROUP_SPACES.search(n):
        if not _GROUPED.fullmatch(n):
            raise ValueError(n)
        n = _GROUP_SPACES.sub("", n)
    dot, comma = "." in n, "," in n
    if dot and comma:
        dec = "." if n.rfind(".") > n.rfind(",") else ","
        thousands = "," if dec == "." else "."
        whole, _, frac = n.rpartition(dec)
        groups = whole.split(thousands)
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            raise ValueError(n)
        n = "".join(groups) + "." + frac
    elif dot or comma:
        sep = "." if dot else ","
        parts = n.split(sep)
        if len(parts) > 2:
            if not (1 <= len(parts[0]) <= 3 and all(len(p) == 3 for p in parts[1:])):
                raise ValueError(n)
            n = "".join(parts)
        else:
            whole, frac = parts
            thousands = "." if european else ","
            if has_suffix and sep == ".":
                thousands = ""
            if sep == thousands and len(frac) == 3 and 1 <= len(whole) <= 3 and whole != "0":
                n = whole + frac
            else:
                n = f"{whole or '0'}.{frac or '0'}"
    if not _PLAIN.fullmatch(n) or not any(ch.isdigit() for ch in n):
        raise ValueError(n)
    return Decimal(n)


def _amount(part: str, european: bool) -> tuple[Decimal, Decimal | None]:
    """One number with optional sign, currency and k/M/B suffix; the suffix is returned too."""
    part = _CURRENCY.sub("", _CURRENCY.sub("", part.strip())).strip()
    match = _AMOUNT.fullmatch(part)
    if not match:
        raise ValueError(part)
    sign, digits, suffix = match.groups()
    if suffix not in _MULTIPLIERS:
        raise ValueError(part)
    value = _digits(digits.strip(), european, bool(suffix)) * _MULTIPLIERS[suffix]
    return (-value if sign == "-" else value), (_MULTIPLIERS[suffix] if suffix else None)


def parse_number(raw: str, *, european: bool = False) -> float | None:
    """Read the numbers marketers type: "1,200", "1 200", "5k", "$3.4M", "€ 5m", "10-50".

    `european=True` (the caller passes it for ;-separated files) reads a lone "1.200" as
    twelve hundred and "1,5" as one and a half. Ranges give their midpoint. Blank and
    "n/a"-like cells give None.
    """
    s = raw.strip(_TRIM).lower()
    if s in _NO_NUMBER:
        return None
    try:
        if len(s) > 60:
            raise ValueError(s)
        try:
            value, _ = _amount(s, european)
        except ValueError:
            match = _RANGE.fullmatch(s)
            if not match:
                raise
            low, low_mult = _amount(match.group(1), european)
            high, high_mult = _amount(match.group(2), european)
            if low_mult is None and high_mult is not None and low * high_mult <= high:
                low *= high_mult
            if low > high:
                raise ValueError(s) from None
            value = (low + high) / 2
    except (ValueError, InvalidOperation):
        raise ValueError(f"cannot read '{_show(raw)}' as a number") from None
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"'{_show(raw)}' is too large")
    return result


_COUNTRY_NAMES = {
    "US": "united states|united states of america|usa|u s|u s a|america|us of a",
    "GB": "united kingdom|uk|great britain|britain|england|scotland|wales|northern ireland|gbr",
    "DE": "germany|deutschland|deu|ger",
    "FR": "france|fra",
    "NL": "netherlands|the netherlands|holland|nederland|nld",
    "ES": "spain|españa|espana|esp",
    "IT": "italy|italia|ita",
    "CA": "canada|can",
    "AU": "australia|aus",
    "JP": "japan|jpn|日本",
    "IN": "india|ind",
    "BR": "brazil|brasil|bra",
    "SE": "sweden|sverige|swe",
    "CH": "switzerland|schweiz|suisse|svizzera|che",
    "IE": "ireland|éire|irl",
    "AT": "austria|österreich|osterreich|aut",
    "BE": "belgium|belgië|belgie|belgique|bel",
    "DK": "denmark|danmark|dnk",
    "NO": "norway|norge|nor",
    "FI": "finland|suomi|fin",
    "PL": "poland|polska|pol",
    "PT": "portugal|prt",
    "CZ": "czech republic|czechia|česko|cesko|cze",
    "LU": "luxembourg|lux",
    "GR": "greece|grc|el",
    "TR": "turkey|türkiye|turkiye|tur",
    "IL": "israel|isr",
    "AE": "united arab emirates|uae|are",
    "SG": "singapore|sgp",
    "HK": "hong kong|hkg",
    "CN": "china|chn|people's republic of china",
    "KR": "south korea|korea|republic of korea|kor",
    "TW": "taiwan|twn",
    "NZ": "new zealand|nzl",
    "ZA": "south africa|zaf",
    "MX": "mexico|méxico|mex",
    "AR": "argentina|arg",
    "CL": "chile|chl",
    "CO": "colombia|col",
    "RO": "romania|rou",
    "HU": "hungary|hun",
    "EE": "estonia|est",
    "UA": "ukraine|ukr",
}
_COUNTRIES = {name: code for code, names in _COUNTRY_NAMES.items() for name in names.split("|")}


@functools.lru_cache(maxsize=4096)
def normalise_country(raw: str) -> str | None:
    """ISO 3166 alpha-2 for the country names and codes people type; anything else kept as is.

    An unknown country is not an error: scoring rules may still match the text.
    """
    s = _nfc(raw.strip(_TRIM))
    if not s:
        return None
    key = " ".join(s.lower().replace(".", " ").split())
    code = _COUNTRIES.get(key) or _COUNTRIES.get(key.replace(" ", ""))
    if code:
        return code
    if len(s) == 2 and s.isascii() and s.isalpha():
        return s.upper()
    return s


@functools.cache
def _timezone_names() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def normalise_timezone(raw: str) -> str | None:
    """The canonical IANA name ("europe/berlin" -> "Europe/Berlin"); blank gives None."""
    s = raw.strip(_TRIM)
    if not s:
        return None
    canonical = _timezone_names().get(s.replace(" ", "_").lower())
    if canonical:
        return canonical
    if "/" in s and s.isascii() and ".." not in s:
        try:
            zoneinfo.ZoneInfo(s)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
            pass
        else:
            return s
    raise ValueError(
        f"'{_show(s)}' is not a time zone name such as Europe/Berlin or America/New_York"
    )


_CONSENT = {
    "opt_in": "opt_in",
    "optin": "opt_in",
    "opted_in": "opt_in",
    "legitimate_interest": "legitimate_interest",
    "none": "none",
}
_CONSENT_JUNK = re.compile(r"[\s-]+")


def normalise_consent(raw: str) -> str | None:
    """opt_in, legitimate_interest or none (GDPR lawful basis); blank gives None."""
    s = raw.strip(_TRIM)
    if not s:
        return None
    value = _CONSENT.get(_CONSENT_JUNK.sub("_", s.lower()))
    if value is None:
        raise ValueError(f"'{_show(s)}' is not one of opt_in, legitimate_interest, none")
    return value


_LINKEDIN = re.compile(
    r"(?:https?://)?((?:[a-z0-9-]+\.)*linkedin\.com)(?::[0-9]+)?(/[^?#\s]*)?(?:[?#]\S*)?",
    re.IGNORECASE,
)


def normalise_linkedin_url(raw: str) -> str | None:
    """An https linkedin.com URL without tracking query; blank gives None."""
    s = raw.strip(_TRIM)
    if not s:
        return None
    match = _LINKEDIN.fullmatch(s)
    if not match:
        raise ValueError(f"'{_show(s)}' is not a linkedin.com URL")
    path = (match.group(2) or "").rstrip("/")
    if not path:
        raise ValueError(f"'{_show(s)}' does not point to a LinkedIn profile or page")
    return f"https://{match.group(1).lower()}{path}"


_PERSONAL_MAILBOX_LIST = """
    gmail.com googlemail.com outlook.com outlook.de hotmail.com hotmail.co.uk hotmail.de
    hotmail.fr hotmail.it hotmail.es live.com live.co.uk live.de msn.com yahoo.com yahoo.co.uk
    yahoo.de yahoo.fr yahoo.es yahoo.it yahoo.co.jp ymail.com rocketmail.com aol.com aol.de
    icloud.com me.com mac.com gmx.de gmx.net gmx.at gmx.ch gmx.com web.de t-online.de
    freenet.de posteo.de mailbox.org arcor.de protonmail.com protonmail.ch proton.me pm.me
    tutanota.com tutanota.de tuta.io zohomail.com yandex.ru yandex.com mail.ru qq.com 163.com
    126.com orange.fr wanadoo.fr free.fr laposte.net sfr.fr libero.it virgilio.it
    btinternet.com sky.com comcast.net verizon.net att.net sbcglobal.net fastmail.com hey.com
    naver.com hanmail.net rediffmail.com seznam.cz wp.pl o2.pl interia.pl bluewin.ch
    hushmail.com gmx.fr
"""
PERSONAL_MAILBOX_DOMAINS: frozenset[str] = frozenset(_PERSONAL_MAILBOX_LIST.split())


# --------------------------------------------------------------------------- row parsing


def _missing_column(table: CsvTable, what: str) -> ImportFileError:
    found = ", ".join(table.original_header or table.header)
    hint = ""
    if any("@" in h or _HOST.fullmatch(h.lower()) for h in table.original_header):
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
        target = self.records[i]
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
    return _nfc(value) if value else None


def _attributes(values: dict[str, str], columns: list[str]) -> dict[str, str]:
    return {c: _nfc(values[c]) for c in columns if values[c]}


def _field(errors: list[str], name: str, raw: str, parse: Callable[[str], Any]) -> Any:
    """Run a field parser; on failure note "name: message" and return None."""
    try:
        return parse(raw)
    except ValueError as exc:
        errors.append(f"{name}: {exc}")
        return None


class _Memo:
    """A field parser that remembers each raw value's outcome or error message.

    Columns such as time zone, consent or account domain repeat thousands of times.
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
        item = _nfc(item.strip(_TRIM))
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
        raise ValueError(f"must be 1, 2 or 3 (or blank), not '{_show(raw)}'")
    return int(match.group(1))


def _non_negative(value: float | None, raw: str) -> float | None:
    if value is not None and value < 0:
        raise ValueError(f"'{_show(raw)}' is negative")
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
    nfc = _nfc

    merger = _Merger(dict_keys=("attributes",))
    index, records, record_lines = merger.index, merger.records, merger.lines
    rejects = list(table.rejects)
    for row in table.rows:
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
    return merger.result(table, rejects)


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
    s = raw.strip(_TRIM)
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
            bare = raw.strip(_TRIM)
            if column == "email" or (
                column == "value" and "@" in bare and not bare.startswith(("@", "*@"))
            ):
                kind, value = "email", _field(errors, column, raw, normalise_email)
            else:
                kind, value = "domain", _field(errors, column, raw, _suppressed_domain)
        channel = "all"
        raw_channel = v["channel"] if has_channel else ""
        if raw_channel:
            channel = _CHANNELS.get(_CONSENT_JUNK.sub("_", raw_channel.lower()), "")
            if not channel:
                errors.append(f"channel: '{_show(raw_channel)}' is not one of all, email, linkedin")
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


def import_file(kind: str, path: Path, engine: Engine, settings: Settings) -> ImportReport:
    """Read, validate and bulk-upsert one CSV file; rejected rows go to FILE.rejects.csv.

    Good rows are written even when others are rejected; re-importing the same file
    changes nothing."""
    from flows.stakeholders import classify_title, load_title_table
    from models import store

    table = read_csv(Path(path))
    notes = []
    if table.encoding != "utf-8":
        notes.append(f"{path}: not UTF-8; read as {table.encoding}")
    if kind == "accounts":
        result = parse_accounts(table)
        counts = store.upsert_accounts(engine, result.records)
    elif kind == "contacts":
        result = parse_contacts(table, store.known_domains(engine))
        titles = load_title_table(settings.title_rules)
        for record in result.records:
            found = classify_title(record.get("title"), titles)
            record.update(seniority=found.seniority, function=found.function, role=found.role)
        counts = store.upsert_contacts(engine, result.records)
    elif kind == "suppressions":
        result = parse_suppressions(table)
        added = store.add_suppressions(engine, result.records)
        counts = store.UpsertCounts(imported=added, unchanged=len(result.records) - added)
    else:
        raise ValueError(f"unknown import kind {kind!r}")
    if result.duplicates_merged:
        notes.append(f"{path}: {result.duplicates_merged} duplicate rows merged")
    if counts.unchanged:
        notes.append(f"{path}: {counts.unchanged} rows already up to date")
    written = write_rejects(Path(path), table, result.rejects)
    return ImportReport(
        imported=counts.imported,
        updated=counts.updated,
        unchanged=counts.unchanged,
        rejects=result.rejects,
        rejects_path=written,
        notes=notes,
    )

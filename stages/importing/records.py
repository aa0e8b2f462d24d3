"""Turn CSV rows into clean, de-duplicated account, contact and suppression records.

Kept free of the database, so it is cheap to test exhaustively: every data row ends up
either in a record or in a `Reject` with a reason, never silently dropped. A row is
rejected for its identity only; any other cell that cannot be used as written is left blank,
mapped or converted, and a warning says so (`fields`), unless the parse is `strict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.currency import CurrencyRates, load_currency_rates
from core.domains import HOST, TRIM, show
from core.vocabulary import parse_stage
from stages.importing.csv_file import CsvRow, CsvTable, ImportFileError, Reject, bulk
from stages.importing.fields import FieldReader, Fix, file_under, known_parent, lenient
from stages.importing.limits import listing
from stages.importing.values import (
    PERSONAL_MAILBOX_DOMAINS,
    SEPARATOR_JUNK,
    AmbiguousNumber,
    consent_alias,
    is_explicit_blank,
    nfc,
    normalise_consent,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_linkedin_url,
    normalise_timezone,
    parse_number,
    read_money,
    timezone_alias,
)
from stages.importing.warnings_file import FieldWarning, WarningLog

__all__ = ["ParseResult", "parse_accounts", "parse_contacts", "parse_suppressions"]


@dataclass
class ParseResult:
    """Clean records in first-seen order plus everything that was rejected.

    `record_lines[i]` lists the lines merged into `records[i]`, so the caller can point at
    the source when the database refuses a record. Invariant:
    rows_read == len(records) + duplicates_merged + len(rejects). `warnings` are on kept
    rows only (all of them, or the first few when the log streams to a file);
    `warned_rows` counts the rows with at least one.
    """

    records: list[dict]
    rejects: list[Reject]
    rows_read: int
    duplicates_merged: int
    record_lines: list[list[int]] = field(default_factory=list)
    warnings: list[FieldWarning] = field(default_factory=list)
    warned_rows: int = 0


_ACCOUNT_NAME_COLUMNS = ("name", "company", "company_name", "account_name", "organization")


def _missing_column(table: CsvTable, what: str) -> ImportFileError:
    found = listing(table.original_header or table.header)
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


class Merger:
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

    def result(self, table: CsvTable, rejects: list[Reject], log: WarningLog) -> ParseResult:
        rejects.sort(key=lambda r: r.line)
        return ParseResult(
            records=self.records,
            rejects=rejects,
            rows_read=len(table.rows) + len(table.rejects),
            duplicates_merged=self.merged,
            record_lines=self.lines,
            warnings=log.kept,
            warned_rows=log.rows,
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


def _stage(raw: str) -> str:
    try:
        return parse_stage(raw)
    except ValueError as exc:
        raise ValueError(f"{exc} (or leave it blank)") from None


def _non_negative(value: float | None, raw: str) -> float | None:
    if value is not None and value < 0:
        raise ValueError(f"'{show(raw)}' is negative")
    return value


Warns = list[tuple[str, str, str]]
"""A row's warnings while it is read: (field, value, action)."""


def _keep(log: WarningLog, line: int, warns: Warns) -> None:
    """Hand a kept row's warnings to the log and empty the list for the next row."""
    log.add(line, warns)
    warns.clear()


_ACCOUNT_FIELDS = ("domain", "industry", "employees", "annual_revenue", "country", "technologies")


@bulk
def parse_accounts(
    table: CsvTable,
    currency: str = "USD",
    rates: CurrencyRates | None = None,
    *,
    strict: bool = False,
    log: WarningLog | None = None,
) -> ParseResult:
    """Account records keyed by normalised domain; rows without a usable domain become
    rejects with reasons. Employees are a whole number; revenue is converted into
    `currency` with `rates`. A `stage` column is a journey stage (any case), which the
    import sets and records in the stage history, not a free attribute. A number, tier or
    stage that cannot be used is left blank with a warning in `log` (`strict`: rejected)."""
    header = table.header
    if "domain" not in header:
        raise _missing_column(table, "'domain'")
    name_col = _first_column(header, _ACCOUNT_NAME_COLUMNS)
    tier_col = "tier" if "tier" in header else None
    stage_col = "stage" if "stage" in header else None
    used = {*_ACCOUNT_FIELDS, name_col, tier_col, stage_col}
    others = [c for c in header if c not in used]
    european = table.delimiter == ";"
    rates = rates or load_currency_rates()
    log = log if log is not None else WarningLog()

    def count(raw: str) -> float | Fix | None:
        value = _non_negative(parse_number(raw, european=european, integer=True), raw)
        try:
            parse_number(raw, european=european)
        except AmbiguousNumber:  # "3.400" in a comma file: a count cannot be 3.4
            read = f"read as {value:,.0f}: a count of people cannot be a fraction"
            return Fix(
                value, read, f"'{show(raw)}' could be read two ways (without --strict: {read})"
            )
        except ValueError:
            pass
        return value

    def money(raw: str) -> float | Fix | None:
        value, note = read_money(
            raw,
            european=european,
            currency=currency,
            usd_per_unit=rates.usd_per_unit,
            rates_date=rates.date,
        )
        _non_negative(value, raw)
        if note is None:
            return value
        return Fix(value, note, f"'{show(raw)}' is not in {currency} (without --strict: {note})")

    employees_memo = FieldReader("employees", count, strict=strict)
    revenue_memo = FieldReader("annual_revenue", money, strict=strict)
    tier_memo = FieldReader("tier", lenient(_tier), strict=strict)
    stage_memo = FieldReader("stage", lenient(_stage), strict=strict)
    merger = Merger(list_keys=("technologies",), dict_keys=("attributes",))
    rejects = list(table.rejects)
    warns: Warns = []
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
        employees = employees_memo(raw, errors, warns) if raw else None
        raw = v.get("annual_revenue", "")
        revenue = revenue_memo(raw, errors, warns) if raw else None
        raw = v[tier_col] if tier_col else ""
        tier = tier_memo(raw, errors, warns) if raw else None
        raw = v[stage_col] if stage_col else ""
        stage = stage_memo(raw, errors, warns) if raw else None
        if errors:
            rejects.append(Reject(row.line, "; ".join(errors), v))
            warns.clear()
            continue
        if warns:
            _keep(log, row.line, warns)
        record = {
            "domain": domain,
            "name": _text(v[name_col]) if name_col else None,
            "industry": _text(v.get("industry", "")),
            "employees": None if employees is None else math.floor(employees + 0.5),
            "annual_revenue": revenue,
            "country": normalise_country(v.get("country", "")),
            "technologies": _technologies(v.get("technologies", "")),
            "tier_override": tier,
            "stage": stage,
            "attributes": _attributes(v, others),
        }
        merger.add(domain, record, row.line)
    return merger.result(table, rejects, log)


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


@bulk
def parse_contacts(
    table: CsvTable,
    known_domains: Collection[str],
    *,
    strict: bool = False,
    log: WarningLog | None = None,
) -> ParseResult:
    """Contact records keyed by normalised email, each linked to an already imported account.

    The account comes from `account_domain`, else from the email's domain (or its parent
    domain when only that is a known account). Personal mailboxes need an explicit account.
    An address at another imported account than `account_domain` files the person there
    (`file_under`). Other fields that cannot be used are blanked or mapped with a warning.
    """
    log = log if log is not None else WarningLog()
    parse = contact_parser(table, known_domains, strict=strict, log=log)
    merger = contact_merger()
    rejects = list(table.rejects)
    parse(table.rows, merger, rejects)
    return merger.result(table, rejects, log)


def contact_merger() -> Merger:
    return Merger(dict_keys=("attributes",))


def contact_parser(
    table: CsvTable, known_domains: Collection[str], *, strict: bool, log: WarningLog
) -> Callable[[Iterable[CsvRow], Merger, list[Reject]], None]:
    """`parse_contacts` for a file's header, as a function of a batch of its rows: the import
    calls it once per batch, keeping what it has learnt about repeated values. The kept
    rows' warnings go to `log` as the rows are read."""
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
        parent = known_parent(email_domain, known)
        if parent is None:
            raise ValueError(f"unknown account '{email_domain}' (import accounts first)")
        return parent

    def filed(key: str) -> str | Fix:
        email_domain, named = key.split(" ")
        return file_under(email_domain, named, known)

    account_memo = FieldReader("account_domain", lenient(normalise_domain), identity=True)
    derived_memo = FieldReader("", account_of, identity=True)
    filing_memo = FieldReader("account_domain", filed, strict=strict)
    linkedin_reader = FieldReader("linkedin_url", lenient(normalise_linkedin_url), strict=strict)
    timezone_memo = FieldReader(
        "timezone", lenient(normalise_timezone, timezone_alias), strict=strict
    )
    consent_memo = FieldReader("consent", lenient(normalise_consent, consent_alias), strict=strict)
    account_cache, derived_cache = account_memo.cache, derived_memo.cache
    timezone_cache, consent_cache = timezone_memo.cache, consent_memo.cache
    columns = {name: name if name in header else None for name in _CONTACT_FIELDS}
    first_c, last_c, title_c = columns["first_name"], columns["last_name"], columns["title"]
    account_c, linkedin_c, country_c = domain_col, columns["linkedin_url"], columns["country"]
    timezone_c, consent_c = columns["timezone"], columns["consent"]

    def parse(rows: Iterable[CsvRow], merger: Merger, rejects: list[Reject]) -> None:
        index, records, record_lines = merger.index, merger.records, merger.lines
        warns: Warns = []
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
            cell = v[account_c] if account_c else ""
            account = None
            if cell:
                hit = account_cache.get(cell)
                account = hit[0] if hit and hit[1] is None else account_memo(cell, errors, warns)
            if account is not None:
                if account not in known:
                    errors.append(f"unknown account '{account}' (import accounts first)")
                elif email is not None and not (
                    email.endswith(account) and email[-len(account) - 1] == "@"
                ):
                    raw = email[email.rindex("@") + 1 :]
                    account = filing_memo(f"{raw} {account}", errors, warns, cell)
            elif email is not None and not errors:  # no account_domain, or "n/a"
                raw = email[email.rindex("@") + 1 :]
                hit = derived_cache.get(raw)
                account = hit[0] if hit and hit[1] is None else derived_memo(raw, errors, warns)
            linkedin = None
            raw = v[linkedin_c] if linkedin_c else ""
            if raw:
                try:
                    linkedin = normalise_linkedin_url(raw)
                except ValueError:
                    linkedin = linkedin_reader.once(raw, errors, warns)
            timezone = None
            raw = v[timezone_c] if timezone_c else ""
            if raw:
                hit = timezone_cache.get(raw)
                timezone = hit[0] if hit and hit[1] is None else timezone_memo(raw, errors, warns)
            consent = None
            raw = v[consent_c] if consent_c else ""
            if raw:
                hit = consent_cache.get(raw)
                consent = hit[0] if hit and hit[1] is None else consent_memo(raw, errors, warns)
            if errors:
                rejects.append(Reject(row.line, "; ".join(errors), v))
                if warns:
                    warns.clear()
                continue
            if warns:
                _keep(log, row.line, warns)
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


@bulk
def parse_suppressions(
    table: CsvTable, *, strict: bool = False, log: WarningLog | None = None
) -> ParseResult:
    """Suppression records (kind, value, channel, reason) from email, domain or value columns.

    A row naming both an email and a domain is rejected rather than guessed: suppressing a
    whole company by mistake, or only one person, are both costly. A channel that cannot be
    read suppresses every channel, with a warning (`strict`: rejected): a request not to be
    contacted is never dropped for a typo.
    """
    header = table.header
    sources = [c for c in ("email", "domain", "value") if c in header]
    if not sources:
        raise _missing_column(table, "'email', 'domain' or 'value'")
    has_channel = "channel" in header
    has_reason = "reason" in header

    log = log if log is not None else WarningLog()
    merger = Merger()
    rejects = list(table.rejects)
    warns: Warns = []
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
        if raw_channel and not is_explicit_blank(raw_channel):
            channel = _CHANNELS.get(SEPARATOR_JUNK.sub("_", raw_channel.lower()), "")
            if not channel:
                problem = f"'{show(raw_channel)}' is not one of all, email, linkedin"
                if strict:
                    errors.append(f"channel: {problem}")
                else:
                    channel = "all"
                    warns.append(
                        ("channel", raw_channel, f"suppressed on every channel: {problem}")
                    )
        if errors:
            rejects.append(Reject(row.line, "; ".join(errors), v))
            warns.clear()
            continue
        if warns:
            _keep(log, row.line, warns)
        record = {
            "kind": kind,
            "value": value,
            "channel": channel,
            "reason": _text(v["reason"]) if has_reason else None,
        }
        merger.add((kind, value, channel), record, row.line)
    return merger.result(table, rejects, log)

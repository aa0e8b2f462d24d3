"""Intent data files (`abm import intent`): which account researches which topic, how
strongly (a score from 0 to 100, a word such as High, or a surge flag) and when.

Providers name their columns their own way; the names below are the ones their exports
commonly use (README: "Intent data"). The first of each list that the file has is read; a
column can always be renamed to the plain name (`domain`, `topic`, `score`, `surge`, `date`).
Kept free of the database like `records`: every data row ends up in a record or a reject
with its field and reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from hashlib import sha256
from typing import Any

from core.domains import TRIM, show
from core.intent import SURGE_SCORE, topic_key
from stages.importing.csv_file import CsvRow, CsvTable, ImportFileError, Reject
from stages.importing.fields import FieldReader, Fix, known_parent
from stages.importing.limits import listing
from stages.importing.values import is_explicit_blank, nfc, normalise_domain, parse_number

__all__ = [
    "DATE_COLUMNS",
    "DOMAIN_COLUMNS",
    "LEVELS",
    "SCORE_COLUMNS",
    "STAGE_COLUMNS",
    "SURGE_COLUMNS",
    "TOPIC_COLUMNS",
    "IntentParse",
    "intent_events",
    "intent_parser",
    "parse_intent",
    "parse_signal_date",
    "source_name",
]

# Header names after the import's normalisation (lowercase, spaces and punctuation as `_`;
# `Company Domain` and `Website` already read as `domain`), in order of preference.
DOMAIN_COLUMNS = ("domain", "account_domain")
TOPIC_COLUMNS = (
    "topic",
    "topic_name",  # Bombora
    "intent_topic",
    "keyword",  # 6sense
    "intent_keyword",  # Demandbase
    "keyword_set",  # Demandbase
    "category",  # G2 (Bombora's Category is the topic's group: Topic Name comes first)
    "signal",  # G2
    "segment",  # 6sense
)
SCORE_COLUMNS = (
    "score",
    "composite_score",  # Bombora
    "surge_score",  # Bombora
    "intent_score",  # G2, 6sense
    "buyer_intent_score",
    "intent_strength",  # Demandbase: Low / Medium / High
    "activity_level",  # G2: Low / Medium / High
    "strength",
)
SURGE_COLUMNS = ("surge", "surging", "is_surging", "surge_flag")
DATE_COLUMNS = (
    "date",
    "week",  # Bombora's weekly surge
    "week_of",
    "week_start",
    "week_starting",
    "signal_date",
    "intent_date",
    "activity_date",
)
STAGE_COLUMNS = ("buying_stage",)  # 6sense: kept with the signal, shown, not scored

# A score written as a word, as Demandbase's Intent Strength and G2's Activity Level are:
# documented, so mapped without a warning.
LEVELS = {
    "very low": 10.0,
    "low": 30.0,
    "medium": 60.0,
    "med": 60.0,
    "moderate": 60.0,
    "high": 90.0,
    "very high": 100.0,
}
_YES = frozenset({"true", "yes", "y", "1", "x", "surge", "surging", "t"})
_NO = frozenset({"false", "no", "n", "0", "not surging", "f"})
_WORD_JUNK = re.compile(r"[\s_-]+")
_TOPIC_SPACES = re.compile(r"\s+")
MAX_TOPIC = 200
EARLIEST = date(2000, 1, 1)
SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
_HEADER_JUNK = re.compile(r"\W+")


def source_name(raw: str) -> str:
    """The name intent signals are stored under (`--source`): lowercase letters, digits,
    `-`, `_` and `.`, at most 40. Part of each signal's key: a signal is the same signal
    only from the same source."""
    name = raw.strip().lower()
    if not SOURCE.fullmatch(name):
        raise ValueError(
            f"source {raw!r}: use letters, digits, -, _ and . only (at most 40), like bombora"
        )
    return name


def detect_source(original_header: Iterable[str]) -> str | None:
    """The provider whose export these column names look like, or None. A guess from the
    columns alone, named in the import's notes; `--source` says it outright."""
    names = {_HEADER_JUNK.sub("_", name.lower()).strip("_") for name in original_header}
    if any("bombora" in n for n in names) or names & {
        "composite_score",
        "surge_score",
        "topic_name",
    }:
        return "bombora"
    demandbase = {"intent_strength", "keyword_set", "intent_keyword"}
    if any("demandbase" in n for n in names) or names & demandbase:
        return "demandbase"
    if any(n.startswith("6sense") for n in names) or "buying_stage" in names:
        return "6sense"
    if "activity_level" in names or ("company_domain" in names and names & {"category", "signal"}):
        return "g2"
    return None


_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ]\S*)?")
_ISO_WEEK = re.compile(r"(\d{4})-?w(\d{1,2})(?:-?([1-7]))?", re.IGNORECASE)
_YMD = re.compile(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})")
_DMY = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_NAMED = (
    "%d %b %Y",
    "%d %B %Y",
    "%b %d %Y",
    "%B %d %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d-%b-%Y",
    "%d-%b-%y",
    "%a %b %d %Y",
    "%A, %B %d, %Y",
)


def _day(year: int, month: int, day: int, raw: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(f"'{show(raw)}' is not a date") from None


def parse_signal_date(raw: str) -> date:
    """The day of a signal as exports write it: `2026-11-30` (with a time or not), a week
    (`2026-W48`: its Monday), `2026/11/30`, `30 Nov 2026`, `Nov 30, 2026`, or a day and month
    with slashes when only one reading is possible (`30/11/2026`, `11/30/2026`); `03/04/2026`
    could be either, so it is refused."""
    s = raw.strip(TRIM)
    found = _ISO.fullmatch(s)
    if found:
        return _day(int(found[1]), int(found[2]), int(found[3]), raw)
    found = _ISO_WEEK.fullmatch(s)
    if found:
        try:
            return date.fromisocalendar(int(found[1]), int(found[2]), int(found[3] or 1))
        except ValueError:
            raise ValueError(f"'{show(raw)}' is not a week of that year") from None
    found = _YMD.fullmatch(s)
    if found:
        return _day(int(found[1]), int(found[2]), int(found[3]), raw)
    found = _DMY.fullmatch(s)
    if found:
        first, second, year = int(found[1]), int(found[2]), int(found[3])
        if first > 12 >= second:
            return _day(year, second, first, raw)
        if second > 12 >= first:
            return _day(year, first, second, raw)
        if first == second:
            return _day(year, first, first, raw)
        if first > 12:
            raise ValueError(f"'{show(raw)}' is not a date")
        day_first = _day(year, second, first, raw)
        month_first = _day(year, first, second, raw)
        raise ValueError(
            f"ambiguous: '{show(raw)}' could be {day_first:%d %B} or {month_first:%d %B %Y}; "
            "write it as YYYY-MM-DD"
        )
    for pattern in _NAMED:
        try:
            return datetime.strptime(s, pattern).date()
        except ValueError:
            continue
    raise ValueError(
        f"cannot read '{show(raw)}' as a date; write it as YYYY-MM-DD (or a week: 2026-W48)"
    )


def _score(raw: str, european: bool) -> tuple[float, str | None] | None:
    """(score 0-100, the word it was written as) or None for an explicit blank."""
    word = _WORD_JUNK.sub(" ", raw.strip(TRIM).casefold())
    if word in LEVELS:
        return LEVELS[word], nfc(raw.strip(TRIM))
    text = raw.strip(TRIM).removesuffix("%").strip()
    value = parse_number(text, european=european)
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise ValueError(f"'{show(raw)}' is not between 0 and 100")
    return value, None


def _surge(raw: str) -> bool | None:
    word = _WORD_JUNK.sub(" ", raw.strip(TRIM).casefold())
    if word in _YES:
        return True
    if word in _NO:
        return False
    if is_explicit_blank(raw):
        return None
    raise ValueError(f"'{show(raw)}' is not yes or no (true/false, 1/0)")


@dataclass
class IntentParse:
    """The records (one per account, topic and day, in first-seen order), the rejects, the
    warnings of kept rows as (line, [(field, value, action)]), duplicates merged and which
    column was read for what."""

    records: list[dict[str, Any]] = field(default_factory=list)
    record_lines: list[list[int]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[tuple[int, list[tuple[str, str, str]]]] = field(default_factory=list)
    merged: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)


def _first(header: Collection[str], names: Iterable[str]) -> str | None:
    return next((name for name in names if name in header), None)


def _missing(table: CsvTable, what: str, names: Iterable[str]) -> ImportFileError:
    found = listing(table.original_header or table.header)
    known = ", ".join(names)
    return ImportFileError(
        table.path,
        f"no {what} column (columns found: {found}); name one of: {known}",
        table.header_line,
    )


# How a missing column is named to the user: the providers' own words.
_DOMAIN_NAMES = ("Domain", "Company Domain", "Website")
_TOPIC_NAMES = ("Topic", "Topic Name", "Keyword", "Intent Keyword", "Keyword Set", "Category")
_SCORE_NAMES = ("Score", "Composite Score", "Surge Score", "Intent Score", "Intent Strength")
_SCORE_NAMES += ("Activity Level", "or a surge flag: Surge, Surging")


def intent_parser(
    table: CsvTable,
    known_domains: Collection[str],
    *,
    today: date,
    as_of: date | None = None,
    strict: bool = False,
) -> Callable[[Iterable[CsvRow], IntentParse], None]:
    """`parse_intent` for a file's header, as a function of (rows, result): it adds each
    row's record, reject or warnings to `result`. Raises ImportFileError for a file whose
    columns cannot make signals (no domain, topic, score or surge, or date without
    `as_of`)."""
    header = table.header
    domain_c = _first(header, DOMAIN_COLUMNS)
    topic_c = _first(header, TOPIC_COLUMNS)
    score_c = _first(header, SCORE_COLUMNS)
    surge_c = _first(header, SURGE_COLUMNS)
    date_c = _first(header, DATE_COLUMNS)
    stage_c = _first(header, STAGE_COLUMNS)
    if domain_c is None:
        raise _missing(table, "domain", _DOMAIN_NAMES)
    if topic_c is None:
        raise _missing(table, "topic", _TOPIC_NAMES)
    if score_c is None and surge_c is None:
        raise _missing(table, "score", _SCORE_NAMES)
    if date_c is None and as_of is None:
        found = listing(table.original_header or table.header)
        raise ImportFileError(
            table.path,
            f"no date column (columns found: {found}); name one Date or Week, or give the "
            "day the export was taken with --date YYYY-MM-DD",
            table.header_line,
        )
    european = table.delimiter == ";"
    known = {d.strip().lower().rstrip(".") for d in known_domains}
    latest = today + timedelta(days=1)

    def account_of(raw: str) -> str | Fix:
        domain = normalise_domain(raw)
        if domain in known:
            return domain
        parent = known_parent(domain, known)
        if parent is not None:
            return Fix(
                parent,
                f"filed under {parent}, the imported account: {domain} is a subdomain of it",
                f"{domain} is not an imported account (its parent {parent} is)",
            )
        raise ValueError(
            f"no account with this domain ({domain}): import it with `abm import accounts` first"
        )

    def day_of(raw: str) -> date:
        day = parse_signal_date(raw)
        if day > latest:
            raise ValueError(f"'{show(raw)}' is in the future")
        if day < EARLIEST:
            raise ValueError(f"'{show(raw)}' is before {EARLIEST.year}: is the year right?")
        return day

    def score_of(raw: str) -> tuple[float, str | None] | None:
        return _score(raw, european)

    domain_memo = FieldReader("domain", account_of, strict=strict, identity=True)
    date_memo = FieldReader("date", day_of, identity=True)
    score_memo = FieldReader("score", score_of, identity=True)
    surge_memo = FieldReader("surge", _surge, identity=True)
    fixed_day = as_of
    names = {"domain": domain_c, "topic": topic_c, "score": score_c, "surge": surge_c}
    names |= {"date": date_c, "buying_stage": stage_c}
    originals = dict(zip(table.header, table.original_header or table.header, strict=False))
    columns = {what: originals.get(c, c) for what, c in names.items() if c is not None}
    used = set(names.values())
    unused = [originals.get(c, c) for c in header if c not in used]

    def parse(rows: Iterable[CsvRow], result: IntentParse) -> None:
        result.columns, result.unused = columns, unused
        index: dict[tuple[str, str, date], int] = {}
        records, lines, rejects = result.records, result.record_lines, result.rejects
        topics: dict[str, tuple[str, str]] = {}
        for row in rows:
            v = row.values
            errors: list[str] = []
            warns: list[tuple[str, str, str]] = []
            raw = v[domain_c]
            if raw and not is_explicit_blank(raw):
                domain = domain_memo(raw, errors, warns)
            else:
                domain = None
                errors.append("domain: missing (every signal needs the account's web domain)")
            raw = v[topic_c]
            got = topics.get(raw)
            if got is None:
                got = _topic(raw)
                if len(topics) >= _MEMO:
                    topics.clear()
                topics[raw] = got
            topic, key = got
            if not key:
                errors.append("topic: missing (the topic, keyword or category of the signal)")
            elif len(topic) > MAX_TOPIC:
                errors.append(f"topic: longer than {MAX_TOPIC} characters")
            score = level = surge = None
            score_problem = surge_problem = None
            raw_score = v[score_c] if score_c else ""
            if raw_score:
                problems: list[str] = []
                got = score_memo(raw_score, problems, warns)
                if problems:
                    score_problem = problems[0]
                elif got is not None:
                    score, level = got
            raw_surge = v[surge_c] if surge_c else ""
            if raw_surge:
                problems = []
                surge = surge_memo(raw_surge, problems, warns)
                surge_problem = problems[0] if problems else None
            if score_problem and surge_problem:
                errors += [score_problem, surge_problem]
            elif score_problem:
                if surge is None or strict:
                    errors.append(score_problem)
                else:
                    warns.append(("score", raw_score, f"left blank: {score_problem[7:]}"))
            elif surge_problem:
                if score is None or strict:
                    errors.append(surge_problem)
                else:
                    warns.append(("surge", raw_surge, f"left blank: {surge_problem[7:]}"))
            elif score is None and surge is None:
                what = "score" if score_c else "surge"
                errors.append(f"{what}: missing (a score from 0 to 100, or a surge flag)")
            if date_c is not None:
                raw = v[date_c]
                if raw and not is_explicit_blank(raw):
                    day = date_memo(raw, errors, warns)
                else:
                    day = None
                    errors.append("date: missing (the day or week of the signal)")
            else:
                day = fixed_day
            if errors:
                rejects.append(Reject(row.line, "; ".join(errors), v))
                continue
            if warns:
                result.warnings.append((row.line, warns))
            if score is None:  # a surge flag alone: surging is a score of SURGE_SCORE
                score, level = (SURGE_SCORE if surge else 0.0), "surge flag"
            record = {"domain": domain, "topic": topic, "key": key, "score": score, "date": day}
            if level is not None:
                record["level"] = level
            if surge is not None:
                record["surge"] = surge
            if stage_c is not None and v[stage_c] and not is_explicit_blank(v[stage_c]):
                record["buying_stage"] = nfc(v[stage_c])
            assert day is not None and domain is not None
            signal = (domain, key, day)
            i = index.get(signal)
            if i is None:
                index[signal] = len(records)
                records.append(record)
                lines.append([row.line])
            else:  # the same signal twice in one file: the later row wins
                result.merged += 1
                lines[i].append(row.line)
                records[i] = record

    return parse


def parse_intent(
    table: CsvTable,
    known_domains: Collection[str],
    *,
    today: date,
    as_of: date | None = None,
    strict: bool = False,
) -> IntentParse:
    """Intent records of a table read whole (tests, small files); see `intent_parser`."""
    parse = intent_parser(table, known_domains, today=today, as_of=as_of, strict=strict)
    result = IntentParse()
    parse(table.rows, result)
    result.rejects[:0] = table.rejects
    result.rejects.sort(key=lambda r: r.line)
    return result


_EVENT_ID = 255


def event_key(domain: str, topic: str, day: date) -> str:
    """A signal's `provider_event_id`: the account, the topic (any case and spacing: its
    `topic_key`) and the day; with the source as the provider, re-importing a file stores
    nothing twice."""
    key = f"{day.isoformat()}:{domain}:{topic}"
    if len(key) <= _EVENT_ID:
        return key
    digest = sha256(topic.encode()).hexdigest()[:32]
    return f"{day.isoformat()}:{domain}:#{digest}"


_MEMO = 1 << 14


def _topic(raw: str) -> tuple[str, str]:
    """(the topic as shown: NFC, single spaces; its key), or ("", "") for none."""
    topic = _TOPIC_SPACES.sub(" ", nfc(raw)).strip() if raw else ""
    if not topic or is_explicit_blank(topic):
        return "", ""
    return topic, topic_key(topic)


def intent_events(
    records: Iterable[dict[str, Any]], source: str, account_ids: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """Engagement events (type and channel `intent`) for parsed records: the signal's day at
    midnight UTC; its topic, score and what else the file said in `data`."""
    for record in records:
        day = record["date"]
        data = {"topic": record["topic"], "score": float(record["score"])}
        for name in ("level", "surge", "buying_stage"):
            if name in record:
                data[name] = record[name]
        yield {
            "provider": source,
            "provider_event_id": event_key(record["domain"], record["key"], day),
            "type": "intent",
            "channel": "intent",
            "occurred_at": datetime.combine(day, time(0), tzinfo=UTC),
            "account_id": account_ids[record["domain"]],
            "data": data,
        }

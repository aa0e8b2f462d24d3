"""Deterministic, realistic demo dataset: accounts and their buying committees.

The demo (``abm demo``), the tests and the benchmark all need data that looks like a real
CRM export (messy titles, unicode names, odd number formats, a few bad rows) without ever
pointing at a real company: every account domain is under the reserved ``.example`` TLD.
Everything is drawn from one ``random.Random(seed)``, so the same arguments always give
byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import functools
import itertools
import math
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACCOUNT_COLUMNS",
    "BAD_CONTACT_ROWS",
    "CONTACT_COLUMNS",
    "generate",
    "write_demo_csvs",
]

ACCOUNT_COLUMNS: tuple[str, ...] = (
    "domain",
    "name",
    "industry",
    "employees",
    "annual_revenue",
    "country",
    "technologies",
    "tier",
)
CONTACT_COLUMNS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "title",
    "account_domain",
    "linkedin_url",
    "country",
    "timezone",
    "consent",
)
# Rows appended after the ``contacts`` good ones, so the demo shows how rejects are reported.
BAD_CONTACT_ROWS = 3

TLD = ".example"


class _Weighted:
    """A weighted choice with precomputed cumulative weights (fast for 100k+ draws)."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self._items = [item for item, _ in pairs]
        self._cum = list(itertools.accumulate(weight for _, weight in pairs))
        self._total = self._cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self._items[bisect.bisect(self._cum, rng.random() * self._total)]


def _one(rng: random.Random, items: Sequence[Any]) -> Any:
    """Uniform choice with one ``random()`` call: ~5x cheaper than ``Random.choice``."""
    return items[int(rng.random() * len(items))]


# --------------------------------------------------------------------------------------
# Tables: the word lists, weights and titles live in ``abm/demo_tables/*.yaml``.
# --------------------------------------------------------------------------------------


def _nfc(value: Any) -> Any:
    """NFC-normalise every string, so names compare equal however the file was saved."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_nfc(item) for item in value]
    if isinstance(value, dict):
        return {_nfc(key): _nfc(item) for key, item in value.items()}
    return value


@functools.cache
def _table(name: str) -> dict[str, Any]:
    """One ``demo_tables/<name>.yaml`` file (read once; YAML mappings keep their order)."""
    text = (resources.files("abm") / "demo_tables" / f"{name}.yaml").read_text(encoding="utf-8")
    return _nfc(yaml.safe_load(text))


def _weights(mapping: dict[str, float]) -> _Weighted:
    return _Weighted(list(mapping.items()))


_COMPANY = _table("companies")
_PEOPLE = _table("people")
_TITLE_TABLES = _table("titles")

# --------------------------------------------------------------------------------------
# Firmographics
# --------------------------------------------------------------------------------------

# industry -> (weight, revenue per employee in USD, name nouns)
_INDUSTRIES: dict[str, tuple[float, int, tuple[str, ...]]] = {
    name: (spec["weight"], spec["revenue_per_employee"], tuple(spec["nouns"]))
    for name, spec in _COMPANY["industries"].items()
}
_INDUSTRY_PICK = _Weighted([(name, spec[0]) for name, spec in _INDUSTRIES.items()])
_NO_LEGAL_SUFFIX = frozenset(_COMPANY["no_legal_suffix"])

# Company-name prefixes: invented compounds ("North" + "wind") plus single words.
_PREFIX_HEADS: tuple[str, ...] = tuple(_COMPANY["prefix_heads"])
_PREFIX_TAILS: tuple[str, ...] = tuple(_COMPANY["prefix_tails"])
_PREFIX_WORDS: tuple[str, ...] = tuple(_COMPANY["prefix_words"])
_PREFIXES = (
    tuple(h + t for h in _PREFIX_HEADS for t in _PREFIX_TAILS if h[-1] != t[0] and h != t.title())
    + _PREFIX_WORDS
)
# A local flavour for some countries (folded to ASCII in the domain).
_LOCAL_PREFIXES: dict[str, tuple[str, ...]] = {
    code: tuple(words) for code, words in _COMPANY["local_prefixes"].items()
}
_PARTNER_SURNAMES: tuple[str, ...] = tuple(_COMPANY["partner_surnames"])
_NAME_DESCRIPTORS: tuple[str, ...] = tuple(_COMPANY["name_descriptors"])

# country -> (weight, legal suffixes, weighted IANA zones, name pool, title language)
_COUNTRIES: dict[str, tuple[float, tuple[str, ...], tuple[tuple[str, float], ...], str, str]] = {
    code: (
        spec["weight"],
        tuple(spec["legal_suffixes"]),
        tuple((zone, float(weight)) for zone, weight in spec["time_zones"].items()),
        spec["name_pool"],
        spec["title_language"],
    )
    for code, spec in _COMPANY["countries"].items()
}
_COUNTRY_PICK = _Weighted([(code, spec[0]) for code, spec in _COUNTRIES.items()])
_TZ_PICK = {code: _Weighted(spec[2]) for code, spec in _COUNTRIES.items()}
_GDPR_COUNTRIES = frozenset(_COMPANY["gdpr_countries"])

# technology -> (probability for a tiny company, probability for a very large one)
_TECHNOLOGIES: tuple[tuple[str, float, float], ...] = tuple(
    (tech, small, large) for tech, (small, large) in _COMPANY["technologies"].items()
)
_CLOUDS = _weights(_COMPANY["clouds"])
_OFFICE_SUITES = _weights(_COMPANY["office_suites"])

# --------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------

_FOLD = str.maketrans(_PEOPLE["ascii_fold"])
_NOT_EMAIL_CHARS = re.compile(r"[^a-z0-9-]+")
_NOT_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


def _fold(text: str) -> str:
    """ASCII-fold ("Łukasz Nguyễn" -> "Lukasz Nguyen") for email addresses and domains."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _email_part(name: str) -> str:
    return _NOT_EMAIL_CHARS.sub("", _fold(name).lower()).strip("-")


def _slug(name: str) -> str:
    return _NOT_SLUG_CHARS.sub("-", _fold(name).lower()).strip("-")


def _pool(names: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(written name, ASCII email part) pairs from (written, romanised) names."""
    return [(written, _email_part(romanised)) for written, romanised in names]


# pool -> ((written, ascii) first names, (written, ascii) last names)
_NAMES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    pool: (
        _pool((name, name) for name in first),
        _pool((name, name) for name in _PEOPLE["last_names"][pool]),
    )
    for pool, first in _PEOPLE["first_names"].items()
}
# Japanese names are written in kanji; their romanisation makes the email address.
_JP_NAMES = (
    _pool(_PEOPLE["jp_first_names"].items()),
    _pool(_PEOPLE["jp_last_names"].items()),
)
_JP_ROMAJI = (
    [(a.title(), a) for _, a in _JP_NAMES[0]],
    [(a.title(), a) for _, a in _JP_NAMES[1]],
)

# --------------------------------------------------------------------------------------
# Job titles: function -> seniority level -> titles. Levels: c (C-suite, founders, owners),
# vp, dir (director / head of), mgr (manager / lead), ic (individual contributor).
# --------------------------------------------------------------------------------------

_LEVELS: tuple[str, ...] = tuple(_TITLE_TABLES["levels"])
_TITLES: dict[str, dict[str, tuple[str, ...]]] = {
    function: {level: tuple(titles) for level, titles in by_level.items()}
    for function, by_level in _TITLE_TABLES["titles"].items()
}
# Titles in the local language, used for some contacts in DE, FR, ES and MX.
_LOCAL_TITLES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    lang: {
        function: {level: tuple(titles) for level, titles in by_level.items()}
        for function, by_level in by_function.items()
    }
    for lang, by_function in _TITLE_TABLES["local_titles"].items()
}
_LOCAL_TITLE_SHARE = 0.4
_LOCAL_BY_KEY: dict[tuple[str, str, str], tuple[str, ...]] = {
    (lang, function, level): titles
    for lang, by_function in _LOCAL_TITLES.items()
    for function, by_level in by_function.items()
    for level, titles in by_level.items()
}

_TECH_FUNCTIONS = frozenset(_TITLE_TABLES["tech_functions"])
_BUSINESS_FUNCTIONS = frozenset(_TITLE_TABLES["business_functions"])
_DECIDING_FUNCTIONS = _TECH_FUNCTIONS | _BUSINESS_FUNCTIONS | {"security"}

# Committee slot -> (function distribution, level distribution)
_SLOTS: dict[str, tuple[_Weighted, _Weighted]] = {
    slot: (_weights(spec["functions"]), _weights(spec["levels"]))
    for slot, spec in _TITLE_TABLES["slots"].items()
}
# Committee gaps planted on purpose: the account gets nobody who would fill that role.
_GAPS = ("approver", "specifier", "decision_maker")
_GAP_SHARE = 0.06
_BUSINESS_PICK = _SLOTS["business"][0]


def _violates_gap(gap: str, function: str, level: str, title: str) -> bool:
    """True when a drawn title would fill the committee role this account must lack."""
    if gap == "approver":
        return (function == "finance" and level in ("c", "vp", "dir")) or (
            function == "executive" and level == "c"
        )
    if gap == "specifier":
        return function in _TECH_FUNCTIONS and (level in ("dir", "mgr") or "Architect" in title)
    if function == "executive":
        return level in ("vp", "dir")
    return level in ("c", "vp") and function in _DECIDING_FUNCTIONS


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


def _account_sizes(rng: random.Random, contacts: int) -> list[int]:
    """Contacts per account: 4..18, about 10 on average, summing exactly to ``contacts``."""
    if contacts < 4:
        return [contacts] if contacts > 0 else []
    sizes: list[int] = []
    remaining = contacts
    while remaining > 0:
        size = min(remaining, round(rng.triangular(4, 18, 8)))
        leftover = remaining - size
        if 0 < leftover < 4:
            size = remaining if remaining <= 18 else remaining - 4
        sizes.append(size)
        remaining -= size
    return sizes


def _round_sig(value: float, digits: int) -> int:
    if value <= 0:
        return 0
    scale = 10 ** max(0, math.floor(math.log10(value)) - digits + 1)
    return int(round(value / scale) * scale)


def _employees(rng: random.Random) -> int:
    """Log-normal head count (median ~800, 15..60,000): many mid-size, few giants."""
    raw = min(60_000.0, max(15.0, math.exp(rng.gauss(math.log(800), 1.45))))
    if raw < 200:
        return int(raw)
    return _round_sig(raw, 2 if raw < 10_000 else 3)


def _company_name(
    rng: random.Random, industry: str, country: str, taken: set[str]
) -> tuple[str, str]:
    """An invented, unique company name and its ``.example`` domain."""
    nouns = _INDUSTRIES[industry][2]
    local = _LOCAL_PREFIXES.get(country, ())
    base = ""
    for attempt in itertools.count():
        roll = rng.random()
        if industry in ("Professional Services", "Financial Services") and roll < 0.15:
            first, second = rng.sample(_PARTNER_SURNAMES, 2)
            base = f"{first} & {second}"
        else:
            prefix = _one(rng, local) if local and roll < 0.35 else _one(rng, _PREFIXES)
            base = f"{prefix} {_one(rng, nouns)}"
        if attempt >= 8:
            base = f"{base} {rng.choice(_NAME_DESCRIPTORS)}"
        if attempt >= 16:
            base = f"{base} {attempt - 15}"
        if _slug(base) not in taken:
            break
    slug = _slug(base)
    taken.add(slug)
    suffixes = _COUNTRIES[country][1]
    name = base
    if industry not in _NO_LEGAL_SUFFIX and rng.random() < 0.55:
        name = f"{base} {rng.choice(suffixes)}"
    return name, slug + TLD


def _technologies(rng: random.Random, employees: int) -> str:
    size = min(1.0, max(0.0, (math.log10(employees) - 1.2) / 3.6))
    chosen: list[str] = []
    if rng.random() < 0.9:
        chosen.append(_CLOUDS.pick(rng))
        if rng.random() < 0.15:
            second = _CLOUDS.pick(rng)
            if second not in chosen:
                chosen.append(second)
    chosen.append(_OFFICE_SUITES.pick(rng))
    for tech, small, large in _TECHNOLOGIES:
        if rng.random() < small + (large - small) * size:
            chosen.append(tech)
    if "Salesforce" in chosen and "HubSpot" in chosen and rng.random() < 0.7:
        chosen.remove("HubSpot")
    return ";".join(chosen)


def _money(value: int) -> str:
    """A human revenue figure ("$12M", "$1.4B") as found in hand-made spreadsheets."""
    if value >= 1_000_000_000:
        return f"${value / 1e9:.1f}B"
    if value >= 1_000_000:
        return f"${value / 1e6:.0f}M"
    return f"${value / 1e3:.0f}K"


def _make_accounts(rng: random.Random, count: int) -> tuple[list[dict[str, str]], list[int]]:
    """Account rows plus their head counts (the rows get messy formats later)."""
    taken: set[str] = set()
    accounts: list[dict[str, str]] = []
    headcounts: list[int] = []
    for _ in range(count):
        industry = _INDUSTRY_PICK.pick(rng)
        country = _COUNTRY_PICK.pick(rng)
        name, domain = _company_name(rng, industry, country, taken)
        employees = _employees(rng)
        headcounts.append(employees)
        per_head = _INDUSTRIES[industry][1] * math.exp(rng.gauss(0, 0.35))
        revenue = "" if rng.random() < 0.04 else str(_round_sig(employees * per_head, 2))
        technologies = "" if rng.random() < 0.05 else _technologies(rng, employees)
        accounts.append(
            {
                "domain": domain,
                "name": name,
                "industry": industry,
                "employees": str(employees),
                "annual_revenue": revenue,
                "country": country,
                "technologies": technologies,
                "tier": "",
            }
        )
    return accounts, headcounts


def _mess_up(rng: random.Random, accounts: list[dict[str, str]]) -> None:
    """Plant the formats an importer must cope with, and a few manual tier overrides."""
    n = len(accounts)
    if n == 0:
        return
    order = list(range(n))
    rng.shuffle(order)
    scale = n // 200
    big = [i for i in order if int(accounts[i]["employees"]) >= 1000]
    with_revenue = [i for i in order if accounts[i]["annual_revenue"]]
    n_comma, n_k = 2 + scale, 1 + scale
    for i in big[:n_comma]:
        accounts[i]["employees"] = f"{int(accounts[i]['employees']):,}"
    for i in big[n_comma : n_comma + n_k]:
        thousands = int(accounts[i]["employees"]) / 1000
        accounts[i]["employees"] = f"{thousands:.0f}k" if thousands >= 10 else f"{thousands:g}k"
    for i in with_revenue[: 2 + scale]:
        accounts[i]["annual_revenue"] = _money(int(accounts[i]["annual_revenue"]))
    for i in order[: 1 + scale]:
        accounts[i]["domain"] = "https://www." + accounts[i]["domain"]
    for i in order[-rng.choice((2, 3)) :]:
        accounts[i]["tier"] = rng.choice(("1", "1", "2", "3"))


def _committee(rng: random.Random, size: int) -> list[str]:
    """Slots for one account: the classic committee first, then more people around it.

    Executive (approver), a C-level or VP owning the budget area (decision maker), a
    technical director or manager (specifier), finance and the business area; larger
    accounts add technical and business people and sometimes procurement or legal.
    """
    slots = ["executive", "decision", "specifier", "finance", "business"][:size]
    extra = size - len(slots)
    slots += ["technical"] * round(extra * 0.3)
    slots += ["business"] * round(extra * 0.25)
    if size >= 6 and rng.random() < 0.5:
        slots.append("procurement")
    if size >= 8 and rng.random() < 0.3:
        slots.append("legal")
    slots += ["filler"] * (size - len(slots))
    slots = slots[:size]
    rng.shuffle(slots)
    return slots


def _pick_title(
    rng: random.Random,
    slot: str,
    primary: str,
    lang: str,
    small_company: bool,
) -> tuple[str, str, str]:
    functions, levels = _SLOTS[slot]
    function = functions.pick(rng)
    if function == "primary" or (slot == "business" and rng.random() < 0.7):
        function = primary
    by_level = _TITLES[function]
    level = levels.pick(rng)
    if small_company and level == "vp" and slot != "decision" and rng.random() < 0.7:
        level = "dir"
    if level not in by_level:
        level = "ic" if "ic" in by_level else next(lv for lv in _LEVELS if lv in by_level)
    local = _LOCAL_BY_KEY.get((lang, function, level))
    if local and rng.random() < _LOCAL_TITLE_SHARE:
        return function, level, _one(rng, local)
    return function, level, _one(rng, by_level[level])


def _person(rng: random.Random, country: str) -> tuple[str, str, str, str]:
    """(first name, last name, ascii first, ascii last) typical for the country."""
    pool = _COUNTRIES[country][3]
    if pool == "jp":
        firsts, lasts = _JP_NAMES if rng.random() < 0.7 else _JP_ROMAJI
    else:
        firsts, lasts = _NAMES[pool]
    first, first_ascii = _one(rng, firsts)
    last, last_ascii = _one(rng, lasts)
    return first, last, first_ascii, last_ascii


def _consent(rng: random.Random, country: str) -> str:
    roll = rng.random()
    opt_in = 0.2 if country in _GDPR_COUNTRIES else 0.1
    if roll < opt_in:
        return "opt_in"
    return "none" if roll > 0.93 else "legitimate_interest"


def _make_contacts(
    rng: random.Random,
    accounts: list[dict[str, str]],
    headcounts: list[int],
    sizes: list[int],
) -> list[dict[str, str]]:
    count = len(accounts)
    gap_count = max(2, round(count * _GAP_SHARE)) if count >= 10 else 0
    gaps = {i: rng.choice(_GAPS) for i in rng.sample(range(count), gap_count)}
    rows: list[dict[str, str]] = []
    emails: set[str] = set()
    for index, (account, employees, size) in enumerate(
        zip(accounts, headcounts, sizes, strict=True)
    ):
        domain = account["domain"].removeprefix("https://www.")
        home = account["country"]
        home_tz = _TZ_PICK[home].pick(rng)
        primary = _BUSINESS_PICK.pick(rng)
        small = employees < 150
        gap = gaps.get(index)
        used_titles: set[str] = set()
        for slot in _committee(rng, size):
            country = home if rng.random() < 0.85 else _COUNTRY_PICK.pick(rng)
            lang = _COUNTRIES[country][4]
            current = slot
            for attempt in range(40):
                function, level, title = _pick_title(rng, current, primary, lang, small)
                if gap and _violates_gap(gap, function, level, title):
                    if attempt >= 5:
                        current = "filler"
                    continue
                if level in ("c", "vp") and title in used_titles:
                    continue
                break
            else:
                title = "Marketing Specialist"
            used_titles.add(title)
            first, last, first_ascii, last_ascii = _person(rng, country)
            local = f"{first_ascii}.{last_ascii}"
            email = f"{local}@{domain}"
            suffix = 2
            while email in emails:
                email = f"{local}{suffix}@{domain}"
                suffix += 1
            emails.add(email)
            linkedin = ""
            if rng.random() < 0.7:
                linkedin = (
                    f"https://www.linkedin.com/in/{first_ascii}-{last_ascii}-"
                    f"{rng.getrandbits(28):07x}"
                )
            timezone = ""
            if rng.random() < 0.9:
                same_place = country == home and rng.random() < 0.75
                timezone = home_tz if same_place else _TZ_PICK[country].pick(rng)
            rows.append(
                {
                    "email": email,
                    "first_name": first,
                    "last_name": last,
                    "title": title,
                    "account_domain": domain,
                    "linkedin_url": linkedin,
                    "country": country,
                    "timezone": timezone,
                    "consent": _consent(rng, country),
                }
            )
    return rows


def _bad_contacts(accounts: list[dict[str, str]]) -> list[dict[str, str]]:
    """Exactly three rows an importer must reject, each for a different reason."""
    domains = {a["domain"].removeprefix("https://www.") for a in accounts}
    some_domain = next(iter(sorted(domains)), "demo-company" + TLD)
    unknown = "unlisted-holdings" + TLD
    while unknown in domains:
        unknown = "un" + unknown
    blank = dict.fromkeys(CONTACT_COLUMNS, "")
    return [
        blank
        | {
            "email": f"maria.gomez(at){some_domain}",
            "first_name": "María",
            "last_name": "Gómez",
            "title": "Marketing Manager",
            "account_domain": some_domain,
            "country": "ES",
            "timezone": "Europe/Madrid",
            "consent": "legitimate_interest",
        },
        blank
        | {
            "email": f"lena.vogt@{unknown}",
            "first_name": "Lena",
            "last_name": "Vogt",
            "title": "Head of Operations",
            "account_domain": unknown,
            "country": "DE",
            "timezone": "Europe/Berlin",
            "consent": "legitimate_interest",
        },
        blank
        | {
            # Gmail does not allow hyphens in user names, so this address cannot exist.
            "email": "sam.rivera-demo@gmail.com",
            "first_name": "Sam",
            "last_name": "Rivera",
            "title": "Freelance Consultant",
            "consent": "none",
        },
    ]


def generate(
    contacts: int = 2000, seed: int = 42
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Return (account rows, contact rows) as CSV-ready dicts of strings.

    ``contacts`` good contacts are spread over accounts of 4..18 people (about 10 on
    average) and followed by exactly ``BAD_CONTACT_ROWS`` rows an importer must reject.
    Same arguments, same rows: only ``random.Random(seed)`` is used.
    """
    if contacts < 0:
        raise ValueError("contacts must be >= 0")
    rng = random.Random(seed)
    sizes = _account_sizes(rng, contacts)
    accounts, headcounts = _make_accounts(rng, len(sizes))
    _mess_up(rng, accounts)
    people = _make_contacts(rng, accounts, headcounts, sizes)
    return accounts, people + _bad_contacts(accounts)


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    """Plain ``csv.writer`` on lists: DictWriter's per-row key check costs ~3x the time."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in rows)


def write_demo_csvs(directory: Path, contacts: int = 2000, seed: int = 42) -> tuple[Path, Path]:
    """Write ``accounts.csv`` and ``contacts.csv`` into ``directory`` for the importers.

    UTF-8 without BOM, comma-separated, quoted by the csv module where needed; the files
    are byte-identical for the same arguments.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    accounts, people = generate(contacts=contacts, seed=seed)
    accounts_path = directory / "accounts.csv"
    contacts_path = directory / "contacts.csv"
    _write_csv(accounts_path, ACCOUNT_COLUMNS, accounts)
    _write_csv(contacts_path, CONTACT_COLUMNS, people)
    return accounts_path, contacts_path

"""Field values as people type them in CSV exports, read into the forms the database keys on.

Each normaliser takes one raw cell and returns the canonical value or raises ValueError with
a reason a marketer can act on. They are pure and cached where columns repeat, so the import
(`stages.importing.records`) can call them once per row.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
import zoneinfo
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from core.domains import HOST, TRIM, check_host, normalise_domain, show

__all__ = [
    "EXPLICIT_BLANKS",
    "PERSONAL_MAILBOX_DOMAINS",
    "SEPARATOR_JUNK",
    "AmbiguousNumber",
    "consent_alias",
    "is_explicit_blank",
    "nfc",
    "normalise_consent",
    "normalise_country",
    "normalise_domain",
    "normalise_email",
    "normalise_linkedin_url",
    "normalise_timezone",
    "parse_number",
    "read_money",
    "timezone_alias",
]

nfc = functools.partial(unicodedata.normalize, "NFC")

_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ANGLE = re.compile(r"<([^<>]*)>$")
_EMAIL = re.compile(rf"({_LOCAL.pattern})@({HOST.pattern})")
_LIST_SEPARATORS = re.compile(r"[;,\s]")


def normalise_email(raw: str) -> str:
    """An email address as contacts are keyed: bare address, lowercase, validated.

    Accepts the wrappers people paste from mail clients: "mailto:", "Jane <jane@acme.com>".
    Non-ASCII before the @ is refused because most sending services cannot deliver to it.
    """
    s = raw.strip(TRIM).lower()
    fast = _EMAIL.fullmatch(s)
    if fast and fast.end(1) <= 64 and len(s) - fast.start(2) <= 253:
        return s
    if not s:
        raise ValueError("the email address is empty")
    angle = _ANGLE.search(s)
    if angle:
        s = angle.group(1).strip(TRIM)
    if s[:7].lower() == "mailto:":
        s = s[7:].split("?", 1)[0].strip(TRIM)
    s = s.lower()
    local, at, domain = s.rpartition("@")
    if at and local and domain and _LOCAL.fullmatch(local) and len(local) <= 64:
        try:
            return f"{local}@{check_host(domain.rstrip('.'))}"
        except ValueError as exc:
            raise ValueError(
                f"'{show(raw)}' is not a valid email address: the part after @ {exc}"
            ) from None
    shown = show(raw)
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


EXPLICIT_BLANKS = frozenset(
    {"-", "–", "—", "?", "n/a", "na", "n.a.", "#n/a", "none", "null", "nil", "unknown", "tbd"}
)
"""What people type for "no value" (lowercase): read as a blank cell, without a warning."""
_NO_NUMBER = frozenset({"", *EXPLICIT_BLANKS})


def is_explicit_blank(raw: str) -> bool:
    """True for "n/a", "-", "none", "unknown" and the like: a blank, said out loud."""
    return raw.strip(TRIM).lower() in EXPLICIT_BLANKS


# "$" is taken as US dollars and "¥" as yen (documented); "kr" names four currencies, so it
# is refused with a request for the code.
_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR"}
_CURRENCY = re.compile(r"^([$€£¥₹]|kr\b|[a-z]{3}\b)\s*(.*)$|^(.*?)\s*([$€£¥₹]|\bkr|\b[a-z]{3})$")
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


class AmbiguousNumber(ValueError):
    """A value with two readings a thousand apart: said, never guessed."""


def _one_separator(
    whole: str, frac: str, sep: str, european: bool, has_suffix: bool, integer: bool
) -> str:
    """`whole<sep>frac` as plain digits. The file's delimiter says which separator groups
    thousands (`,` in a comma file, `.` in a semicolon file); three digits after the other
    one could be either ("3.400" in a comma file: 3.4 or 3,400?), so that is said, unless
    the field is whole (employees cannot be 3.4). Before a suffix ("1,500k", "3.400m") both
    readings are a thousand apart whatever the file, so that is said too."""
    grouping_shape = len(frac) == 3 and 1 <= len(whole) <= 3 and whole != "0"
    thousands = "." if european else ","
    if grouping_shape and not has_suffix and (sep == thousands or integer):
        return whole + frac
    if grouping_shape:
        fraction = f"{whole}.{frac.rstrip('0')}".rstrip(".")
        raise AmbiguousNumber(
            f"'{whole}{sep}{frac}' could be {fraction} or {int(whole + frac):,}: "
            f"write {whole}{frac} or {fraction}"
        )
    return f"{whole or '0'}.{frac or '0'}"


def _digits(n: str, european: bool, has_suffix: bool, integer: bool) -> Decimal:
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
            n = _one_separator(parts[0], parts[1], sep, european, has_suffix, integer)
    if not _PLAIN.fullmatch(n) or not any(ch.isdigit() for ch in n):
        raise ValueError(n)
    return Decimal(n)


def _amount(part: str, european: bool, integer: bool) -> tuple[Decimal, Decimal | None]:
    """One number with optional sign and k/M/B suffix; the suffix is returned too."""
    match = _AMOUNT.fullmatch(part.strip())
    if not match:
        raise ValueError(part)
    sign, digits, suffix = match.groups()
    if suffix not in _MULTIPLIERS:
        raise ValueError(part)
    value = _digits(digits.strip(), european, bool(suffix), integer) * _MULTIPLIERS[suffix]
    return (-value if sign == "-" else value), (_MULTIPLIERS[suffix] if suffix else None)


def _split_currency(s: str) -> tuple[str | None, str]:
    """(ISO code or None, the rest) for "$3.4M", "3.4M USD", "SEK 300m", "300 kr"."""
    for _ in range(2):  # "€ 5m EUR" is still one currency
        match = _CURRENCY.fullmatch(s)
        if not match:
            break
        mark, rest = (match.group(1), match.group(2)) if match.group(1) else match.group(4, 3)
        if mark in _MULTIPLIERS or not any(ch.isdigit() for ch in rest):
            break
        return _SYMBOLS.get(mark, mark.upper()), rest.strip()
    return None, s


def _read(s: str, european: bool, integer: bool) -> tuple[Decimal, bool]:
    """The value and whether it was a range (whose midpoint may be a fraction)."""
    try:
        value, _ = _amount(s, european, integer)
        return value, False
    except AmbiguousNumber:
        raise
    except ValueError:
        match = _RANGE.fullmatch(s)
        if not match:
            raise
    low, low_mult = _amount(_split_currency(match.group(1))[1], european, integer)
    high, high_mult = _amount(_split_currency(match.group(2))[1], european, integer)
    if low_mult is None and high_mult is not None and low * high_mult <= high:
        low *= high_mult
    if low > high:
        raise ValueError(s)
    return (low + high) / 2, True


def _checked(raw: str, read: Any, integer: bool = False) -> float:
    try:
        if len(raw) > 60:
            raise ValueError(raw)
        value, is_range = read()
    except AmbiguousNumber as exc:
        raise AmbiguousNumber(f"ambiguous number: {exc}") from None
    except (ValueError, InvalidOperation):
        raise ValueError(f"cannot read '{show(raw)}' as a number") from None
    if integer and not is_range and value != value.to_integral_value():
        raise ValueError(f"'{show(raw)}' is not a whole number")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"'{show(raw)}' is too large")
    return result


def parse_number(raw: str, *, european: bool = False, integer: bool = False) -> float | None:
    """Read the numbers marketers type: "1,200", "1 200", "5k", "10-50", "500+".

    `european=True` (the caller passes it for ;-separated files) reads "1.200" as twelve
    hundred and "1,5" as one and a half. A lone separator before three digits that the
    file's convention does not explain ("3.400" in a comma file) is an AmbiguousNumber,
    unless `integer` (a count cannot be 3.4, so it is 3,400). Ranges give their midpoint.
    A currency is refused here (see `read_money`). Blank and "n/a"-like cells give None.
    """
    s = raw.strip(TRIM).lower()
    if s in _NO_NUMBER:
        return None
    currency, _ = _split_currency(s)
    if currency is not None:
        raise ValueError(f"'{show(raw)}' has a currency ({currency}); a plain number is needed")
    return _checked(raw, lambda: _read(s, european, integer), integer)


def read_money(
    raw: str,
    *,
    european: bool,
    currency: str,
    usd_per_unit: Mapping[str, float],
    rates_date: date | None = None,
) -> tuple[float | None, str | None]:
    """An amount in `currency`, and a note when it was written in another one and converted
    with `usd_per_unit` (the rates file, of `rates_date`, which the note names). An unknown
    currency is an error, never taken as `currency`: "SEK 300m" is not 300 million dollars."""
    s = raw.strip(TRIM).lower()
    if s in _NO_NUMBER:
        return None, None
    written, rest = _split_currency(s)
    if written == "KR":
        raise ValueError(f"'{show(raw)}': kr could be SEK, NOK, DKK or ISK; write the code")
    value = _checked(raw, lambda: _read(rest, european, False))
    if written is None or written == currency:
        return value, None
    for code in (written, currency):
        if code not in usd_per_unit:
            raise ValueError(
                f"'{show(raw)}' is in {code}, which the currency rates file does not list: "
                "add its rate (ABM_CURRENCY_RATES) or write the amount in "
                f"{currency}"
            )
    converted = value * usd_per_unit[written] / usd_per_unit[currency]
    dated = f" at the rates of {rates_date.isoformat()}" if rates_date else ""
    return round(converted, 2), f"converted from {written} to {currency}{dated}: {converted:,.0f}"


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
    s = nfc(raw.strip(TRIM))
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


# Abbreviations that name one set of clock rules, and the IANA zone that keeps them. They
# win over the legacy IANA names "EST", "HST" and "CET": a New Yorker marked EST keeps
# daylight saving. Every CET country has kept the EU's rules since 1996, so Berlin stands
# for all of them.
_ZONE_ABBREVIATIONS = {
    **dict.fromkeys(("pst", "pdt", "pt", "pacific_time"), "America/Los_Angeles"),
    **dict.fromkeys(("est", "edt", "et", "eastern_time"), "America/New_York"),
    "cdt": "America/Chicago",
    "mdt": "America/Denver",
    **dict.fromkeys(("akst", "akdt"), "America/Anchorage"),
    "hst": "Pacific/Honolulu",
    **dict.fromkeys(("cet", "cest", "mez", "mesz"), "Europe/Berlin"),
    "jst": "Asia/Tokyo",
    "kst": "Asia/Seoul",
    "sgt": "Asia/Singapore",
    "hkt": "Asia/Hong_Kong",
    **dict.fromkeys(("nzst", "nzdt"), "Pacific/Auckland"),
}
# Abbreviations with more than one meaning: never guessed.
_AMBIGUOUS_ZONES = {
    "cst": "US Central (America/Chicago), China (Asia/Shanghai) or Cuba (America/Havana)",
    "ist": "India (Asia/Kolkata), Ireland (Europe/Dublin) or Israel (Asia/Jerusalem)",
    "bst": "British Summer Time (Europe/London) or Bangladesh (Asia/Dhaka)",
    "mst": "US Mountain with daylight saving (America/Denver) or Arizona without (America/Phoenix)",
    "ast": "Atlantic (America/Halifax) or Arabia (Asia/Riyadh)",
    "aest": "Sydney with daylight saving (Australia/Sydney) or Queensland without "
    "(Australia/Brisbane)",
}
_OFFSET = re.compile(r"(?:utc|gmt)?\s*[+\-−]\s*[0-9]{1,2}(?::?[0-9]{2})?", re.IGNORECASE)


def _zone_key(s: str) -> str:
    return s.replace(" ", "_").lower()


def timezone_alias(raw: str) -> str | None:
    """The IANA zone a common abbreviation ("PST", "CET") stands for, or None."""
    return _ZONE_ABBREVIATIONS.get(_zone_key(raw.strip(TRIM)))


def normalise_timezone(raw: str) -> str | None:
    """The canonical IANA name ("europe/berlin" -> "Europe/Berlin"); blank gives None.

    Abbreviations are refused, saying the zone they stand for (`timezone_alias`) or why
    they cannot be read, and so are UTC offsets, which know nothing of daylight saving."""
    s = raw.strip(TRIM)
    if not s:
        return None
    key = _zone_key(s)
    alias = _ZONE_ABBREVIATIONS.get(key)
    if alias:
        raise ValueError(f"'{show(s)}' is an abbreviation, not a time zone name such as {alias}")
    if key in _AMBIGUOUS_ZONES:
        raise ValueError(f"'{show(s)}' could be {_AMBIGUOUS_ZONES[key]}; write the time zone name")
    canonical = _timezone_names().get(key)
    if canonical:
        return canonical
    if "/" in s and s.isascii() and ".." not in s:
        try:
            zoneinfo.ZoneInfo(s)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
            pass
        else:
            return s
    if _OFFSET.fullmatch(s):
        raise ValueError(
            f"'{show(s)}' is an offset, which does not follow daylight saving; write a time "
            "zone name such as Europe/Berlin"
        )
    raise ValueError(
        f"'{show(s)}' is not a time zone name such as Europe/Berlin or America/New_York"
    )


_CONSENT = {
    "opt_in": "opt_in",
    "optin": "opt_in",
    "opted_in": "opt_in",
    "legitimate_interest": "legitimate_interest",
    "none": "none",
}
SEPARATOR_JUNK = re.compile(r"[\s-]+")
# Informal answers a CRM export holds instead of the lawful basis; "none" means no consent.
_CONSENT_ALIASES = {
    **dict.fromkeys(("yes", "y", "true", "1"), "opt_in"),
    **dict.fromkeys(("li", "legitimate_interests"), "legitimate_interest"),
    **dict.fromkeys(
        ("no", "n", "false", "0", "opt_out", "opted_out", "optout", "unsubscribed"), "none"
    ),
}


def consent_alias(raw: str) -> str | None:
    """The lawful basis an informal answer stands for ("yes", "LI", "no"), or None."""
    return _CONSENT_ALIASES.get(SEPARATOR_JUNK.sub("_", raw.strip(TRIM).lower()))


def normalise_consent(raw: str) -> str | None:
    """opt_in, legitimate_interest or none (GDPR lawful basis); blank gives None."""
    s = raw.strip(TRIM)
    if not s:
        return None
    value = _CONSENT.get(SEPARATOR_JUNK.sub("_", s.lower()))
    if value is None:
        raise ValueError(f"'{show(s)}' is not one of opt_in, legitimate_interest, none")
    return value


_LINKEDIN = re.compile(
    r"(?:https?://)?((?:[a-z0-9-]+\.)*linkedin\.com)(?::[0-9]+)?(/[^?#\s]*)?(?:[?#]\S*)?",
    re.IGNORECASE,
)


def normalise_linkedin_url(raw: str) -> str | None:
    """An https linkedin.com URL without tracking query; blank gives None."""
    s = raw.strip(TRIM)
    if not s:
        return None
    match = _LINKEDIN.fullmatch(s)
    if not match:
        raise ValueError(f"'{show(s)}' is not a linkedin.com URL")
    path = (match.group(2) or "").rstrip("/")
    if not path:
        raise ValueError(f"'{show(s)}' does not point to a LinkedIn profile or page")
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

"""When a message may leave: sending windows in the person's own time zone and frequency
caps over rolling windows. Pure functions; `stages.delivery.send_rules` applies them to each
chunk just before sending, together with the suppression and consent checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.campaign_file import Cap, SendingWindow

# Where a person's time zone is unknown: the main business zone of the account's country.
COUNTRY_ZONES = {
    "US": "America/New_York",
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "AR": "America/Argentina/Buenos_Aires",
    "GB": "Europe/London",
    "IE": "Europe/Dublin",
    "DE": "Europe/Berlin",
    "AT": "Europe/Vienna",
    "CH": "Europe/Zurich",
    "FR": "Europe/Paris",
    "BE": "Europe/Brussels",
    "NL": "Europe/Amsterdam",
    "LU": "Europe/Luxembourg",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "IT": "Europe/Rome",
    "SE": "Europe/Stockholm",
    "NO": "Europe/Oslo",
    "DK": "Europe/Copenhagen",
    "FI": "Europe/Helsinki",
    "PL": "Europe/Warsaw",
    "CZ": "Europe/Prague",
    "IL": "Asia/Jerusalem",
    "AE": "Asia/Dubai",
    "IN": "Asia/Kolkata",
    "SG": "Asia/Singapore",
    "JP": "Asia/Tokyo",
    "KR": "Asia/Seoul",
    "CN": "Asia/Shanghai",
    "HK": "Asia/Hong_Kong",
    "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland",
    "ZA": "Africa/Johannesburg",
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as `America`
        return None


def local_zone(contact_zone: str | None, country: str | None, fallback: str) -> ZoneInfo:
    """The person's zone, else their account's country's, else the campaign's."""
    return (
        _zone(contact_zone)
        or _zone(COUNTRY_ZONES.get((country or "").upper()))
        or ZoneInfo(fallback)
    )


def next_window_opening(now: datetime, window: SendingWindow, zone: ZoneInfo) -> datetime | None:
    """None when `now` is inside the window; otherwise the next opening, in UTC.

    Wall-clock times are placed on the calendar in `zone`, so a 09:00 start stays 09:00
    across daylight-saving changes; a start inside a spring-forward gap moves to the first
    instant after it."""
    local_now = now.astimezone(zone)
    for offset in range(8):
        day = local_now.date() + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        start = _wall_clock(day, window.start, zone)
        end = _wall_clock(day, window.end, zone)
        if offset == 0 and start <= now < end:
            return None
        if start > now:
            return start
    raise AssertionError("a sending window has at least one day")


def _wall_clock(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`day` at `at` in `zone`, as UTC. A time the clocks skip (spring forward) resolves,
    by PEP 495's fold=0, to the same distance past the gap: 02:30 becomes 03:30."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def cap_frees_at(sent_at: list[datetime], cap: Cap | None, now: datetime) -> datetime | None:
    """None when one more message fits under the cap; else when the oldest message in the
    rolling window ages out and a slot frees up."""
    if cap is None:
        return None
    window_start = now - timedelta(days=cap.days)
    recent = sorted(t for t in sent_at if t > window_start)
    if len(recent) < cap.max:
        return None
    return recent[len(recent) - cap.max] + timedelta(days=cap.days)

"""When a message may leave: sending windows in the person's own time zone, frequency caps
over rolling windows, and what the sender's relay and reputation allow (a daily quota, the
warm-up ramp of a new sending domain, a rate per second). Pure functions;
`stages.delivery.send_rules` and `stages.delivery.rates` apply them to each chunk just
before sending, together with the suppression and consent checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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


# The warm-up of a new sending domain: emails a day by day since its first email (day 1 is
# the UTC day of that email). It starts at 50 and doubles every day, the low end of the
# published ramps (50-100 on day 1, doubling while the complaint and bounce rates stay low);
# a domain reaches 102,400 a day on day 12 and has no warm-up limit from day 13.
DEFAULT_WARMUP_RAMP: dict[int, int] = {day: 50 * 2 ** (day - 1) for day in range(1, 13)}
# A quota that only messages other chunks are sending right now fill up is tried again this
# soon: some of those may yet be held back, and then there is room after all.
IN_FLIGHT_RECHECK = timedelta(minutes=5)


def warmup_day(first_sent: datetime | None, now: datetime) -> int:
    """Which day of its warm-up a sending domain is on: 1 on the UTC day of its first email
    (and before it has sent any), counted in calendar days, as providers count volume."""
    if first_sent is None:
        return 1
    return (now.astimezone(UTC).date() - first_sent.astimezone(UTC).date()).days + 1


def warmup_quota(ramp: Mapping[int, int], day: int) -> int | None:
    """Emails the ramp allows on `day`: a day it does not list keeps the allowance of the
    last listed day before it; after its last day the warm-up is over (None: no limit)."""
    if day > max(ramp):
        return None
    return ramp[max(listed for listed in ramp if listed <= day)]


def next_utc_midnight(now: datetime) -> datetime:
    """When the next UTC day, and so the next day's warm-up allowance, begins."""
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC)


def quota_retry_at(
    quota: int, counted: int, admitted: int, frees_at: datetime, now: datetime
) -> datetime:
    """When messages over a quota may be tried again. When the messages already sent and
    those let through now fill it, that is when it frees; when messages other chunks are
    still sending fill it, shortly, since those may yet be held back."""
    return frees_at if counted + admitted >= quota else now + IN_FLIGHT_RECHECK


@dataclass(frozen=True)
class Booking:
    """Slots on a send rate's shared schedule: how many of the wanted messages got one, the
    moment (epoch seconds) each of those may leave, the schedule's new end (`tat`) and when
    the first message without a slot could leave."""

    count: int
    not_before: list[float]
    tat: float
    next_free: float


def burst_seconds(rate: float) -> float:
    """How far ahead of its pace an idle sender may be: one second's worth of messages at
    once (as relays such as SES allow short bursts), and at least one message."""
    return max(1.0, 1.0 / rate)


def book_slots(tat: float, now: float, rate: float, wanted: int, horizon: float) -> Booking:
    """Book up to `wanted` consecutive slots at `rate` a second after the schedule's end
    `tat` (the generic cell rate algorithm, a token bucket kept as one number): message i
    may leave at the schedule's start + (i + 1) / rate less the burst allowance. Only slots
    that come within `horizon` seconds are booked; the rest wait for a later run."""
    burst = burst_seconds(rate)
    start = max(tat, now)
    room = math.floor((now + horizon + burst - start) * rate + 1e-9)
    count = max(0, min(wanted, room))
    not_before = [max(now, start + (i + 1) / rate - burst) for i in range(count)]
    end = start + count / rate
    return Booking(count, not_before, end, max(now, end + 1 / rate - burst))


def rate_text(rate: float) -> str:
    """A send rate as people say it: `14 a second`, or `360 an hour` below one a second."""
    return f"{rate:g} a second" if rate >= 1 else f"{rate * 3600:g} an hour"

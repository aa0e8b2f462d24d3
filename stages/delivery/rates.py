"""What the sender's relay allows, across every chunk process and worker: a rate per second
(`ABM_SEND_RATE_PER_SECOND`), a quota over any 24 hours (`ABM_SEND_MAX_PER_DAY`) and the
warm-up ramp of a new sending domain (`ABM_WARMUP`).

A per-process token bucket would let N processes send N times the rate, so the state lives
in the database every worker already shares: one row per email backend (in `sync_cursor`,
the table of small persisted positions) holds the end of that backend's send schedule.
Each chunk, once, takes that row's lock, counts what the ledger says was sent (and is being
sent), books its slots on the schedule and commits: one short transaction per chunk, and
nothing per message but waiting for its slot. Messages over a quota are deferred with the
reason and the time they may go, like those a frequency cap holds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import PositiveInt, RootModel, model_validator
from sqlalchemy import Connection, Engine, and_, case, false, func, select, update

from core.errors import ConfigError
from core.settings import Settings
from core.yamlfile import load_model
from models.store import dialect_insert
from models.tables import Campaign, Delivery, SyncCursor
from stages.delivery.pacing import (
    DEFAULT_WARMUP_RAMP,
    book_slots,
    next_utc_midnight,
    quota_retry_at,
    rate_text,
    warmup_day,
    warmup_quota,
)

DAY = timedelta(days=1)
LOCK_PREFIX = "send-schedule:"
# The moment (epoch seconds) a message admitted under a send rate may leave, on its row.
NOT_BEFORE = "not_before"
IN_FLIGHT = ("rendered", "sending")
# (database, domain, ramp's last day) whose warm-up is over: nothing is counted for them.
_WARMED_UP: set[tuple[str, str, int]] = set()
# (database, domain) -> when the domain sent its first email.
_FIRST_EMAIL: dict[tuple[str, str], datetime] = {}


class WarmupRamp(RootModel[dict[PositiveInt, PositiveInt]]):
    """A ramp file: `day: emails that day`, day 1 first."""

    @model_validator(mode="after")
    def _starts_on_day_one(self) -> WarmupRamp:
        if 1 not in self.root:
            raise ValueError("the ramp must say how many emails day 1 allows (`1: 50`)")
        return self


@dataclass(frozen=True)
class SendLimits:
    """The limits in force for one email backend; `horizon_s`: how far ahead a chunk may
    book (half its lease, so that a slow rate never outlives the lease)."""

    backend: str
    per_second: float | None
    per_day: int | None
    ramp: Mapping[int, int] | None
    horizon_s: float

    @property
    def any(self) -> bool:
        return bool(self.per_second or self.per_day or self.ramp)


def send_limits(settings: Settings) -> SendLimits:
    """The limits the settings ask for; a ramp file that cannot be used is a ConfigError
    naming the setting and the file's line."""
    return SendLimits(
        backend=settings.email_backend,
        per_second=settings.send_rate_per_second,
        per_day=settings.send_max_per_day,
        ramp=_ramp(settings.warmup),
        horizon_s=settings.lease_seconds / 2,
    )


def _ramp(setting: str) -> Mapping[int, int] | None:
    if setting.strip().lower() in ("", "off"):
        return None
    if setting.strip().lower() == "on":
        return DEFAULT_WARMUP_RAMP
    try:
        return load_model(Path(setting), WarmupRamp).root
    except ConfigError as exc:
        raise ConfigError(f"ABM_WARMUP: {exc}") from None


def admit(
    engine: Engine,
    limits: SendLimits,
    rows: list[dict[str, Any]],
    sender_domain: str,
    own_claimed: int,
    book: bool = True,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], datetime, str]]]:
    """Split a chunk's sendable rows into those the limits let go now (each with its slot,
    `NOT_BEFORE`, under a send rate) and those deferred, with when and why.

    `own_claimed`: rows this chunk holds claimed, which the count of messages in flight
    must not hold against it. `book=False` (a dry run) counts but books nothing."""
    if not rows or not limits.any:
        return rows, []
    now = datetime.now(UTC)
    with engine.begin() as connection:
        schedule = _lock_schedule(connection, limits.backend, now) if book else 0.0
        domain = sender_domain if limits.ramp and _warming(engine, sender_domain, limits) else None
        ready, deferred = rows, []
        if limits.per_day or domain:  # a rate alone needs no count
            usage = _usage(connection, domain, now)
            allowed, until, why = _quota(limits, usage, domain, own_claimed, len(rows), now)
            if domain and limits.ramp and warmup_quota(limits.ramp, usage.warmup_day(now)) is None:
                _WARMED_UP.add(_warmed_key(engine, domain, limits))
            ready = rows[:allowed]
            deferred = [(row, until, why) for row in rows[allowed:]]
        if limits.per_second and book and ready:
            ready, late = _book(connection, limits, ready, schedule, now)
            deferred += late
    return ready, deferred


def _quota(
    limits: SendLimits,
    usage: Usage,
    domain: str | None,
    own_claimed: int,
    wanted: int,
    now: datetime,
) -> tuple[int, datetime, str]:
    """How many of `wanted` messages the daily limit and the warm-up let go now, and when
    and why the rest may go: the tighter of the two decides."""
    in_flight = max(0, usage.in_flight - own_claimed)
    holds = [(wanted, now, "")]
    if limits.per_day:
        left = max(0, limits.per_day - usage.sent_day - in_flight)
        frees = usage.oldest + DAY if usage.oldest else now + DAY
        holds.append(
            (
                left,
                quota_retry_at(limits.per_day, usage.sent_day, left, frees, now),
                f"daily sending limit reached ({limits.per_day:,} per day)",
            )
        )
    if domain and limits.ramp:
        day = usage.warmup_day(now)
        quota = warmup_quota(limits.ramp, day)
        if quota is not None:
            left = max(0, quota - usage.domain_today - in_flight)
            holds.append(
                (
                    left,
                    quota_retry_at(quota, usage.domain_today, left, next_utc_midnight(now), now),
                    f"warm-up: day {day} of {domain} allows {quota:,} a day",
                )
            )
    return min(holds, key=lambda hold: hold[0])


def _book(
    connection: Connection,
    limits: SendLimits,
    rows: list[dict[str, Any]],
    schedule: float,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], datetime, str]]]:
    """Book the rows' slots on the backend's schedule (its row is locked): each booked row
    gets its moment; those past the horizon are deferred to when the schedule has room."""
    assert limits.per_second is not None
    booking = book_slots(schedule, now.timestamp(), limits.per_second, len(rows), limits.horizon_s)
    connection.execute(
        update(SyncCursor)
        .where(SyncCursor.source == LOCK_PREFIX + limits.backend)
        .values(cursor=repr(booking.tat), updated_at=now)
    )
    for row, at in zip(rows, booking.not_before, strict=False):
        row[NOT_BEFORE] = at
    later = datetime.fromtimestamp(booking.next_free, UTC)
    why = f"send rate limit ({rate_text(limits.per_second)}): the rest go in a later run"
    return rows[: booking.count], [(row, later, why) for row in rows[booking.count :]]


def _lock_schedule(connection: Connection, backend: str, now: datetime) -> float:
    """Lock this backend's schedule row until the transaction ends (SQLite: the write
    lock the insert takes; PostgreSQL: the row lock) and return its end, epoch seconds."""
    key = LOCK_PREFIX + backend
    connection.execute(
        dialect_insert(connection.engine, SyncCursor.__table__)
        .values(source=key, cursor="0", updated_at=now)
        .on_conflict_do_nothing(index_elements=["source"])
    )
    found = connection.execute(
        select(SyncCursor.cursor).where(SyncCursor.source == key).with_for_update()
    ).scalar_one()
    return float(found)


@dataclass(frozen=True)
class Usage:
    """What the ledger says of email: sent in the last 24 hours (and the oldest of those),
    in flight now (claimed or handed over, any campaign), and for the warming domain, sent
    since UTC midnight and its first email ever."""

    sent_day: int
    oldest: datetime | None
    in_flight: int
    domain_today: int
    domain_first: datetime | None

    def warmup_day(self, now: datetime) -> int:
        return warmup_day(self.domain_first, now)


def _usage(connection: Connection, domain: str | None, now: datetime) -> Usage:
    """The counts the limits need, through the ledger's (campaign, state, due_at) index: a
    sent row's due_at is when its outcome was recorded, right after it left, so the last
    24 hours' emails are one index range per campaign, not a pass over the whole ledger
    (a million rows: 1 ms instead of 300). A row a crash left `uncertain` and provider
    events later reconciled counts at its claim, which is when it left."""
    since = now - DAY
    campaigns = Delivery.campaign_id.in_(select(Campaign.id))
    email = Delivery.channel == "email"
    ours = Delivery.message_id.endswith(f"@{domain}>", autoescape=True) if domain else false()
    today = and_(ours, Delivery.sent_at >= next_utc_midnight(now) - DAY)
    sent = connection.execute(
        select(
            func.count(),
            func.min(Delivery.sent_at),
            func.coalesce(func.sum(case((today, 1), else_=0)), 0),
        ).where(
            campaigns,
            Delivery.state == "sent",
            Delivery.due_at > since,
            Delivery.sent_at > since,
            email,
        )
    ).one()
    in_flight = connection.execute(
        select(func.count()).where(campaigns, Delivery.state.in_(IN_FLIGHT), email)
    ).scalar_one()
    return Usage(
        sent_day=int(sent[0]),
        oldest=sent[1],
        in_flight=int(in_flight),
        domain_today=int(sent[2]),
        domain_first=_first_email(connection, domain) if domain else None,
    )


def _first_email(connection: Connection, domain: str) -> datetime | None:
    """When the domain sent its first email (its Message-IDs end in `@domain>`). Once
    known it never changes, so it is looked up (a pass over the ledger) once per process."""
    key = (connection.engine.url.render_as_string(hide_password=True), domain)
    if key not in _FIRST_EMAIL:
        first = connection.execute(
            select(func.min(Delivery.sent_at)).where(
                Delivery.state == "sent",
                Delivery.channel == "email",
                Delivery.message_id.endswith(f"@{domain}>", autoescape=True),
            )
        ).scalar()
        if first is None:
            return None
        _FIRST_EMAIL[key] = first
    return _FIRST_EMAIL[key]


def _warmed_key(engine: Engine, domain: str, limits: SendLimits) -> tuple[str, str, int]:
    assert limits.ramp is not None
    return (engine.url.render_as_string(hide_password=True), domain, max(limits.ramp))


def _warming(engine: Engine, domain: str, limits: SendLimits) -> bool:
    return _warmed_key(engine, domain, limits) not in _WARMED_UP


def paced_batch_size(batch_size: int, rate: float | None) -> int:
    """A provider batch under a send rate holds at most one second's worth of messages: a
    batch leaves at once, so a bigger one would burst past the rate."""
    return batch_size if rate is None else max(1, min(batch_size, int(rate)))


def slot_ahead(rows: list[dict[str, Any]]) -> float | None:
    """When the last of these rows' booked slots comes (epoch seconds), if still ahead."""
    latest = max((row.get(NOT_BEFORE, 0.0) for row in rows), default=0.0)
    return latest if latest > time.time() else None


def wait_for(moment: float) -> None:
    """Sleep until `moment` (epoch seconds): the row's slot on the shared schedule."""
    time.sleep(max(0.0, moment - time.time()))

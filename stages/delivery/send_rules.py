"""The rules that protect people, evaluated when a message leaves: suppressions, consent,
stop rules, account holds, frequency caps and sending windows; then what the sender's relay
and reputation allow (send rate, daily limit, warm-up: `stages.delivery.rates`). The send
loop asks them for each chunk just before sending; every message held back gets its reason."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    or_,
    select,
    true,
    update,
)

from core.campaign_file import AccountRules, Audience, CampaignFile, Step, parse_wait
from core.settings import parse_domain_limits
from core.vocabulary import STAGES
from models.db import chunked, session_scope
from models.store import (
    dialect_insert,
    email_domain,
)
from models.tables import (
    Account,
    AccountRelease,
    Campaign,
    Contact,
    Delivery,
    EngagementEvent,
    Suppression,
    utcnow,
)
from stages.content.compose import Composer
from stages.delivery.ledger import LEFT_AUDIENCE, DeliveryContext, outcome_row, record_outcomes
from stages.delivery.pacing import cap_frees_at, local_zone, next_window_opening
from stages.delivery.rates import admit, send_limits
from stages.targeting.audience import accounts_outside, person_outside

# stop_if conditions that are engagement events (unsubscribed/bounced are contact statuses)
STOP_EVENT_TYPES = {"replied": "reply", "clicked": "click", "meeting": "meeting"}


def suppressed_contact_ids(
    engine: Engine, contact_ids: list[int], channel: str = "email"
) -> set[int]:
    """Contacts whose email, email domain or account domain is suppressed on the channel."""
    channels = ("all", "email") if channel == "email" else ("all", "linkedin")
    domain = email_domain(engine)
    query = (
        select(Contact.id)
        .join(Account, Account.id == Contact.account_id)
        .join(
            Suppression,
            and_(
                Suppression.channel.in_(channels),
                or_(
                    and_(Suppression.kind == "email", Suppression.value == Contact.email),
                    and_(
                        Suppression.kind == "domain",
                        or_(Suppression.value == Account.domain, Suppression.value == domain),
                    ),
                ),
            ),
        )
        .where(Contact.id.in_(contact_ids))
    )
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


def skip_reason(
    contact: dict[str, Any], suppressed: bool, consent_required: bool, channel: str = "email"
) -> str | None:
    """Why this person must not get this message now, or None. The one place rules live.

    `suppressed`: the suppression list holds them for this channel (or all). An unsubscribe
    stops every channel (the person asked us to stop); a bounce and the `suppressed` status
    (set from email suppressions and spam reports) are about email only, so a LinkedIn step
    asks only the suppression list."""
    if contact["status"] == "unsubscribed":
        return "unsubscribed"
    if channel == "email" and contact["status"] == "bounced":
        return "bounced"
    if suppressed or (channel == "email" and contact["status"] == "suppressed"):
        return "suppressed"
    if consent_required and contact.get("consent") not in ("opt_in", "legitimate_interest"):
        return "no_consent"
    return None


def stop_reasons(
    engine: Engine, campaign_id: int, step: Step, rows: list[dict[str, Any]]
) -> dict[int, str]:
    """Contacts for whom a stop condition of the step holds now: `stopped_<why>` by id."""
    stopped: dict[int, str] = {}
    stop_stage = step.stop_stage
    if stop_stage:
        threshold = STAGES.index(stop_stage)
        for row in rows:
            if STAGES.index(row["stage"]) >= threshold:
                stopped[row["contact_id"]] = f"stopped_stage_{row['stage']}"
    kinds = {STOP_EVENT_TYPES[c]: c for c in step.stop_if if c in STOP_EVENT_TYPES}
    if kinds:
        ids = [row["contact_id"] for row in rows]
        query = select(EngagementEvent.contact_id, EngagementEvent.type).where(
            EngagementEvent.contact_id.in_(ids),
            EngagementEvent.type.in_(list(kinds)),
            or_(EngagementEvent.type != "click", EngagementEvent.campaign_id == campaign_id),
            _meetings_since_start(campaign_id),
        )
        with engine.connect() as connection:
            for contact_id, kind in connection.execute(query):
                stopped.setdefault(contact_id, f"stopped_{kinds[kind]}")
    return stopped


PAUSE_RECHECK = timedelta(days=1)


def _meetings_since_start(campaign_id: int | None) -> Any:
    """Only meetings from the campaign's start on stop or hold it: a CRM's meeting history
    (a first `abm crm pull` reads years of it) says nothing about a campaign begun today.
    Replies and clicks answer our own messages, so they need no such bound. A condition for
    the events query itself (the start read in the same statement), not a query of its own."""
    if campaign_id is None:
        return true()
    started = select(Campaign.created_at).where(Campaign.id == campaign_id).scalar_subquery()
    return or_(EngagementEvent.type != "meeting", EngagementEvent.occurred_at >= started)


def account_holds(
    engine: Engine,
    rules: AccountRules,
    rows: list[dict[str, Any]],
    now: datetime,
    campaign_id: int | None = None,
) -> tuple[dict[int, str], dict[int, datetime]]:
    """Account-level rules: (contacts to skip with a reason, contacts to defer until when).

    A reply or meeting from someone at the account stops, or delays by `delay`, everyone
    else's sequence there; an account at `stop_at_stage` or beyond gets nothing more."""
    skip: dict[int, str] = {}
    defer: dict[int, datetime] = {}
    if rules.stop_at_stage:
        threshold = STAGES.index(rules.stop_at_stage)
        for row in rows:
            if STAGES.index(row["stage"]) >= threshold:
                skip[row["contact_id"]] = f"account_stage_{row['stage']}"
    if rules.on_reply == "continue":
        return skip, defer
    accounts = sorted({row["account_id"] for row in rows})
    latest: dict[int, list[tuple[int | None, datetime]]] = {}
    with engine.connect() as connection:
        for batch in chunked(accounts, 2000):
            for account_id, contact_id, at in connection.execute(
                select(
                    EngagementEvent.account_id,
                    EngagementEvent.contact_id,
                    EngagementEvent.occurred_at,
                ).where(
                    EngagementEvent.account_id.in_(batch),
                    EngagementEvent.type.in_(["reply", "meeting"]),
                    _meetings_since_start(campaign_id),
                )
            ):
                latest.setdefault(account_id, []).append((contact_id, at))
    delay = parse_wait(rules.delay)
    released = account_releases(engine, campaign_id, accounts) if rules.on_reply == "pause" else {}
    for row in rows:
        others = [at for who, at in latest.get(row["account_id"], []) if who != row["contact_id"]]
        if not others or row["contact_id"] in skip:
            continue
        if rules.on_reply == "stop":
            skip[row["contact_id"]] = "account_replied"
        elif rules.on_reply == "pause":
            lifted = released.get(row["account_id"])
            if lifted is None or lifted < max(others):
                defer[row["contact_id"]] = now + PAUSE_RECHECK
        elif max(others) + delay > now:
            defer[row["contact_id"]] = max(others) + delay
    return skip, defer


def account_releases(
    engine: Engine, campaign_id: int | None, account_ids: list[int]
) -> dict[int, datetime]:
    """When someone last lifted this campaign's reply-pause, per account."""
    if campaign_id is None or not account_ids:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(AccountRelease.account_id, AccountRelease.released_at).where(
                AccountRelease.campaign_id == campaign_id,
                AccountRelease.account_id.in_(account_ids),
            )
        ).all()
    return dict(rows)


def release_account(engine: Engine, campaign_id: int, domain: str) -> int:
    """Lift a campaign's reply-pause for one account now; its held messages become due."""
    from core.errors import AbmError

    with session_scope(engine) as session:
        account_id = session.execute(select(Account.id).where(Account.domain == domain)).scalar()
        if account_id is None:
            raise AbmError(f"no account with domain {domain!r}")
        now = utcnow()
        statement = dialect_insert(engine, AccountRelease.__table__).values(
            campaign_id=campaign_id, account_id=account_id, released_at=now
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["campaign_id", "account_id"], set_={"released_at": now}
            )
        )
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.account_id == account_id,
                Delivery.state == "planned",
                Delivery.last_error.like("deferred: someone at the account replied%"),
            )
            .values(due_at=now, updated_at=now)
        )
        return result.rowcount or 0


def left_audience(engine: Engine, audience: Audience, rows: list[dict[str, Any]]) -> dict[int, str]:
    """People of this chunk no longer in the campaign's audience, with why: the same test
    the run used to pick its accounts, on the account and role as they are now."""
    outside = accounts_outside(engine, audience, {row["account_id"] for row in rows})
    found: dict[int, str] = {}
    for row in rows:
        reason = outside.get(row["account_id"]) or person_outside(audience, row["role"])
        if reason:
            found[row["contact_id"]] = reason
    return found


def check_chunk(
    engine: Engine,
    context: DeliveryContext,
    campaign: CampaignFile,
    step: Step,
    composer: Composer,
    rows: list[dict[str, Any]],
    rehearsal: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[dict, datetime, str]], Counter]:
    """The rules that protect people, for one chunk at the moment of sending: returns the
    rows that may go now, the skipped ones (with reasons) and the deferred ones.

    `rows` are the chunk's claimed rows; a `rehearsal` (dry run) claimed none and books no
    place on the send rate's schedule."""
    channel = "email" if step.channel == "email" else "linkedin"
    suppressed = suppressed_contact_ids(engine, [row["contact_id"] for row in rows], channel)
    stopped = stop_reasons(engine, context.campaign_id, step, rows)
    held, delayed = account_holds(
        engine, campaign.account_rules, rows, utcnow(), context.campaign_id
    )
    left = left_audience(engine, campaign.audience, rows)
    reasons: Counter[str] = Counter()
    skipped, to_send = [], []
    deferred: list[tuple[dict, datetime, str]] = []
    for row in rows:
        contact_id = row["contact_id"]
        reason = skip_reason(row, contact_id in suppressed, campaign.consent_required, channel)
        reason = reason or stopped.get(contact_id) or held.get(contact_id)
        detail = None
        if not reason and contact_id in left:
            reason, detail = LEFT_AUDIENCE, left[contact_id]
        if reason:
            reasons[reason] += 1
            skipped.append(outcome_row(row, state="skipped", skip_reason=reason, last_error=detail))
            continue
        if row["contact_id"] in delayed:
            why = "someone at the account replied"
            if campaign.account_rules.on_reply == "pause":
                why += " (paused until `abm campaign resume --account`)"
            deferred.append((row, delayed[row["contact_id"]], why))
            continue
        # a message re-sent after an uncertain attempt keeps the Message-ID it went out with
        row["message_id"] = row.get("message_id") or composer.message_id(
            row["delivery_id"], row["contact_id"]
        )
        to_send.append(row)
    if step.channel == "email":
        to_send, capped = _hold_back(engine, campaign, to_send)
        deferred += capped
        limits = parse_domain_limits(composer.settings.recipient_domain_limits)
        to_send, throttled = recipient_domain_throttle(engine, limits, to_send, utcnow())
        deferred += throttled
        to_send, limited = admit(
            engine,
            send_limits(composer.settings),
            to_send,
            composer.sender.email.split("@")[1],
            own_claimed=0 if rehearsal else len(rows),
            book=not rehearsal,
        )
        deferred += limited
    return to_send, skipped, deferred, reasons


def recent_sends(
    engine: Engine, column: Any, ids: set[int], days: int
) -> dict[int, list[datetime]]:
    """Email send times per contact (or account) over the last `days`, across campaigns."""
    found: dict[int, list[datetime]] = {key: [] for key in ids}
    if not ids:
        return found
    since = utcnow() - timedelta(days=days)
    with engine.connect() as connection:
        for batch in chunked(sorted(ids), 2000):
            rows = connection.execute(
                select(column, Delivery.sent_at).where(
                    column.in_(batch),
                    Delivery.state == "sent",
                    Delivery.channel == "email",
                    Delivery.sent_at > since,
                )
            )
            for key, sent_at in rows:
                found[key].append(sent_at)
    return found


def _hold_back(
    engine: Engine, campaign: CampaignFile, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], datetime, str]]]:
    """Split rows into those that may go now and those deferred by the sending window or
    a frequency cap, with the time they may go and why. Counts include this chunk."""
    now = utcnow()
    window = campaign.sending_window
    caps = campaign.caps
    days = max((cap.days for cap in (caps.per_contact, caps.per_account) if cap), default=1)
    by_contact = recent_sends(engine, Delivery.contact_id, {r["contact_id"] for r in rows}, days)
    by_account = recent_sends(engine, Delivery.account_id, {r["account_id"] for r in rows}, days)
    ready, deferred = [], []
    for row in rows:
        if window is not None:
            zone = local_zone(
                row["timezone"], row["contact_country"] or row["country"], window.timezone
            )
            opening = next_window_opening(now, window, zone)
            if opening is not None:
                deferred.append((row, opening, f"outside sending window ({zone.key})"))
                continue
        contact_free = cap_frees_at(by_contact[row["contact_id"]], caps.per_contact, now)
        account_free = cap_frees_at(by_account[row["account_id"]], caps.per_account, now)
        if contact_free or account_free:
            which = "contact" if contact_free else "account"
            deferred.append(
                (
                    row,
                    max(t for t in (contact_free, account_free) if t),
                    f"frequency cap per {which}",
                )
            )
            continue
        by_contact[row["contact_id"]].append(now)
        by_account[row["account_id"]].append(now)
        ready.append(row)
    return ready, deferred


def recipient_domain_throttle(
    engine: Engine,
    limits: dict[str, tuple[int, timedelta]],
    rows: list[dict[str, Any]],
    now: datetime,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], datetime, str]]]:
    """Hold back what one mailbox provider would take as too much at once from us (for
    example gmail.com=500/h, ABM_RECIPIENT_DOMAIN_LIMITS): emails sent to that domain in the
    window, from every campaign, plus this chunk's. The rest wait until the oldest of them
    leaves the window."""
    wanted = {row["email"].rsplit("@", 1)[-1].lower() for row in rows} & set(limits)
    if not wanted:
        return rows, []
    sent: dict[str, list[datetime]] = {domain: [] for domain in wanted}
    with engine.connect() as connection:
        for domain in wanted:
            window = limits[domain][1]
            sent[domain] = sorted(
                connection.execute(
                    select(Delivery.sent_at)
                    .join(Contact, Contact.id == Delivery.contact_id)
                    .where(
                        Delivery.state == "sent",
                        Delivery.channel == "email",
                        Delivery.sent_at > now - window,
                        Contact.email.like(f"%@{domain}"),
                    )
                ).scalars()
            )
    ready, deferred = [], []
    for row in rows:
        domain = row["email"].rsplit("@", 1)[-1].lower()
        if domain not in wanted:
            ready.append(row)
            continue
        most, window = limits[domain]
        times = sent[domain]
        if len(times) >= most:
            hours = "hour" if window == timedelta(hours=1) else "day"
            until = times[len(times) - most] + window
            deferred.append((row, until, f"recipient domain limit ({domain}: {most} per {hours})"))
            continue
        times.append(now)
        ready.append(row)
    return ready, deferred


def defer(engine: Engine, token: str, deferred: list[tuple[dict[str, Any], datetime, str]]) -> None:
    """Back to `planned`, due when allowed; the attempt taken by the claim is given back."""
    rows = [
        {
            "_id": row["delivery_id"],
            "state": "planned",
            "due_at": until,
            "attempts": row["attempts"] - 1,
            "last_error": f"deferred: {why}",
            "updated_at": utcnow(),
        }
        for row, until, why in deferred
    ]
    record_outcomes(engine, token, rows)

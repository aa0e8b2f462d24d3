"""The delivery ledger, the spine: one row per campaign x step x contact. Planning inserts
rows once, claiming hands due rows out under a lease, and the summary counts them; nothing
else keeps a list of whom to send to."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Select,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)

from core.campaign_file import Audience, CampaignFile, Step
from models.audit import last_action
from models.db import chunked, session_scope
from models.store import (
    insert_new_from_select,
    update_rows_by_id,
)
from models.tables import (
    Account,
    Campaign,
    Contact,
    Delivery,
    utcnow,
)
from stages.content.rendering import choose_variant
from stages.targeting.audience import person_outside

RETRY_BACKOFF = timedelta(minutes=15)
LEFT_AUDIENCE = "left_audience"
MAX_ATTEMPTS = 5
CLAIMABLE = ("planned", "failed")


def register_campaign(engine: Engine, key: str, campaign: CampaignFile, source: Path) -> int:
    """The campaign's row, created on first run and renamed when the file is (only then
    is it changed: a run with nothing new must not look like an edit to the report's and
    the targets table's change stamps)."""
    with session_scope(engine) as session:
        row = session.execute(select(Campaign).where(Campaign.key == key)).scalar_one_or_none()
        if row is None:
            row = Campaign(key=key, name=campaign.name, source_path=str(source))
            session.add(row)
        elif (row.name, row.source_path) != (campaign.name, str(source)):
            row.name, row.source_path, row.updated_at = campaign.name, str(source), utcnow()
        session.flush()
        return int(row.id)  # type: ignore[arg-type]


def plan_step(
    engine: Engine,
    campaign_id: int,
    campaign_key: str,
    steps: list[Step],
    index: int,
    account_ids: list[int],
    roles: list[str] | None = None,
    limit: int | None = None,
) -> int:
    """Add `planned` rows for the people this step is now due for; returns how many.

    The first step is for every contact of the target accounts; a later step for those
    whose previous step was sent at least `wait` ago and whose account is still targeted.
    People who may not be contacted still get a row: the send-time rules skip it with a
    reason, so the summary shows who was left out and why. A/B variants are drawn here,
    once, from a stable hash, and kept in the row.

    Rows are made inside the database (INSERT ... SELECT, a batch of accounts at a time):
    a million contacts never pass through Python objects to be planned."""
    step = steps[index]
    now = utcnow()
    table = Delivery.__table__
    planned = 0
    with session_scope(engine) as session:
        budget = (
            None if limit is None else max(0, limit - _ledger_size(session, campaign_id, step.id))
        )
        for batch in chunked(account_ids, 2000):
            planned += _back_in_audience(session, campaign_id, step.id, batch, roles, now)
            if budget == 0:
                break
            candidates = _step_candidates(campaign_id, steps, index, batch, roles, now)
            if budget is not None:
                candidates = candidates.limit(budget)
            added = insert_new_from_select(
                session,
                engine,
                table,
                PLANNED_COLUMNS,
                _planned_rows(candidates, campaign_id, step, now),
                ["campaign_id", "step", "contact_id"],
            )
            planned += added
            budget = None if budget is None else budget - added
        if step.variants:
            _draw_variants(session, campaign_id, campaign_key, step, now)
    return planned


def _back_in_audience(
    session: Any,
    campaign_id: int,
    step: str,
    account_ids: Sequence[int],
    roles: list[str] | None,
    now: datetime,
) -> int:
    """Rows skipped because their person had left the audience, planned again now that the
    person is back in it: a campaign file narrowed and widened again under the same key
    sends what a fresh plan would (the send-time check still has the last word)."""
    query = (
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.step == step,
            Delivery.state == "skipped",
            Delivery.skip_reason == LEFT_AUDIENCE,
            Delivery.account_id.in_(account_ids),
        )
        .values(state="planned", skip_reason=None, last_error=None, due_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if roles:
        query = query.where(
            Delivery.contact_id.in_(select(Contact.id).where(Contact.role.in_(roles)))
        )
    return session.execute(query).rowcount or 0


def forget_rehearsal(engine: Engine, campaign_id: int, since: datetime) -> int:
    """Remove the rows a dry run planned (still `planned`, never claimed, made since it
    started), so a dry run leaves nothing a later run would treat unlike a fresh plan."""
    with session_scope(engine) as session:
        result = session.execute(
            delete(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.state == "planned",
                Delivery.attempts == 0,
                Delivery.last_error.is_(None),
                Delivery.created_at >= since,
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0


def pending_outside_audience(
    engine: Engine, campaign_id: int, audience: Audience, account_ids: list[int]
) -> int:
    """Rows waiting to be sent (planned, deferred, to retry) whose person is no longer in
    the campaign's audience: what a run says after the campaign file was edited. They are
    skipped as `left_audience` when they come due."""
    targets = set(account_ids)
    query = (
        select(Delivery.account_id, Contact.role, func.count())
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.campaign_id == campaign_id, Delivery.state.in_(CLAIMABLE))
        .group_by(Delivery.account_id, Contact.role)
    )
    with engine.connect() as connection:
        return sum(
            count
            for account_id, role, count in connection.execute(query)
            if account_id not in targets or person_outside(audience, role)
        )


PLANNED_COLUMNS = [
    "campaign_id",
    "step",
    "contact_id",
    "account_id",
    "channel",
    "state",
    "due_at",
    "attempts",
    "created_at",
    "updated_at",
]


def _step_candidates(
    campaign_id: int,
    steps: list[Step],
    index: int,
    account_ids: list[int],
    roles: list[str] | None,
    now: datetime,
) -> Select:
    """Contacts of these accounts the step is due for and who have no row for it yet."""
    step = steps[index]
    # correlated, so each contact is one lookup in the ledger's unique index (a NOT IN
    # list would be rebuilt from every row of the step for every batch of accounts)
    already = exists().where(
        Delivery.campaign_id == campaign_id,
        Delivery.step == step.id,
        Delivery.contact_id == Contact.id,
    )
    query = select(Contact.id, Contact.account_id).where(
        Contact.account_id.in_(account_ids), ~already
    )
    if roles:
        query = query.where(Contact.role.in_(roles))
    if index > 0:
        previous = exists().where(
            Delivery.campaign_id == campaign_id,
            Delivery.step == steps[index - 1].id,
            Delivery.contact_id == Contact.id,
            Delivery.state == "sent",
            Delivery.sent_at <= now - step.delay,
        )
        query = query.where(previous)
    return query.order_by(Contact.id)


def _planned_rows(candidates: Select, campaign_id: int, step: Step, now: datetime) -> Select:
    """The new ledger rows for `candidates`, in PLANNED_COLUMNS order."""
    found = candidates.subquery()
    moment = literal(now, Delivery.__table__.c.due_at.type)
    return select(
        literal(campaign_id),
        literal(step.id),
        found.c.id,
        found.c.account_id,
        literal(step.channel),
        literal("planned"),
        moment,
        literal(0),
        moment,
        moment,
    ).where(true())


def _draw_variants(
    session: Any, campaign_id: int, campaign_key: str, step: Step, now: datetime
) -> None:
    """A/B arms for the rows this planning made (variants are never redrawn later)."""
    weights = [(variant.id, variant.weight) for variant in step.variants]
    new_rows = (
        select(Delivery.id, Contact.email)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.step == step.id,
            Delivery.created_at == now,
            Delivery.variant.is_(None),
        )
    )
    rows = session.execute(new_rows).all()
    for batch in chunked(rows, 5000):
        update_rows_by_id(
            session,
            Delivery,
            [
                {
                    "_id": row_id,
                    "variant": choose_variant(weights, f"{campaign_key}:{step.id}:{email}"),
                }
                for row_id, email in batch
            ],
        )


def _ledger_size(session: Any, campaign_id: int, step: str) -> int:
    return session.execute(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.step == step)
    ).scalar_one()


def release_expired_leases(engine: Engine, campaign_id: int, requeue: bool) -> int:
    """Recover rows a crashed run held. Rows claimed but never handed to a provider
    (`rendered`) simply go back to `planned`. Rows handed over (`sending`) may or may not
    have left: they become `uncertain`, or `planned` when the backend is idempotent
    (re-sending the same Message-ID cannot deliver twice). Returns rows moved."""
    moved = 0
    expired = (Delivery.campaign_id == campaign_id, Delivery.lease_until < utcnow())
    with session_scope(engine) as session:
        for state, target, attempt_back in (
            ("rendered", "planned", 1),  # never handed over: the claim's attempt is returned
            ("sending", "planned" if requeue else "uncertain", 0),
        ):
            result = session.execute(
                update(Delivery)
                .where(*expired, Delivery.state == state)
                .values(
                    state=target,
                    claimed_by=None,
                    attempts=func.max(Delivery.attempts - attempt_back, 0)
                    if engine.dialect.name == "sqlite"
                    else func.greatest(Delivery.attempts - attempt_back, 0),
                    updated_at=utcnow(),
                )
            )
            moved += result.rowcount or 0
    return moved


def due_delivery_ids(engine: Engine, campaign_id: int, step: str) -> list[int]:
    """Ids of rows that may be sent now, oldest first."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(Delivery.id)
                .where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.step == step,
                    Delivery.state.in_(CLAIMABLE),
                    Delivery.due_at <= utcnow(),
                )
                .order_by(Delivery.id)
            ).scalars()
        )


def claim(
    engine: Engine, ids: list[int], lease: timedelta = timedelta(minutes=10)
) -> tuple[str, list[int]]:
    """Take rows for this process under a lease (state `rendered`) and commit.

    A row only becomes `sending` right before its batch goes to the provider (the send loop),
    so a crash leaves at most one batch in doubt. A lease outlives any healthy chunk; rows
    still held after it expired belong to a process that died (`release_expired_leases`)."""
    token = uuid.uuid4().hex
    now = utcnow()
    with session_scope(engine) as session:
        claimed = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.state.in_(CLAIMABLE))
            .values(
                state="rendered",
                claimed_by=token,
                lease_until=now + lease,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            .returning(Delivery.id)
        ).scalars()
        return token, sorted(claimed)


@dataclass
class ChunkOutcome:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    # `send_as: owner`: why emails went from the campaign's sender, with the accounts' ids
    default_sender: dict[str, set[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryContext:
    """Everything a chunk task needs, picklable (no engine, no secrets). The campaign is
    parsed once by the flow and travels as data, so every chunk sends what the run read."""

    database_url: str
    campaign: CampaignFile
    campaign_id: int
    campaign_key: str
    step: str


def record_outcomes(engine: Engine, token: str, updates: list[dict[str, Any]]) -> None:
    """Write outcomes for rows this claim still holds (a stolen lease is left alone)."""
    if not updates:
        return
    with session_scope(engine) as session:
        update_rows_by_id(
            session, Delivery, updates, Delivery.__table__.c.claimed_by == token, lease_until=None
        )


def outcome_row(row: dict[str, Any], **values: Any) -> dict[str, Any]:
    now = utcnow()
    base = {
        "_id": row["delivery_id"],
        "state": "sent",
        "message_id": row.get("message_id"),
        "provider_id": None,
        "last_error": None,
        "skip_reason": None,
        "sent_at": None,
        "due_at": now,
        "updated_at": now,
    }
    base.update(values)
    return base


def campaign_paused(engine: Engine, campaign_id: int) -> bool:
    """Checked before every batch: `abm campaign pause` stops sending at once."""
    with engine.connect() as connection:
        status = connection.execute(
            select(Campaign.status).where(Campaign.id == campaign_id)
        ).scalar()
    return status == "paused"


def set_campaign_status(
    engine: Engine, campaign_id: int, status: str, reason: str | None = None
) -> None:
    """Pause or resume; a pause keeps its reason in plain words (a person's pause, a wrong
    API key, a bounce rate past the threshold) for `campaign status` and the run summary."""
    with session_scope(engine) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(
                status=status,
                status_reason=reason[:1000] if reason and status == "paused" else None,
                updated_at=utcnow(),
            )
        )


def _pause(engine: Engine, campaign_id: int) -> tuple[bool, str | None]:
    """(paused?, the reason recorded with it: a rule always records one, a person not)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(Campaign.status, Campaign.status_reason).where(Campaign.id == campaign_id)
        ).first()
    if row is None or row.status != "paused":
        return False, None
    return True, row.status_reason or None


def pause_reason(engine: Engine, campaign_id: int) -> str | None:
    """Why the campaign is paused, or None when it is not: a rule's reason, or who paused
    it, where and when, as the audit log has it (a person's pause keeps no reason in the
    campaign row, since a reason there marks a pause by a rule)."""
    paused, reason = _pause(engine, campaign_id)
    if not paused:
        return None
    if reason:
        return reason
    with engine.connect() as connection:
        key = connection.execute(select(Campaign.key).where(Campaign.id == campaign_id)).scalar()
    last = last_action(engine, "campaign.pause", key or "")
    if last is None:
        return "paused by a person (in the console or with `abm campaign pause`)"
    where = "in the console" if last.via == "console" else "with `abm campaign pause`"
    return f"paused by {last.actor} {where} on {last.at:%Y-%m-%d %H:%M} UTC"


def paused_by_rule(engine: Engine, campaign_id: int) -> str | None:
    """Why a rule paused the campaign (the reputation circuit breaker, a provider's
    refusal), or None when it is active or a person paused it."""
    return _pause(engine, campaign_id)[1]


def ledger_summary(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """Counts by state and skip reason: what `campaign run/status --json` print."""
    with engine.connect() as connection:
        states = dict(
            connection.execute(
                select(Delivery.state, func.count())
                .where(Delivery.campaign_id == campaign_id)
                .group_by(Delivery.state)
            ).all()
        )
        reasons = dict(
            connection.execute(
                select(Delivery.skip_reason, func.count())
                .where(Delivery.campaign_id == campaign_id, Delivery.state == "skipped")
                .group_by(Delivery.skip_reason)
            ).all()
        )
        deferred = dict(
            connection.execute(
                select(Delivery.last_error, func.count())
                .where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.state == "planned",
                    Delivery.last_error.like("deferred:%"),
                )
                .group_by(Delivery.last_error)
            ).all()
        )
    return {
        "planned": sum(states.values()),
        "deferred": sum(deferred.values()),
        # why they wait: a cap, a sending window, the daily limit, the warm-up, the send rate
        "deferred_by_reason": {
            str(why).removeprefix("deferred:").strip(): n for why, n in sorted(deferred.items())
        },
        "sent": states.get("sent", 0),
        "skipped": states.get("skipped", 0),
        "failed": states.get("failed", 0) + states.get("dead", 0),
        "uncertain": states.get("uncertain", 0),
        "pending": sum(states.get(state, 0) for state in ("planned", "rendered", "sending")),
        "in_flight": states.get("rendered", 0) + states.get("sending", 0),
        "skipped_by_reason": {str(k): v for k, v in sorted(reasons.items())},
        "paused_because": pause_reason(engine, campaign_id),
    }


def campaign_id_for(engine: Engine, key: str) -> int:
    """The id of a campaign that has run at least once."""
    from core.errors import AbmError

    with engine.connect() as connection:
        found = connection.execute(select(Campaign.id).where(Campaign.key == key)).scalar()
    if found is None:
        raise AbmError(f"campaign {key!r} has not run yet: `abm campaign run FILE` first")
    return int(found)


# A completed run records `planned_through` this long before it started: a change whose
# timestamp was taken before the run but committed after the run read it is still newer.
PLANNED_MARGIN = timedelta(minutes=10)


def plan_fingerprint(campaign: CampaignFile, *rules: str) -> str:
    """SHA-256 of the campaign file as parsed and the fingerprints of the rules that choose
    its audience: when it changes, the next `advance-sequences` tick runs the campaign."""
    text = campaign.model_dump_json() + "|" + "|".join(rules)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mark_planned(engine: Engine, campaign_id: int, started: datetime, fingerprint: str) -> None:
    """After a complete run: everything changed before `started` (less PLANNED_MARGIN) has
    been planned with this campaign file and these rules."""
    with session_scope(engine) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(planned_through=started - PLANNED_MARGIN, plan_fingerprint=fingerprint)
        )


def _work_condition(
    campaign_id: int, campaign: CampaignFile, since: datetime, now: datetime
) -> Any:
    """SQL true when the campaign has anything to do now: rows due (or whose lease ran
    out, or uncertain ones its policy settles), a later step whose wait ended since
    `since`, or a contact or account changed since `since` (who may join its audience)."""
    own = Delivery.campaign_id == campaign_id
    due = exists().where(own, Delivery.state.in_(CLAIMABLE), Delivery.due_at <= now)
    held = exists().where(
        own, Delivery.state.in_(("rendered", "sending")), Delivery.lease_until < now
    )
    found = [due, held]
    if campaign.uncertain is not None:
        found.append(exists().where(own, Delivery.state == "uncertain"))
    for previous, step in zip(campaign.steps, campaign.steps[1:], strict=False):
        found.append(
            exists().where(
                own,
                Delivery.step == previous.id,
                Delivery.sent_at > since - step.delay,
                Delivery.sent_at <= now - step.delay,
            )
        )
    found.append(exists().where(Contact.updated_at > since))
    found.append(exists().where(Account.updated_at > since))
    return or_(*found)


def campaigns_with_work(engine: Engine, campaigns: dict[int, tuple[CampaignFile, str]]) -> set[int]:
    """Which of these active campaigns (id: parsed file, its plan fingerprint) have anything
    due or new, in one query. A campaign never completely planned, or planned with another
    file or other rules, always has."""
    now = utcnow()
    with engine.connect() as connection:
        known = {
            row.id: row
            for row in connection.execute(
                select(Campaign.id, Campaign.planned_through, Campaign.plan_fingerprint).where(
                    Campaign.id.in_(list(campaigns))
                )
            )
        }
        work = {
            campaign_id
            for campaign_id, (_, fingerprint) in campaigns.items()
            if campaign_id not in known
            or known[campaign_id].planned_through is None
            or known[campaign_id].plan_fingerprint != fingerprint
        }
        conditions = [
            and_(
                Campaign.id == campaign_id,
                _work_condition(campaign_id, campaign, known[campaign_id].planned_through, now),
            )
            for campaign_id, (campaign, _) in campaigns.items()
            if campaign_id not in work
        ]
        if conditions:
            work |= set(connection.execute(select(Campaign.id).where(or_(*conditions))).scalars())
    return work


def work_estimate(engine: Engine, campaign_id: int, since: datetime | None) -> int | None:
    """Rows due now plus contacts changed since the campaign was last completely planned:
    about how many messages this run may send. None when it was never planned (anyone)."""
    if since is None:
        return None
    now = utcnow()
    with engine.connect() as connection:
        due = connection.execute(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.state.in_(CLAIMABLE),
                Delivery.due_at <= now,
            )
        ).scalar_one()
        changed = connection.execute(
            select(func.count()).select_from(Contact).where(Contact.updated_at > since)
        ).scalar_one()
    return int(due) + int(changed)

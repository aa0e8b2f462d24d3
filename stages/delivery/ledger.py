"""Step 4 of the pipeline, deliver: the delivery ledger drives everything. Rows are planned
once (unique per campaign x step x contact), claimed in chunks, checked against the rules
that protect people at the moment of sending, sent through one backend connection, and
their outcome written back in bulk."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)

from connectors.email import EmailBackend, SendResult
from connectors.linkedin import export_rep_tasks, get_connector
from core.campaign_file import AccountRules, CampaignFile, Step, load_campaign, parse_wait
from core.settings import Settings
from core.vocabulary import STAGES
from models.db import chunked, session_scope
from models.store import (
    DriverStatement,
    dialect_insert,
    email_domain,
    insert_new_from_select,
    update_by_id,
    update_rows_by_id,
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
from stages.content.rendering import choose_variant
from stages.delivery.pacing import cap_frees_at, local_zone, next_window_opening

RETRY_BACKOFF = timedelta(minutes=15)
MAX_ATTEMPTS = 5
CLAIMABLE = ("planned", "failed")
# stop_if conditions that are engagement events (unsubscribed/bounced are contact statuses)
STOP_EVENT_TYPES = {"replied": "reply", "clicked": "click", "meeting": "meeting"}


def register_campaign(engine: Engine, key: str, campaign: CampaignFile, source: Path) -> int:
    """The campaign's row, created on first run and renamed when the file is."""
    with session_scope(engine) as session:
        row = session.execute(select(Campaign).where(Campaign.key == key)).scalar_one_or_none()
        if row is None:
            row = Campaign(key=key, name=campaign.name, source_path=str(source))
            session.add(row)
        else:
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

    A row only becomes `sending` right before its batch goes to the provider (`_hand_over`),
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


def skip_reason(contact: dict[str, Any], suppressed: bool, consent_required: bool) -> str | None:
    """Why this person must not get this message now, or None. The one place rules live."""
    if contact["status"] == "unsubscribed":
        return "unsubscribed"
    if contact["status"] == "bounced":
        return "bounced"
    if suppressed or contact["status"] == "suppressed":
        return "suppressed"
    if consent_required and contact.get("consent") not in ("opt_in", "legitimate_interest"):
        return "no_consent"
    return None


@dataclass
class ChunkOutcome:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryContext:
    """Everything a chunk task needs, small and picklable (no engine, no secrets)."""

    database_url: str
    campaign_file: str
    campaign_id: int
    campaign_key: str
    step: str


PERSON_COLUMNS = (
    Contact.id.label("contact_id"),
    Contact.email,
    Contact.first_name,
    Contact.last_name,
    Contact.title,
    Contact.seniority,
    Contact.function,
    Contact.role,
    Contact.status,
    Contact.consent,
    Contact.linkedin_url,
    Contact.timezone,
    Contact.country.label("contact_country"),
    Account.id.label("account_id"),
    Account.domain,
    Account.name.label("account_name"),
    Account.industry,
    Account.tier,
    Account.country,
    Account.employees,
    Account.stage,
)


def _load_rows(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    """Ledger rows with everything rendering and the send-time rules need, in one query."""
    query = (
        select(
            Delivery.id.label("delivery_id"),
            Delivery.step,
            Delivery.attempts,
            Delivery.variant,
            *PERSON_COLUMNS,
        )
        .join(Contact, Contact.id == Delivery.contact_id)
        .join(Account, Account.id == Delivery.account_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def _record(engine: Engine, token: str, updates: list[dict[str, Any]]) -> None:
    """Write outcomes for rows this claim still holds (a stolen lease is left alone)."""
    if not updates:
        return
    with session_scope(engine) as session:
        update_rows_by_id(
            session, Delivery, updates, Delivery.__table__.c.claimed_by == token, lease_until=None
        )


def _outcome_row(row: dict[str, Any], **values: Any) -> dict[str, Any]:
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


def _result_row(row: dict[str, Any], result: SendResult) -> dict[str, Any]:
    if result.accepted:
        return _outcome_row(row, provider_id=result.provider_id, sent_at=utcnow())
    retry = result.outcome == "retryable" and row["attempts"] < MAX_ATTEMPTS
    return _outcome_row(
        row,
        state="failed" if retry else "dead",
        last_error=(result.error or result.outcome)[:1000],
        due_at=utcnow() + RETRY_BACKOFF * row["attempts"],
    )


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
        )
        with engine.connect() as connection:
            for contact_id, kind in connection.execute(query):
                stopped.setdefault(contact_id, f"stopped_{kinds[kind]}")
    return stopped


PAUSE_RECHECK = timedelta(days=1)


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


def _check(
    engine: Engine,
    context: DeliveryContext,
    campaign: CampaignFile,
    step: Step,
    composer: Composer,
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[dict, datetime, str]], Counter]:
    """The rules that protect people, for one chunk at the moment of sending: returns the
    rows that may go now, the skipped ones (with reasons) and the deferred ones."""
    channel = "email" if step.channel == "email" else "linkedin"
    suppressed = suppressed_contact_ids(engine, [row["contact_id"] for row in rows], channel)
    stopped = stop_reasons(engine, context.campaign_id, step, rows)
    held, delayed = account_holds(
        engine, campaign.account_rules, rows, utcnow(), context.campaign_id
    )
    reasons: Counter[str] = Counter()
    skipped, to_send = [], []
    deferred: list[tuple[dict, datetime, str]] = []
    for row in rows:
        reason = skip_reason(row, row["contact_id"] in suppressed, campaign.consent_required)
        reason = reason or stopped.get(row["contact_id"]) or held.get(row["contact_id"])
        if reason:
            reasons[reason] += 1
            skipped.append(_outcome_row(row, state="skipped", skip_reason=reason))
            continue
        if row["contact_id"] in delayed:
            why = "someone at the account replied"
            if campaign.account_rules.on_reply == "pause":
                why += " (paused until `abm campaign resume --account`)"
            deferred.append((row, delayed[row["contact_id"]], why))
            continue
        row["message_id"] = composer.message_id(row["delivery_id"], row["contact_id"])
        to_send.append(row)
    if step.channel == "email":
        to_send, capped = _hold_back(engine, campaign, to_send)
        deferred += capped
    return to_send, skipped, deferred, reasons


def _step_composer(
    settings: Settings, context: DeliveryContext
) -> tuple[CampaignFile, Step, Composer]:
    """The campaign file, the chunk's step and its composer, read once per chunk."""
    _, campaign = load_campaign(Path(context.campaign_file))
    step = next(step for step in campaign.steps if step.id == context.step)
    return (
        campaign,
        step,
        Composer(settings, context.campaign_key, context.campaign_id, campaign, step),
    )


def rehearse(
    engine: Engine, settings: Settings, context: DeliveryContext, ids: list[int]
) -> ChunkOutcome:
    """A dry run of one chunk: the same checks and rendering, nothing sent, no row changed.
    `sent` counts what would be sent; render failures count as `dead`."""
    campaign, step, composer = _step_composer(settings, context)
    to_send, skipped, deferred, reasons = _check(
        engine, context, campaign, step, composer, _load_rows(engine, ids)
    )
    outcome = ChunkOutcome(
        skipped=len(skipped), deferred=len(deferred), skipped_by_reason=dict(reasons)
    )
    for row in to_send:
        try:
            composer.email(row) if step.channel == "email" else composer.linkedin_text(row)
            outcome.sent += 1
        except Exception:  # counted, like a real send would record it
            outcome.dead += 1
    return outcome


def deliver(
    engine: Engine,
    settings: Settings,
    context: DeliveryContext,
    ids: list[int],
    backend: EmailBackend,
) -> ChunkOutcome:
    """Claim, check, render, send and record one chunk of ledger rows."""
    outcome = ChunkOutcome()
    campaign, step, composer = _step_composer(settings, context)
    if campaign_paused(engine, context.campaign_id):
        return outcome
    token, claimed = claim(engine, ids, timedelta(seconds=settings.lease_seconds))
    if not claimed:
        return outcome
    try:
        return _deliver_claimed(
            engine, settings, context, backend, token, claimed, (campaign, step, composer)
        )
    except BaseException:
        _give_back_unsent(engine, token, claimed)
        raise


def _give_back_unsent(engine: Engine, token: str, claimed: list[int]) -> None:
    """After a chunk failed, rows it claimed but never handed to a provider go back to
    `planned` at once, so the task's retry (or the next run) sends them without waiting for
    the lease to expire. Rows already `sending` stay: their fate is for the lease to settle."""
    with suppress(Exception), session_scope(engine) as session:  # the database may be the fault
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(claimed),
                Delivery.claimed_by == token,
                Delivery.state == "rendered",
            )
            .values(
                state="planned",
                claimed_by=None,
                lease_until=None,
                attempts=Delivery.attempts - 1,
                updated_at=utcnow(),
            )
        )


def _deliver_claimed(
    engine: Engine,
    settings: Settings,
    context: DeliveryContext,
    backend: EmailBackend,
    token: str,
    claimed: list[int],
    prepared: tuple[CampaignFile, Step, Composer],
) -> ChunkOutcome:
    outcome = ChunkOutcome()
    campaign, step, composer = prepared
    to_send, skipped, deferred, reasons = _check(
        engine, context, campaign, step, composer, _load_rows(engine, claimed)
    )
    _record(engine, token, skipped)
    _defer(engine, token, deferred)
    outcome.skipped, outcome.deferred = len(skipped), len(deferred)
    outcome.skipped_by_reason = dict(reasons)

    if step.channel != "email":
        _hand_over(engine, token, to_send)
        results = _deliver_linkedin(settings, context, step, composer, to_send)
        _record(engine, token, results)
        _count(outcome, results)
        return outcome

    with backend, engine.connect() as connection:
        ledger = _SendLedger(connection, token, context.campaign_id)
        results: list[dict[str, Any]] = []
        for start in range(0, len(to_send), backend.batch_size):
            messages, failed = [], []
            for row in to_send[start : start + backend.batch_size]:
                try:
                    messages.append((row, composer.email(row)))
                except Exception as exc:  # a template error for one person must not stop all
                    failed.append(
                        _outcome_row(row, state="dead", last_error=f"render: {exc}"[:1000])
                    )
            handed = ledger.advance(
                results + failed, [row for row, _ in messages], islice(to_send, start, None), failed
            )
            _count(outcome, results + failed)
            results = []
            if handed is None:
                break
            messages = [(row, message) for row, message in messages if row["delivery_id"] in handed]
            sent = backend.send_messages([message for _, message in messages])
            results = [
                _result_row(row, result) for (row, _), result in zip(messages, sent, strict=True)
            ]
        ledger.advance(results, [], (), [])
        _count(outcome, results)
    return outcome


class _SendLedger:
    """The ledger writes around a chunk's sends, on one connection with statements built
    once. Before each batch, one transaction records the previous batch's outcomes and
    marks the batch `sending` unless the campaign was paused. So the window between a
    provider's answer and its commit stays one batch (one message with SMTP), at the cost
    of one commit per batch rather than three."""

    def __init__(self, connection: Connection, token: str, campaign_id: int) -> None:
        table = Delivery.__table__
        self.connection = connection
        self.token = token
        self.status = select(Campaign.status).where(Campaign.id == campaign_id)
        not_paused = ~exists().where(Campaign.id == campaign_id, Campaign.status == "paused")
        hand_over = (
            update(table)
            .where(table.c.claimed_by == token, not_paused)
            .values(state="sending", updated_at=bindparam("now"))
        )
        self.sending = hand_over.where(table.c.id.in_(bindparam("ids", expanding=True)))
        # SMTP hands over one message per transaction: these run on the driver's cursor
        dialect = connection.dialect
        self.sending_one = DriverStatement(
            hand_over.where(table.c.id == bindparam("one_id")), dialect
        )
        self.outcomes: dict[tuple[str, ...], DriverStatement] = {}

    def _record(self, rows: list[dict[str, Any]]) -> None:
        """Outcomes for rows this claim still holds (a stolen lease is left alone)."""
        columns = tuple(name for name in rows[0] if name != "_id")
        if columns not in self.outcomes:
            table = Delivery.__table__
            self.outcomes[columns] = DriverStatement(
                update_by_id(table, columns, table.c.claimed_by == self.token, lease_until=None),
                self.connection.dialect,
            )
        self.outcomes[columns].execute_many(self.connection, rows)

    def advance(
        self,
        results: list[dict[str, Any]],
        batch: list[dict[str, Any]],
        rest: Iterable[dict[str, Any]],
        failed: list[dict[str, Any]],
    ) -> set[int] | None:
        """Record `results`; then, unless the campaign was paused, hand `batch` over and
        return the ids handed over (all of them, unless another process took some after
        our lease ran out). When paused, give back the rows of `rest` (this batch and the
        ones after it, read only then) that did not fail to render, and return None."""
        with self.connection.begin():
            if results:
                self._record(results)
            ids = [row["delivery_id"] for row in batch]
            if not ids:
                return set()
            if len(ids) == 1:
                handed = self.sending_one.execute(
                    self.connection, {"one_id": ids[0], "now": utcnow()}
                )
            else:
                handed = self.connection.execute(
                    self.sending, {"ids": ids, "now": utcnow()}
                ).rowcount
            if handed == len(ids):
                return set(ids)
            if self.connection.execute(self.status).scalar_one() == "paused":
                failed_ids = {result["_id"] for result in failed}
                unsent = [row for row in rest if row["delivery_id"] not in failed_ids]
                if unsent:
                    self._record([_released(row) for row in unsent])
                return None
            ours = select(Delivery.id).where(
                Delivery.id.in_(ids), Delivery.claimed_by == self.token, Delivery.state == "sending"
            )
            return set(self.connection.execute(ours).scalars())


def campaign_paused(engine: Engine, campaign_id: int) -> bool:
    """Checked before every batch: `abm campaign pause` stops sending at once."""
    with engine.connect() as connection:
        status = connection.execute(
            select(Campaign.status).where(Campaign.id == campaign_id)
        ).scalar()
    return status == "paused"


def set_campaign_status(engine: Engine, campaign_id: int, status: str) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status=status, updated_at=utcnow())
        )


def _hand_over(engine: Engine, token: str, rows: list[dict[str, Any]]) -> None:
    """Mark a batch `sending` and commit, right before the provider call: from here until
    its outcome is recorded, a crash leaves these rows uncertain, and only these."""
    if rows:
        with session_scope(engine) as session:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_([row["delivery_id"] for row in rows]),
                    Delivery.claimed_by == token,
                )
                .values(state="sending", updated_at=utcnow())
            )


def _released(row: dict[str, Any]) -> dict[str, Any]:
    """A claimed row given back untouched (paused mid-chunk): planned again, attempt returned."""
    return {"_id": row["delivery_id"], "state": "planned", "attempts": row["attempts"] - 1}


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


def _defer(
    engine: Engine, token: str, deferred: list[tuple[dict[str, Any], datetime, str]]
) -> None:
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
    _record(engine, token, rows)


def _count(outcome: ChunkOutcome, results: list[dict[str, Any]]) -> None:
    for result in results:
        if result["state"] == "sent":
            outcome.sent += 1
        elif result["state"] == "failed":
            outcome.failed += 1
        else:
            outcome.dead += 1


def _deliver_linkedin(
    settings: Settings,
    context: DeliveryContext,
    step: Step,
    composer: Composer,
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """LinkedIn touches: rep tasks appended to a CSV (LinkedIn's API cannot message people),
    or a matched audience of hashed emails / company domains uploaded for ads."""
    if not rows:
        return []
    results: list[dict[str, Any]] = []
    if step.channel == "linkedin_task":
        tasks, done = [], []
        for row in rows:
            try:
                text = composer.linkedin_text(row)
            except Exception as exc:  # one person's bad render must not stop the others
                results.append(_outcome_row(row, state="dead", last_error=f"render: {exc}"[:1000]))
                continue
            name = " ".join(p for p in (row["first_name"], row["last_name"]) if p)
            tasks.append(
                {
                    "campaign": context.campaign_key,
                    "step": step.id,
                    "contact": row["email"],
                    "action": step.action,
                    "text": text,
                    "account_domain": row["domain"],
                    "contact_name": name,
                    "title": row["title"] or "",
                    "linkedin_url": row.get("linkedin_url") or "",
                }
            )
            done.append(row)
        path = rep_tasks_path(settings)
        export_rep_tasks(path, tasks)
        results += [_outcome_row(row, provider_id=path.name, sent_at=utcnow()) for row in done]
        return results
    name = f"{context.campaign_key}-{step.id}"
    try:
        connector = get_connector(settings)
        if step.matched_audience == "companies":
            audience = connector.upload_company_audience(name, sorted({r["domain"] for r in rows}))
        else:
            audience = connector.upload_contact_audience(name, [r["email"] for r in rows])
    except Exception as exc:
        error = f"linkedin: {type(exc).__name__}: {exc}"[:1000]
        return [_result_row(row, SendResult("", "retryable", error=error)) for row in rows]
    return [_outcome_row(row, provider_id=str(audience), sent_at=utcnow()) for row in rows]


def rep_tasks_path(settings: Settings) -> Path:
    """Where reps find their LinkedIn tasks: one CSV, appended to, never duplicated."""
    return settings.state_dir / "linkedin" / "rep-tasks.csv"


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
        deferred = connection.execute(
            select(func.count()).where(
                Delivery.campaign_id == campaign_id,
                Delivery.state == "planned",
                Delivery.last_error.like("deferred:%"),
            )
        ).scalar_one()
    return {
        "planned": sum(states.values()),
        "deferred": deferred,
        "sent": states.get("sent", 0),
        "skipped": states.get("skipped", 0),
        "failed": states.get("failed", 0) + states.get("dead", 0),
        "uncertain": states.get("uncertain", 0),
        "pending": sum(states.get(state, 0) for state in ("planned", "rendered", "sending")),
        "in_flight": states.get("rendered", 0) + states.get("sending", 0),
        "skipped_by_reason": {str(k): v for k, v in sorted(reasons.items())},
    }


def campaign_id_for(engine: Engine, key: str) -> int:
    """The id of a campaign that has run at least once."""
    from core.errors import AbmError

    with engine.connect() as connection:
        found = connection.execute(select(Campaign.id).where(Campaign.key == key)).scalar()
    if found is None:
        raise AbmError(f"campaign {key!r} has not run yet: `abm campaign run FILE` first")
    return int(found)

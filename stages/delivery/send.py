"""Step 4 of the pipeline, deliver: a chunk of claimed rows is loaded, checked against the
rules that protect people at the moment of sending, sent through one backend connection,
and its outcome written back in bulk."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import timedelta
from itertools import islice
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    exists,
    select,
    update,
)

from connectors.channels import channel_backend
from connectors.email import EmailBackend, SendResult
from core.campaign_file import CampaignFile, Step
from core.settings import Settings
from models.db import chunked, session_scope
from models.store import (
    DriverStatement,
    update_by_id,
)
from models.tables import (
    Account,
    Campaign,
    Contact,
    Delivery,
    utcnow,
)
from stages.content.compose import Composer
from stages.delivery.ledger import (
    MAX_ATTEMPTS,
    RETRY_BACKOFF,
    ChunkOutcome,
    DeliveryContext,
    campaign_paused,
    claim,
    outcome_row,
    record_outcomes,
    set_campaign_status,
)
from stages.delivery.rates import paced_batch_size, slot_ahead, wait_for
from stages.delivery.reputation import pause_if_unhealthy
from stages.delivery.send_rules import check_chunk, defer

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
    Account.owner_name,
    Account.owner_email,
    Account.owner_crm,
    Account.owner_active,
)


def _load_rows(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    """Ledger rows with everything rendering and the send-time rules need, in one query."""
    query = (
        select(
            Delivery.id.label("delivery_id"),
            Delivery.step,
            Delivery.attempts,
            Delivery.variant,
            Delivery.message_id,
            *PERSON_COLUMNS,
        )
        .join(Contact, Contact.id == Delivery.contact_id)
        .join(Account, Account.id == Delivery.account_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
        return with_account_attributes(connection, rows)


def with_account_attributes(
    connection: Connection, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows, each with its account's extra columns as `account_attributes`. Read once
    per account, not once per row: a chunk holds many people of few accounts, and each
    account's JSON is decoded once and shared by its people's rows."""
    found: dict[int, dict[str, Any]] = {}
    for batch in chunked(sorted({row["account_id"] for row in rows}), 2000):
        found.update(
            connection.execute(
                select(Account.id, Account.attributes).where(Account.id.in_(batch))
            ).all()
        )
    for row in rows:
        row["account_attributes"] = found.get(row["account_id"]) or {}
    return rows


def _result_row(row: dict[str, Any], result: SendResult) -> dict[str, Any]:
    """The ledger row for what the provider said. Only a per-recipient permanent error (or
    retries used up) makes a row `dead`; `blocked` gives the row back untouched, `uncertain`
    keeps it out of any automatic re-send."""
    if result.accepted:
        return outcome_row(row, provider_id=result.provider_id, sent_at=utcnow())
    error = (result.error or result.outcome)[:1000]
    if result.outcome == "blocked":
        return outcome_row(
            row, state="planned", attempts=row["attempts"] - 1, last_error=f"blocked: {error}"
        )
    if result.outcome == "uncertain":
        return outcome_row(row, state="uncertain", last_error=error)
    retry = result.outcome == "retryable" and row["attempts"] < MAX_ATTEMPTS
    return outcome_row(
        row,
        state="failed" if retry else "dead",
        last_error=(result.error or result.outcome)[:1000],
        due_at=utcnow() + RETRY_BACKOFF * row["attempts"],
    )


def _render_failed(row: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """A message that could not be rendered was never sent: it stays retryable (`failed`,
    its attempt given back), so fixing the template or the person's data and running again
    sends it. Never `dead`: that is for a recipient the provider refused for good."""
    return outcome_row(
        row,
        state="failed",
        attempts=row["attempts"] - 1,
        last_error=f"render: {exc}"[:1000],
        due_at=utcnow() + RETRY_BACKOFF,
    )


def store_message_ids(engine: Engine, token: str, rows: list[dict[str, Any]]) -> None:
    """Write each row's Message-ID before any of them is handed to a provider, so a message
    whose fate a crash leaves unknown can still be matched by the provider's events, found
    in a relay's log, or re-sent under the same Message-ID. One bulk write a chunk."""
    if not rows:
        return
    table = Delivery.__table__
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"), table.c.claimed_by == token)
        .values(message_id=bindparam("message_id"))
    )
    ids = [{"_id": row["delivery_id"], "message_id": row["message_id"]} for row in rows]
    with engine.begin() as connection:
        connection.execute(statement, ids)


def _step_composer(
    settings: Settings, context: DeliveryContext
) -> tuple[CampaignFile, Step, Composer]:
    """The run's campaign, the chunk's step and its composer."""
    campaign = context.campaign
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
    `sent` counts what would be sent; render failures count as `failed`, as in a real run."""
    campaign, step, composer = _step_composer(settings, context)
    to_send, skipped, deferred, reasons = check_chunk(
        engine, context, campaign, step, composer, _load_rows(engine, ids), rehearsal=True
    )
    outcome = ChunkOutcome(
        skipped=len(skipped), deferred=len(deferred), skipped_by_reason=dict(reasons)
    )
    compose = _composer_for(context, step, composer)
    for row in to_send:
        try:
            compose(row)
            outcome.sent += 1
            _count_default_sender(outcome, composer, [row])
        except Exception:  # counted, like a real send would record it
            outcome.failed += 1
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
    pause_if_unhealthy(engine, settings, context.campaign_id)  # the reputation circuit breaker
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


def _composer_for(
    context: DeliveryContext, step: Step, composer: Composer
) -> Callable[[dict[str, Any]], Any]:
    """What one ledger row becomes on the step's channel: an email, a rep task, or the
    email or domain a matched audience is made of."""
    if step.channel == "email":
        return composer.email
    if step.channel == "linkedin_audience":
        return (
            (lambda row: row["domain"])
            if step.matched_audience == "companies"
            else (lambda row: row["email"])
        )

    def rep_task(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "campaign": context.campaign_key,
            "step": step.id,
            "contact": row["email"],
            "action": step.action,
            "text": composer.linkedin_text(row),
            "account_domain": row["domain"],
            "contact_name": " ".join(p for p in (row["first_name"], row["last_name"]) if p),
            "title": row["title"] or "",
            "linkedin_url": row.get("linkedin_url") or "",
            "owner": rep_task_owner(row),
        }

    return rep_task


def rep_task_owner(row: dict[str, Any]) -> str:
    """Who a rep task is routed to: the account's CRM owner by email when `abm crm pull`
    found one, else the `owner` column of accounts.csv, else blank."""
    owner = row.get("owner_email") or (row.get("account_attributes") or {}).get("owner")
    return str(owner or "")


def _count_default_sender(
    outcome: ChunkOutcome, composer: Composer, rows: Iterable[dict[str, Any]]
) -> None:
    """For a `send_as: owner` campaign, the accounts whose emails went from the campaign's
    sender, by why: nothing falls back silently."""
    if composer.campaign.send_as != "owner" or composer.step.channel != "email":
        return
    for row in rows:
        reason = composer.sender_for(row)[1]
        if reason is not None:
            outcome.default_sender.setdefault(reason, set()).add(row["account_id"])


def default_sender_counts(outcomes: Iterable[ChunkOutcome]) -> dict[str, int]:
    """Accounts sent from the default sender in a run, by reason (an account counted once
    per reason across chunks and steps)."""
    found: dict[str, set[int]] = {}
    for outcome in outcomes:
        for reason, accounts in outcome.default_sender.items():
            found.setdefault(reason, set()).update(accounts)
    return {reason: len(ids) for reason, ids in sorted(found.items())}


def default_sender_text(counts: dict[str, int]) -> str | None:
    """`12 accounts sent from the default sender: no CRM owner (8), owner at another
    domain (4)`, or None when every account was sent as its owner."""
    if not counts:
        return None
    total = sum(counts.values())
    reasons = ", ".join(f"{reason} ({n})" for reason, n in counts.items())
    noun = "account" if total == 1 else "accounts"
    return f"{total} {noun} sent from the default sender: {reasons}"


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
    to_send, skipped, deferred, reasons = check_chunk(
        engine, context, campaign, step, composer, _load_rows(engine, claimed)
    )
    record_outcomes(engine, token, skipped)
    defer(engine, token, deferred)
    outcome.skipped, outcome.deferred = len(skipped), len(deferred)
    outcome.skipped_by_reason = dict(reasons)
    store_message_ids(engine, token, to_send)

    compose = _composer_for(context, step, composer)
    backend = channel_backend(
        settings, step.channel, backend, f"{context.campaign_key}-{step.id}", step.matched_audience
    )
    with backend, engine.connect() as connection:
        ledger = _SendLedger(connection, token, context.campaign_id)
        results: list[dict[str, Any]] = []
        size = paced_batch_size(
            backend.batch_size, settings.send_rate_per_second if step.channel == "email" else None
        )
        for start in range(0, len(to_send), size):
            messages, failed = [], []
            for row in to_send[start : start + size]:
                try:
                    messages.append((row, compose(row)))
                except Exception as exc:  # a template error for one person must not stop all
                    failed.append(_render_failed(row, exc))
            if (slot := slot_ahead([row for row, _ in messages])) is not None:
                ledger.advance(results, [], (), [])  # outcomes in before waiting for the slot
                _count(outcome, results)
                results = []
                wait_for(slot)
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
            _count_default_sender(
                outcome,
                composer,
                (row for (row, _), result in zip(messages, sent, strict=True) if result.accepted),
            )
            blocked = next((r for r in sent if r.outcome == "blocked"), None)
            if blocked is not None:  # the next advance sees the pause and gives the rest back
                pause_blocked(engine, context.campaign_id, backend.name, blocked.error)
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

    def record_outcomes(self, rows: list[dict[str, Any]]) -> None:
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
                self.record_outcomes(results)
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
                    self.record_outcomes([_released(row) for row in unsent])
                return None
            ours = select(Delivery.id).where(
                Delivery.id.in_(ids), Delivery.claimed_by == self.token, Delivery.state == "sending"
            )
            return set(self.connection.execute(ours).scalars())


def _released(row: dict[str, Any]) -> dict[str, Any]:
    """A claimed row given back untouched (paused mid-chunk): planned again, attempt returned."""
    return {"_id": row["delivery_id"], "state": "planned", "attempts": row["attempts"] - 1}


def pause_blocked(engine: Engine, campaign_id: int, backend: str, error: str | None) -> None:
    """Stop every chunk of the campaign: the provider refused us, not a recipient (a wrong
    key, an unverified sender), so every later message would fail the same way."""
    set_campaign_status(
        engine,
        campaign_id,
        "paused",
        f"{backend} refused to send: {error or 'configuration error'}. Nothing was lost: the "
        "messages stay planned. Fix it, then `abm campaign resume FILE`.",
    )


def _count(outcome: ChunkOutcome, results: list[dict[str, Any]]) -> None:
    for result in results:
        if result["state"] == "sent":
            outcome.sent += 1
        elif result["state"] in ("failed", "planned", "uncertain"):
            outcome.failed += 1
        else:
            outcome.dead += 1

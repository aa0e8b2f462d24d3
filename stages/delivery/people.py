"""Who is where in a campaign, and why: each ledger row as a person, a step, a state and
the reason in plain words. `abm campaign status` counts the rows; this names them, so an
operator can answer "why did Ana get nothing?" without reading the database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, case, func, or_, select

from core.vocabulary import PERSON_STATES
from models.tables import Account, Contact, Delivery
from stages.report.text import skip_reason_text

DEFERRED = "deferred:"
# States whose row still has a next attempt at `due_at`.
WAITING = frozenset({"planned", "deferred", "failed"})
UNCERTAIN = (
    "a crash left unknown whether it went out; it counts as sent once the provider's events "
    "name its Message-ID, or when `abm campaign resolve` settles it"
)


def person_state(state: str, last_error: str | None) -> str:
    """The ledger state as `abm campaign people` shows it (see `PERSON_STATES`)."""
    if state == "planned" and last_error and last_error.startswith(DEFERRED):
        return "deferred"
    if state in ("rendered", "sending"):
        return "sending"
    return state


def reason_text(state: str, skip_reason: str | None, last_error: str | None) -> str | None:
    """Why a row is in its state, in plain words; None where the state says it all."""
    if state == "skipped":
        text = skip_reason_text(skip_reason or "unknown")
        return f"{text}: {last_error}" if last_error else text
    if state == "deferred":
        return (last_error or "").removeprefix(DEFERRED).strip()
    if state in ("failed", "dead"):
        return last_error
    if state == "uncertain":
        return UNCERTAIN
    if state == "sending":
        return "being sent now"
    return None


def person_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One ledger row, joined to its person and account, as `campaign people` lists it."""
    state = person_state(row["state"], row["last_error"])
    name = " ".join(part for part in (row["first_name"], row["last_name"]) if part)
    return {
        "email": row["email"],
        "name": name or None,
        "account_domain": row["account_domain"],
        "step": row["step"],
        "channel": row["channel"],
        "variant": row["variant"],
        "state": state,
        "due_at": row["due_at"] if state in WAITING else None,
        "sent_at": row["sent_at"],
        "reason": reason_text(state, row["skip_reason"], row["last_error"]),
        "skip_reason": row["skip_reason"],
    }


def _state_test(state: str) -> ColumnElement[bool]:
    deferred = Delivery.last_error.like(f"{DEFERRED}%")
    if state == "deferred":
        return and_(Delivery.state == "planned", deferred)
    if state == "planned":
        return and_(Delivery.state == "planned", or_(Delivery.last_error.is_(None), ~deferred))
    if state == "sending":
        return Delivery.state.in_(("rendered", "sending"))
    return Delivery.state == state


def _filtered(query: Select, campaign_id: int, state: str | None, domain: str | None) -> Select:
    if state is not None and state not in PERSON_STATES:
        raise ValueError(f"state {state!r}: use one of {', '.join(PERSON_STATES)}")
    query = (
        query.join(Contact, Contact.id == Delivery.contact_id)
        .join(Account, Account.id == Delivery.account_id)
        .where(Delivery.campaign_id == campaign_id)
    )
    if state is not None:
        query = query.where(_state_test(state))
    if domain is not None:
        query = query.where(Account.domain == domain)
    return query


def count_people(
    engine: Engine, campaign_id: int, state: str | None = None, domain: str | None = None
) -> int:
    """How many rows `campaign_people` would list without a limit."""
    query = _filtered(select(func.count()).select_from(Delivery), campaign_id, state, domain)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def campaign_people(
    engine: Engine,
    campaign_id: int,
    steps: Sequence[str],
    state: str | None = None,
    domain: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[dict[str, Any]]:
    """Each person and step of a campaign, by account, then person, then the order of
    `steps` (the campaign file's; steps no longer in it last). Streamed from the database a
    few hundred rows at a time, so a campaign of a million people lists in little memory."""
    query = _filtered(
        select(
            Contact.email,
            Contact.first_name,
            Contact.last_name,
            Account.domain.label("account_domain"),
            Delivery.step,
            Delivery.channel,
            Delivery.variant,
            Delivery.state,
            Delivery.skip_reason,
            Delivery.last_error,
            Delivery.due_at,
            Delivery.sent_at,
        ).select_from(Delivery),
        campaign_id,
        state,
        domain,
    )
    order = [Account.domain, Contact.email]
    if steps:
        order.append(
            case(
                {step: index for index, step in enumerate(steps)},
                value=Delivery.step,
                else_=len(steps),
            )
        )
    query = query.order_by(*order, Delivery.step).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=500).execute(query).mappings()
        for row in result:
            yield person_row(row)

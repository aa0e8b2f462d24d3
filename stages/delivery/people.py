"""Who is where in a campaign, and why: each ledger row as a person, a step, a state and
the reason in plain words. `abm campaign status` counts the rows; this names them, so an
operator can answer "why did Ana get nothing?" without reading the database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, case, func, literal, or_, select, tuple_

from core.vocabulary import PERSON_STATES
from models.tables import Account, Contact, Delivery
from stages.report.text import skip_reason_text

DEFERRED = "deferred:"
# Up to this many rows, a page of people sorts them all (milliseconds); above, it finds
# its accounts first (`_page_accounts`), which in turn would walk every account for a
# small campaign or a rare state.
SORTED_WHOLE = 5000
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
        "delivery_id": row["delivery_id"],
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


def _filtered(
    query: Select,
    campaign_id: int,
    state: str | None,
    domain: str | None,
    accounts: ColumnElement[bool] | None = None,
) -> Select:
    """The campaign's rows in `state`, at `domain`, or of the `accounts` (a condition on
    `Delivery.account_id`) only: then read by each account's own index, the (campaign,
    state) index kept out of it with `+ 0` (through it, a page's few accounts would cost a
    scan of the whole campaign's rows)."""
    if state is not None and state not in PERSON_STATES:
        raise ValueError(f"state {state!r}: use one of {', '.join(PERSON_STATES)}")
    if accounts is None:
        query = query.where(Delivery.campaign_id == campaign_id)
    else:
        query = query.where(accounts, Delivery.campaign_id + 0 == campaign_id)
    if state is not None:
        query = query.where(_state_test(state))
    if domain is not None:
        # the account's id, not a join: a count then reads the ledger's index alone
        account = select(Account.id).where(Account.domain == domain).scalar_subquery()
        query = query.where(Delivery.account_id == account)
    return query


def _joined(query: Select) -> Select:
    return query.join(Contact, Contact.id == Delivery.contact_id).join(
        Account, Account.id == Delivery.account_id
    )


def count_people(
    engine: Engine, campaign_id: int, state: str | None = None, domain: str | None = None
) -> int:
    """How many rows `campaign_people` would list without a limit."""
    query = _filtered(select(func.count()).select_from(Delivery), campaign_id, state, domain)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _order(steps: Sequence[str]) -> list[ColumnElement[Any]]:
    """By account, then person, then the order of `steps` (steps no longer in it last):
    unique within a campaign, so it can serve as a page's bookmark."""
    order: list[ColumnElement[Any]] = [Account.domain, Contact.email]
    if steps:
        order.append(
            case(
                {step: index for index, step in enumerate(steps)},
                value=Delivery.step,
                else_=len(steps),
            )
        )
    return [*order, Delivery.step]


def campaign_people(
    engine: Engine,
    campaign_id: int,
    steps: Sequence[str],
    state: str | None = None,
    domain: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    after: int | None = None,
    before: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Each person and step of a campaign, by account, then person, then the order of
    `steps` (the campaign file's; steps no longer in it last). Streamed from the database a
    few hundred rows at a time, so a campaign of a million people lists in little memory.

    `after` (or `before`) is the `delivery_id` of a row listed before: the rows just after
    (or just before) it, in the same order. A page found this way costs the same deep in
    the ledger as at its start, where an `offset` sorts every row before it. The row need not
    match the filters (its state may have changed since); an id not in the campaign (a
    rehearsal's rows are deleted) raises LookupError."""
    order = _order(steps)
    mark_id = after if after is not None else before
    found = _bookmark(engine, campaign_id, order, mark_id)
    if mark_id is not None and found is None:
        raise LookupError(f"no ledger row {mark_id} in this campaign to list from")
    backwards = found is not None and after is None
    accounts: ColumnElement[bool] | None = None
    if (
        limit is not None
        and not offset
        and domain is None
        and count_people(engine, campaign_id, state) > SORTED_WHOLE
    ):
        # the page's accounts first, down the account index: then only their rows are
        # sorted, not the whole campaign's (a tenth of a second at 100,000 rows, every page)
        # from a bookmark, its own account may have no rows left on this side of it: one
        # account more, or a page of one-row accounts comes up a row short and ends the list
        start = None if found is None else found[0]
        wanted = limit if found is None else limit + 1
        page = _page_accounts(engine, campaign_id, state, start, backwards, wanted)
        accounts = Delivery.account_id.in_(page)
    query = _joined(
        _filtered(
            select(
                Delivery.id.label("delivery_id"),
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
            accounts,
        )
    )
    if found is not None:
        mark = tuple_(*(literal(value) for value in found))
        query = query.where(tuple_(*order) < mark if backwards else tuple_(*order) > mark)
    query = query.order_by(*(key.desc() for key in order) if backwards else order)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        if limit is None:  # streamed; a page is read at once (PostgreSQL plans a cursor
            # for its first rows, which here is a scan of the whole campaign)
            connection = connection.execution_options(yield_per=500)
        result = connection.execute(query).mappings()
        if backwards:  # a page's worth, read in reverse and put back in order
            yield from reversed([person_row(row) for row in result])
            return
        for row in result:
            yield person_row(row)


def _bookmark(
    engine: Engine, campaign_id: int, order: list[ColumnElement[Any]], delivery_id: int | None
) -> tuple[Any, ...] | None:
    """The ordering values of one ledger row of the campaign (None: not in it)."""
    if delivery_id is None:
        return None
    query = _joined(
        select(*order)
        .select_from(Delivery)
        .where(Delivery.id == delivery_id, Delivery.campaign_id == campaign_id)
    )
    with engine.connect() as connection:
        found = connection.execute(query).first()
    return None if found is None else tuple(found)


def _page_accounts(
    engine: Engine,
    campaign_id: int,
    state: str | None,
    start: str | None,
    backwards: bool,
    limit: int,
) -> list[int]:
    """The first `limit` accounts (by domain, from `start` on, or back from it) with rows
    of the campaign in `state`: a page of `limit` rows holds no rows of other accounts.
    Read down the account domain index, each account's rows checked by its own index, so
    it stops as soon as it has enough."""
    rows = _filtered(
        select(Delivery.id), campaign_id, state, None, Delivery.account_id == Account.id
    )
    query = select(Account.id).where(rows.exists())
    if start is not None:
        query = query.where(Account.domain <= start if backwards else Account.domain >= start)
    query = query.order_by(Account.domain.desc() if backwards else Account.domain).limit(limit)
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())

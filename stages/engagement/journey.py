"""Journey stages set by people (`abm accounts set-stage`), by imports (a `stage` column
in accounts.csv) and by the CRM (`abm crm pull`: its deals' stages), beside the ones the
engagement rollup moves. Every change is kept in the
stage history with its source and reason, and only a real change is kept.

A stage set here stands: the rollup moves such an account on only on engagement after the
change (see `rollup.evidence_for_stage`), so setting an account back is not undone by the
events that had moved it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from core.errors import AbmError
from core.vocabulary import parse_stage
from models.db import chunked, session_scope
from models.store import update_rows_by_id
from models.tables import Account, StageChange, utcnow

SOURCES = ("person", "import", "crm")
# who outranks whom: precedence person > crm > import (> the engagement rollup, which only
# counts events after any of these changes: rollup.evidence_for_stage)
OUTRANKS: dict[str, tuple[str, ...]] = {"import": ("person", "crm")}
REASON_LENGTH = 500  # StageChange.reason


@dataclass(frozen=True)
class WantedStage:
    """A stage someone asks for an account, and why."""

    stage: str
    reason: str


def stage_moves(
    current: Mapping[int, str],
    wanted: Mapping[int, WantedStage],
    source: str,
    now: datetime,
    last_set: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The stage history rows for the accounts whose stage really changes.

    `last_set` holds the stage this source last set per account: asking for it again changes
    nothing, so importing the same file again does not move back an account that has moved
    on since."""
    last_set = last_set or {}
    return [
        {
            "account_id": account_id,
            "from_stage": current[account_id],
            "to_stage": want.stage,
            "reason": want.reason,
            "source": source,
            "changed_at": now,
        }
        for account_id, want in wanted.items()
        if account_id in current
        and want.stage != current[account_id]
        and want.stage != last_set.get(account_id)
    ]


def set_stages(
    engine: Engine,
    wanted: Mapping[str, WantedStage],
    source: str,
    *,
    once: bool = False,
    kept: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Set accounts' stages by domain and record each change; returns the changes made.

    With `once`, a stage this source already set for an account is not set again (imports:
    see `stage_moves`). Unknown domains are left out; the caller checks them. `kept`: see
    `set_stages_in`."""
    with session_scope(engine) as session:
        return set_stages_in(session, wanted, source, utcnow(), once=once, kept=kept)


def set_stages_in(
    session: Any,
    wanted: Mapping[str, WantedStage],
    source: str,
    now: datetime,
    *,
    once: bool = False,
    kept: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """`set_stages` inside the caller's transaction (a CRM pull stores a page's stage
    changes with its cursor). The accounts' rows are locked first, in id order.

    An import yields to a person and to the CRM (precedence person > crm > import): an
    account whose latest change by any of the three came from a person or the CRM keeps
    its stage, and (domain, source that set it) goes into `kept`."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    above = OUTRANKS.get(source, ())
    made: list[dict[str, Any]] = []
    for batch in chunked(sorted(wanted), 2000):
        rows = session.execute(
            select(Account.id, Account.domain, Account.stage)
            .where(Account.domain.in_(batch))
            .order_by(Account.id)
            .with_for_update(key_share=True)
        ).all()
        current = {account_id: stage for account_id, _, stage in rows}
        by_id = {account_id: wanted[domain] for account_id, domain, _ in rows}
        if above:
            latest = _latest_change(session, (source, *above), list(current))
            for account_id, domain, _ in rows:
                who = latest.get(account_id, ("", ""))[0]
                if who in above:
                    del by_id[account_id]
                    if kept is not None:
                        kept.append((domain, who))
        last_set = (
            {a: stage for a, (_, stage) in _latest_change(session, [source], list(current)).items()}
            if once
            else {}
        )
        moves = stage_moves(current, by_id, source, now, last_set)
        update_rows_by_id(
            session,
            Account,
            [{"_id": m["account_id"], "stage": m["to_stage"]} for m in moves],
            updated_at=now,
        )
        if moves:
            session.execute(StageChange.__table__.insert(), moves)
        made += moves
    return made


def _latest_change(
    session: Any, sources: Sequence[str], account_ids: list[int]
) -> dict[int, tuple[str, str]]:
    """The latest stage change by any of `sources`, per account: (its source, the stage)."""
    latest = (
        select(StageChange.account_id, func.max(StageChange.id).label("id"))
        .where(StageChange.source.in_(sources), StageChange.account_id.in_(account_ids))
        .group_by(StageChange.account_id)
        .subquery()
    )
    rows = session.execute(
        select(StageChange.account_id, StageChange.source, StageChange.to_stage).join(
            latest, latest.c.id == StageChange.id
        )
    )
    return {account_id: (source, stage) for account_id, source, stage in rows}


def set_stage(
    engine: Engine, domain: str, stage: str, reason: str, source: str = "person"
) -> tuple[str, str] | None:
    """Set one account's stage by hand; (from, to), or None when it was at that stage.
    An unknown domain or stage, or a blank reason, is an AbmError saying so."""
    try:
        stage = parse_stage(stage)
    except ValueError as exc:
        raise AbmError(str(exc)) from None
    reason = reason.strip()
    if not reason:
        raise AbmError("the reason for the change must not be blank")
    if len(reason) > REASON_LENGTH:
        raise AbmError(f"the reason must be at most {REASON_LENGTH} characters")
    key = domain.strip().lower()
    with engine.connect() as connection:
        known = connection.execute(select(Account.id).where(Account.domain == key)).scalar()
    if known is None:
        raise AbmError(f"no account with domain {domain!r}")
    moves = set_stages(engine, {key: WantedStage(stage, reason)}, source)
    return (moves[0]["from_stage"], moves[0]["to_stage"]) if moves else None


def stage_history(engine: Engine, account_id: int) -> list[dict[str, Any]]:
    """Every stage change of an account, oldest first, with its source and reason."""
    with engine.connect() as connection:
        return [
            dict(row)
            for row in connection.execute(
                select(
                    StageChange.from_stage,
                    StageChange.to_stage,
                    StageChange.source,
                    StageChange.reason,
                    StageChange.changed_at,
                )
                .where(StageChange.account_id == account_id)
                .order_by(StageChange.changed_at, StageChange.id)
            ).mappings()
        ]

"""Who a campaign is for, asked the same way twice: when the run picks its target accounts,
and again for every message at the moment it leaves. An account that changed tier or stage,
a filter that no longer holds, a person whose role is no longer wanted, or a campaign file
narrowed under the same key: each is caught when the message would go, not only at planning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, literal_column, select

from core.campaign_file import Audience
from core.field_test import FieldTest
from core.intent import IntentFilter, IntentSignal, matching_signal
from models.db import chunked
from models.tables import Account, EngagementEvent, utcnow
from stages.targeting.scoring import SCORED_FIELDS, matches

# What deciding membership reads of an account: the filters may test any scored field,
# a technology or an extra column.
AUDIENCE_COLUMNS = (
    *(getattr(Account, name) for name in SCORED_FIELDS),
    Account.technologies,
    Account.attributes,
    Account.tier,
    Account.stage,
)


def describe_filter(test: FieldTest) -> str:
    """A filter as the campaign file wrote it, for a reason a person reads."""
    for name, label in (
        ("in_", "in"),
        ("not_in", "not in"),
        ("between", "between"),
        ("at_least", "at least"),
        ("below", "below"),
        ("any_of", "any of"),
        ("none_of", "none of"),
    ):
        value = getattr(test, name)
        if value is not None:
            shown = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else value
            return f"{test.field} {label} {shown}"
    return f"{test.field} present"


def account_outside(
    audience: Audience, account: Mapping[str, Any], now: datetime | None = None
) -> str | None:
    """Why an account is not in the audience at `now` (tier, stage, a filter or its intent
    signals, `account["intent"]`), or None."""
    tier = account.get("tier")
    if tier not in audience.tiers:
        shown = "none" if tier is None else str(tier)
        return f"tier {shown} is not among the audience's tiers {list(audience.tiers)}"
    if audience.stages and account.get("stage") not in audience.stages:
        return (
            f"stage {account.get('stage')} is not among the audience's stages "
            f"{', '.join(audience.stages)}"
        )
    for test in audience.icp:
        if not matches(test, account):
            return f"the audience filter '{describe_filter(test)}' no longer holds"
    if audience.intent is not None:
        signals = account.get("intent") or ()
        if matching_signal(audience.intent, signals, now or utcnow()) is None:
            return f"no {audience.intent.describe()}"
    return None


def person_outside(audience: Audience, role: str | None) -> str | None:
    """Why a person of a targeted account is not in the audience (their role), or None."""
    if audience.roles and role not in audience.roles:
        shown = role or "unknown"
        return f"role {shown} is not among the audience's roles {', '.join(audience.roles)}"
    return None


# Written as a literal, not a bound value, so that the database uses the index that holds
# intent events alone (`ix_event_intent_account_time`, a partial index).
_INTENT = literal_column("'intent'")


def intent_signals(
    connection: Connection,
    condition: IntentFilter,
    now: datetime,
    account_ids: list[int] | None = None,
) -> dict[int, list[IntentSignal]]:
    """The intent signals recent enough for `condition` at `now`, by account: of these
    accounts, or of every account."""
    event = EngagementEvent
    query = select(event.account_id, event.occurred_at, event.data, event.provider).where(
        event.type == _INTENT,
        event.occurred_at >= now - condition.window,
        event.account_id.is_not(None),
    )
    batches = (
        [query]
        if account_ids is None
        else [query.where(event.account_id.in_(batch)) for batch in chunked(account_ids, 2000)]
    )
    found: dict[int, list[IntentSignal]] = {}
    for batch in batches:
        for account_id, at, data, provider in connection.execute(batch):
            data = data or {}
            signal = IntentSignal(
                str(data.get("topic", "")), float(data.get("score") or 0), at, provider
            )
            found.setdefault(account_id, []).append(signal)
    return found


def _audience_accounts(
    engine: Engine, audience: Audience, ids: Iterable[int] | None, now: datetime
) -> Any:
    """Account rows with what membership reads: these ids, or every account that could be in
    the audience (tiers and stages narrow in SQL; the same test then runs on each row). With
    an intent filter each row also holds its recent signals (`intent`)."""
    query = select(*AUDIENCE_COLUMNS).where(Account.tier.in_(list(audience.tiers)))
    if audience.stages:
        query = query.where(Account.stage.in_(list(audience.stages)))
    wanted = None if ids is None else sorted(set(ids))
    with engine.connect() as connection:
        signals = None
        if audience.intent is not None:
            signals = intent_signals(connection, audience.intent, now, wanted)
        if wanted is None:
            rows = connection.execute(query.order_by(Account.id)).mappings()
        else:
            rows = (
                row
                for batch in chunked(wanted, 2000)
                for row in connection.execute(
                    select(*AUDIENCE_COLUMNS).where(Account.id.in_(batch))
                ).mappings()
            )
        for row in rows:
            yield row if signals is None else {**row, "intent": signals.get(row["id"], ())}


def target_account_ids(engine: Engine, audience: Audience) -> list[int]:
    """Ids of the accounts in the audience now, in id order."""
    now = utcnow()
    return [
        row["id"]
        for row in _audience_accounts(engine, audience, None, now)
        if account_outside(audience, row, now) is None
    ]


def accounts_outside(
    engine: Engine, audience: Audience, account_ids: Iterable[int]
) -> dict[int, str]:
    """Of these accounts, those no longer in the audience, with why (the send-time check)."""
    now = utcnow()
    found: dict[int, str] = {}
    for row in _audience_accounts(engine, audience, account_ids, now):
        reason = account_outside(audience, row, now)
        if reason is not None:
            found[row["id"]] = reason
    return found

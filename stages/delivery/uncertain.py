"""Ending `uncertain`: a message handed to a provider when a crash hit may or may not have
left. Its Message-ID was stored before the hand-over, so it can be settled: by the
provider's events naming it (`reconcile`), by a relay's log that names it, by the operator
(`abm campaign resolve`), or by the campaign file's `uncertain:` policy. Re-sending keeps
the same Message-ID, so receivers that de-duplicate by Message-ID drop a second copy."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update

from core.campaign_file import UncertainPolicy
from models.db import chunked, session_scope
from models.tables import Account, Contact, Delivery, utcnow

Action = Literal["resend", "mark_sent"]

# `<local@domain>` as RFC 5322 writes a Message-ID, wherever a log line puts it: Postfix
# `message-id=<...>`, Sendmail `msgid=<...>`, Exim's `id=...` after `<=`, or one a line.
_MESSAGE_ID = re.compile(r"<[^<>\s@]{1,200}@[^<>\s@]{1,200}>")
_EXIM_ID = re.compile(r"\bid=([^<>\s@]{1,200}@[^<>\s@]{1,200})")
RESENT = "resend: sent again under the same Message-ID after an uncertain attempt"


@dataclass
class Settled:
    """What one settlement did; `left` is what stays uncertain in the selection."""

    marked_sent: int = 0
    resent: int = 0
    left: int = 0


@dataclass(frozen=True)
class Selection:
    """Which uncertain messages of a campaign an operator means: all, one person's, one
    account's, or those uncertain for longer than `older_than`."""

    campaign_id: int
    email: str | None = None
    domain: str | None = None
    older_than: timedelta | None = None

    def where(self, now: datetime) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = [
            Delivery.campaign_id == self.campaign_id,
            Delivery.state == "uncertain",
        ]
        if self.email:
            conditions.append(
                Delivery.contact_id.in_(
                    select(Contact.id).where(Contact.email == self.email.strip().lower())
                )
            )
        if self.domain:
            conditions.append(
                Delivery.account_id.in_(
                    select(Account.id).where(Account.domain == self.domain.strip().lower())
                )
            )
        if self.older_than is not None:
            conditions.append(Delivery.updated_at <= now - self.older_than)
        return and_(*conditions)


def message_ids_in(lines: Iterable[str]) -> set[str]:
    """Every Message-ID a mail relay's log (or a plain list, one a line) names."""
    found: set[str] = set()
    for line in lines:
        found.update(_MESSAGE_ID.findall(line))
        found.update(f"<{bare}>" for bare in _EXIM_ID.findall(line))
    return found


def mark_sent_by_message_id(
    engine: Engine, message_ids: Iterable[str], because: str, campaign_id: int | None = None
) -> int:
    """Uncertain messages whose Message-ID someone who saw them leave names (a provider's
    event, a relay's log) become `sent`. So do rows still `sending` under a lease that ran
    out (their run died, and nothing has released them yet). Returns rows changed."""
    now = utcnow()
    left_in_doubt = or_(
        Delivery.state == "uncertain",
        and_(Delivery.state == "sending", Delivery.lease_until < now),
    )
    changed = 0
    with session_scope(engine) as session:
        for batch in chunked(sorted(set(message_ids)), 2000):
            statement = update(Delivery).where(Delivery.message_id.in_(batch), left_in_doubt)
            if campaign_id is not None:
                statement = statement.where(Delivery.campaign_id == campaign_id)
            result = session.execute(
                statement.values(
                    state="sent",
                    sent_at=_sent_at(now),
                    claimed_by=None,
                    lease_until=None,
                    updated_at=now,
                    last_error=because[:1000],
                )
            )
            changed += result.rowcount or 0
    return changed


def settle(engine: Engine, selection: Selection, action: Action, because: str) -> int:
    """Settle every uncertain message in `selection` the same way: `resend` puts it back
    as due now, under its stored Message-ID and without using an attempt; `mark_sent`
    counts it as sent. Returns rows changed."""
    now = utcnow()
    values: dict[str, Any] = (
        {"state": "planned", "due_at": now, "last_error": f"{RESENT} ({because})"[:1000]}
        if action == "resend"
        else {"state": "sent", "sent_at": _sent_at(now), "last_error": because}
    )
    with session_scope(engine) as session:
        result = session.execute(
            update(Delivery)
            .where(selection.where(now))
            .values(**values, claimed_by=None, lease_until=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0


def _sent_at(now: datetime) -> Any:
    """A sent time already known is kept; else now, when we learnt it."""
    return func.coalesce(Delivery.sent_at, now)


def count_uncertain(engine: Engine, selection: Selection) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(Delivery).where(selection.where(utcnow()))
        ).scalar_one()


def apply_policy(engine: Engine, campaign_id: int, policy: UncertainPolicy | None) -> int:
    """The campaign file's `uncertain:` rule, for what has stayed uncertain long enough."""
    if policy is None:
        return 0
    selection = Selection(campaign_id, older_than=policy.wait)
    return settle(
        engine, selection, policy.then, f"the campaign's uncertain policy ({policy.after})"
    )

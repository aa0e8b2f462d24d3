"""Push to the CRM every account whose tier, ICP score, engagement score or stage differs
from what was last pushed to it, whatever changed it: a campaign run, a webhook, the nightly
rescore, an import, a stage set by hand. Comparing with the `crmpush` table instead of
hooking each of those paths means none can be forgotten, and an account the CRM failed is
simply still different at the next push, so it is retried without any bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, and_, case, func, or_, select

from connectors.crm import WriteBackResult
from connectors.http import ApiError
from core.domains import domain_or_none
from models.store import dialect_insert
from models.tables import Account, CrmPush, utcnow

# Accounts read, written to the CRM and recorded at a time: a crash loses at most one
# batch's records (those accounts are pushed again, which is harmless).
PUSH_BATCH = 1000
PUSHED = ("tier", "icp_score", "engagement_score", "stage")


class Crm(Protocol):
    """What a push needs of a CRM connector (`connectors.crm.HubSpotCrm` is one)."""

    name: str

    def ensure_properties(self) -> list[str]: ...

    def write_back(self, accounts: list[dict]) -> WriteBackResult: ...


@dataclass
class PushReport:
    """Companies updated and created, accounts unchanged since their last push, and why each
    failed account failed (by domain; retried at the next push)."""

    updated: int = 0
    created: int = 0
    unchanged: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """How many changed accounts were not pushed."""
        return len(self.failures)

    def counts(self) -> dict[str, int]:
        """The integer counts, as the CLI's JSON and the flows report them."""
        return {
            "updated": self.updated,
            "created": self.created,
            "failed": self.failed,
            "unchanged": self.unchanged,
        }


def _last_push(crm: str) -> Any:
    return and_(CrmPush.account_id == Account.id, CrmPush.crm == crm)


def _changed() -> Any:
    """Never pushed, or a pushed value differs (NULL-safe: a cleared tier is a change)."""
    return or_(
        CrmPush.account_id.is_(None),
        *(getattr(Account, name).is_distinct_from(getattr(CrmPush, name)) for name in PUSHED),
    )


def count_changed(engine: Engine, crm: str) -> tuple[int, int]:
    """(accounts to push, accounts unchanged since their last push to `crm`)."""
    query = select(func.count(), func.sum(case((_changed(), 1), else_=0))).select_from(
        Account.__table__.outerjoin(CrmPush.__table__, _last_push(crm))
    )
    with engine.connect() as connection:
        total, changed = connection.execute(query).one()
    return int(changed or 0), int(total) - int(changed or 0)


def changed_accounts(engine: Engine, crm: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The next `limit` accounts to push, by id after `after` (keyset paging, so a failed
    account is not read again in the same push)."""
    query = (
        select(Account.id, Account.domain, Account.name, *(getattr(Account, n) for n in PUSHED))
        .outerjoin(CrmPush, _last_push(crm))
        .where(Account.id > after, _changed())
        .order_by(Account.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def pushed_rows(
    accounts: Iterable[Mapping[str, Any]], failures: Mapping[str, str], crm: str, at: datetime
) -> list[dict[str, Any]]:
    """The `crmpush` rows for the accounts the CRM took: those with a web domain that has
    no failure (failures are keyed by normalised domain)."""
    rows = []
    for account in accounts:
        domain = domain_or_none(account["domain"] or "")
        if domain is None or domain in failures:
            continue
        values = {name: account[name] for name in PUSHED}
        rows.append({"crm": crm, "account_id": account["id"], **values, "pushed_at": at})
    return rows


def record_pushed(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Upsert what was pushed, one executemany for the batch."""
    if not rows:
        return
    table = CrmPush.__table__
    insert = dialect_insert(engine, table)
    statement = insert.on_conflict_do_update(
        index_elements=["crm", "account_id"],
        set_={name: insert.excluded[name] for name in (*PUSHED, "pushed_at")},
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)


def _properties_problem(crm: Crm) -> str | None:
    """Make sure the CRM has our properties; why nothing can be sent if it could not say."""
    try:
        crm.ensure_properties()
    except ApiError as exc:
        return f"the CRM's properties could not be checked ({exc})"
    return None


def push_changed(
    engine: Engine,
    crm: Crm,
    batch_size: int = PUSH_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Push every changed account in batches and record those the CRM took.

    Nothing changed: no request at all. Once the CRM is unavailable after its retries, the
    remaining accounts are reported as not sent, without further requests (so a flow
    carries on and the next push tries them). An auth error
    (`ConfigError`) propagates: the batch it interrupted is not recorded. `progress` gets
    (accounts handled, accounts to push)."""
    to_push, unchanged = count_changed(engine, crm.name)
    report = PushReport(unchanged=unchanged)
    if not to_push:
        return report
    stopped = _properties_problem(crm)
    after, handled = 0, 0
    while batch := changed_accounts(engine, crm.name, after, batch_size):
        after = batch[-1]["id"]
        if stopped:
            report.failures.update({a["domain"]: f"not sent: {stopped}" for a in batch})
        else:
            result = crm.write_back(batch)
            report.updated += result.updated
            report.created += result.created
            report.failures.update(result.failures)
            record_pushed(engine, pushed_rows(batch, result.failures, crm.name, utcnow()))
            stopped = result.stopped
        handled += len(batch)
        if progress is not None:
            progress(handled, max(to_push, handled))
    return report

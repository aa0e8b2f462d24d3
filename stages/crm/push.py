"""Push to the CRM every account whose pushed values differ from what was last pushed to it,
whatever changed them: a campaign run, a webhook, the nightly rescore, an import, a stage set
by hand, a contact who joined or left the buying committee. Comparing with the `crmpush`
table instead of hooking each of those paths means none can be forgotten, and an account the
CRM failed is simply still different at the next push, so it is retried without any
bookkeeping.

What is pushed (the CRM field mapping in the README): tier, ICP score, a one-line summary of
the ICP reasons, engagement score, stage, and the buying committee's coverage and gaps.
Coverage comes from contacts, not from the account row, so the diff cannot be one SQL
comparison of two rows: each push reads every account in keyset batches with its last push
(one join), counts the batch's committee roles (one grouped query on the indexed
`contact.account_id`), and compares in Python. At 100,000 accounts and 1,000,000 contacts
that is a few seconds on SQLite (bench figure in the module `bench.crm_push` notes), and
exact: no trigger or cached column can go stale."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select

from connectors.crm.base import CrmBackend
from connectors.http import ApiError
from core.campaign_file import Audience
from core.domains import domain_or_none
from models.store import dialect_insert
from models.tables import Account, Contact, CrmPush, utcnow
from stages.committee.coverage import coverage

# Compared with `crmpush` and sent, in this order (besides `domain` and `name`).
PUSHED = (
    "tier",
    "icp_score",
    "icp_summary",
    "engagement_score",
    "stage",
    "coverage",
    "gaps",
)
# The committee roles the CRM's coverage counts. A CRM record is not any one campaign's, so
# it uses the roles a campaign requires when its file names none (`audience.required_roles`:
# who signs, approves, specifies and reviews), from the campaign schema, not a second list.
CRM_REQUIRED_ROLES: tuple[str, ...] = tuple(Audience().required_roles)
ICP_SUMMARY_MAX = 500  # the `crmpush.icp_summary` column, and a CRM text field shown in a list
CUT_MARKER = " …"


@dataclass
class PushReport:
    """Records updated and created, accounts unchanged since their last push, requests made
    and why each failed account failed (by domain; retried at the next push)."""

    updated: int = 0
    created: int = 0
    unchanged: int = 0
    requests: int = 0
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
            "requests": self.requests,
        }


def icp_summary(reasons: Iterable[str] | None) -> str:
    """The ICP reasons as one line ("+25 industry=Software; -10 employees<50"), at most
    ICP_SUMMARY_MAX characters, cut at a reason boundary where one fits, with a marker."""
    line = "; ".join(" ".join(str(reason).split()) for reason in reasons or () if reason)
    if len(line) <= ICP_SUMMARY_MAX:
        return line
    room = ICP_SUMMARY_MAX - len(CUT_MARKER)
    cut = line[:room]
    boundary = cut.rfind("; ")
    return (cut[:boundary] if boundary > 0 else cut.rstrip()) + CUT_MARKER


def coverage_fields(
    roles_present: Iterable[str | None], required: Sequence[str] = CRM_REQUIRED_ROLES
) -> tuple[str, str]:
    """(coverage, gaps) as the CRM shows them: `3 of 4: decision_maker, approver, specifier`
    and `reviewer` (comma separated; "" when none is missing)."""
    found = coverage(roles_present, required)
    total = len(found.covered) + len(found.gaps)
    line = f"{len(found.covered)} of {total}"
    if found.covered:
        line += ": " + ", ".join(found.covered)
    return line, ", ".join(found.gaps)


def committee_roles(
    engine: Engine, account_ids: Sequence[int], required: Sequence[str] = CRM_REQUIRED_ROLES
) -> dict[int, set[str]]:
    """The required roles each account has a reachable (active) contact in: one grouped
    query for a batch of consecutive account ids. It selects by the id range only, so the
    database reads `contact.account_id`'s index; with `status = 'active'` in the query
    SQLite picks the status index and reads every contact, per batch (0.23 s against
    0.015 s a batch of 1,000 at 1,000,000 contacts). Status and role are filtered here."""
    found: dict[int, set[str]] = {account_id: set() for account_id in account_ids}
    if not found:
        return found
    query = (
        select(Contact.account_id, Contact.role, Contact.status)
        .where(Contact.account_id.between(min(found), max(found)))
        .group_by(Contact.account_id, Contact.role, Contact.status)
    )
    wanted = set(required)
    with engine.connect() as connection:
        for account_id, role, status in connection.execute(query):
            if status == "active" and role in wanted and account_id in found:
                found[account_id].add(role)
    return found


def _account_batch(engine: Engine, crm: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The next `limit` accounts by id after `after`, each with what was last pushed to `crm`
    (`last`, None when never) and the CRM's id of its record (keyset paging: a failed
    account is not read again in the same push)."""
    last = and_(CrmPush.account_id == Account.id, CrmPush.crm == crm)
    query = (
        select(
            Account.id,
            Account.domain,
            Account.name,
            Account.tier,
            Account.icp_score,
            Account.icp_reasons,
            Account.engagement_score,
            Account.stage,
            CrmPush.pushed_at,
            CrmPush.crm_id,
            *(getattr(CrmPush, name).label(f"last_{name}") for name in PUSHED),
        )
        .outerjoin(CrmPush, last)
        .where(Account.id > after)
        .order_by(Account.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def with_pushed_values(
    rows: list[dict[str, Any]], roles: Mapping[int, set[str]]
) -> list[dict[str, Any]]:
    """Each account as the CRM gets it: its own values plus the summary, coverage and gaps
    worked out from its ICP reasons and its contacts' roles."""
    accounts = []
    for row in rows:
        cover, gaps = coverage_fields(roles.get(row["id"], ()))
        accounts.append(
            {
                "id": row["id"],
                "domain": row["domain"],
                "name": row["name"],
                "tier": row["tier"],
                "icp_score": row["icp_score"],
                "icp_summary": icp_summary(row["icp_reasons"]),
                "engagement_score": row["engagement_score"],
                "stage": row["stage"],
                "coverage": cover,
                "gaps": gaps,
            }
        )
    return accounts


def is_changed(account: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Never pushed, or a pushed value differs from the last push (None is a value: a
    cleared tier is a change)."""
    if row["pushed_at"] is None:
        return True
    return any(account[name] != row[f"last_{name}"] for name in PUSHED)


def pushed_rows(
    accounts: Iterable[Mapping[str, Any]],
    failures: Mapping[str, str],
    crm_ids: Mapping[str, str],
    crm: str,
    at: datetime,
) -> list[dict[str, Any]]:
    """The `crmpush` rows for the accounts the CRM took: those with a web domain that has
    no failure (failures and ids are keyed by normalised domain). A record id the CRM did
    not return keeps the one known before."""
    rows = []
    for account in accounts:
        domain = domain_or_none(account["domain"] or "")
        if domain is None or domain in failures:
            continue
        values = {name: account[name] for name in PUSHED}
        crm_id = crm_ids.get(domain) or account.get("crm_id")
        rows.append(
            {"crm": crm, "account_id": account["id"], **values, "crm_id": crm_id, "pushed_at": at}
        )
    return rows


def record_pushed(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Upsert what was pushed, one executemany for the batch."""
    if not rows:
        return
    table = CrmPush.__table__
    insert = dialect_insert(engine, table)
    statement = insert.on_conflict_do_update(
        index_elements=["crm", "account_id"],
        set_={
            **{name: insert.excluded[name] for name in (*PUSHED, "pushed_at")},
            "crm_id": func.coalesce(insert.excluded.crm_id, table.c.crm_id),
        },
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)


def _fields_problem(crm: CrmBackend) -> str | None:
    """Make sure the CRM has our fields; why nothing can be sent if it could not say."""
    try:
        crm.ensure_fields()
    except ApiError as exc:
        return f"the CRM's fields could not be checked ({exc})"
    return None


def _account_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Account)).scalar_one())


def push_changed(
    engine: Engine,
    crm: CrmBackend,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Push every changed account in batches and record those the CRM took, with the id of
    its record, which later pushes hand back to the CRM (`known_ids`: no search).

    Nothing changed: no request at all (the CRM's fields are checked only before the first
    account sent). Once the CRM is unavailable after its retries, the remaining changed
    accounts are reported as not sent, without further requests (so a flow carries on and
    the next push tries them). An auth error (`CrmAuthError`, a `ConfigError`) propagates:
    the batch it interrupted is not recorded. `progress` gets (accounts compared, accounts)."""
    batch_size = batch_size or crm.accounts_per_call
    report = PushReport()
    total = _account_count(engine) if progress is not None else 0
    checked: bool = False
    stopped: str | None = None
    after, handled = 0, 0
    while rows := _account_batch(engine, crm.name, after, batch_size):
        after = rows[-1]["id"]
        roles = committee_roles(engine, [row["id"] for row in rows])
        accounts = with_pushed_values(rows, roles)
        batch = []
        for account, row in zip(accounts, rows, strict=True):
            if is_changed(account, row):
                batch.append({**account, "crm_id": row["crm_id"]})
        report.unchanged += len(rows) - len(batch)
        if batch and not checked:
            stopped, checked = _fields_problem(crm), True
        if batch and stopped:
            report.failures.update({a["domain"]: f"not sent: {stopped}" for a in batch})
        elif batch:
            known = {a["domain"]: a["crm_id"] for a in batch if a["crm_id"]}
            sent = [{key: a[key] for key in ("domain", "name", *PUSHED)} for a in batch]
            result = crm.push_accounts(sent, known)
            report.updated += result.updated
            report.created += result.created
            report.requests += result.requests
            report.failures.update(result.failures)
            record_pushed(
                engine, pushed_rows(batch, result.failures, result.crm_ids, crm.name, utcnow())
            )
            stopped = result.stopped
        handled += len(rows)
        if progress is not None:
            progress(handled, max(total, handled))
    return report

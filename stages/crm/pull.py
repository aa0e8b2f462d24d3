"""Read back from the CRM what sales keeps there, and apply it here: account owners, deals
(and through them the account's stage), meetings booked with our people.

Each kind (accounts, deals, meetings) has its own cursor in `synccursor`
(`crm:<crm>:<kind>`). The backend yields pages in modification order; each page's changes
AND its cursor are stored in one transaction, so a pull that fails half-way (an expired
token: `CrmAuthError`; the CRM unavailable after every retry) keeps every page applied
before it, with its cursor, and the next pull goes on from there. Records are matched to
our accounts by normalised domain; a domain we do not have is counted and reported, never
created.

What a record changes:
- an account record sets the account's owner (name, email, which CRM), or clears it when
  the CRM has none, and remembers the CRM's id of the record for later pushes;
- a deal is kept in `crmdeal` with the stage the stage table maps it to
  (`stages/crm/stage_map.py`); the account's stage the CRM says is the furthest over all
  its deals (customer beyond opportunity), and when all map to nothing the stage is left;
- a meeting becomes one `meeting` engagement event (once, however often it is pulled), so
  stop rules (`stop_if: [meeting]`), account rules and the rollup see it; a canceled or
  no-show meeting is no meeting and is skipped with that reason.

Conflict rules, precedence person > CRM > import > engagement rollup:
- A stage a person set (`abm accounts set-stage`) after the CRM record's last modification
  stands: the CRM's stage is not applied, and the summary says "kept: set by a person on
  DATE". A CRM record modified after the person's change is applied: it is newer news.
- The CRM's stage is applied over stages set by imports and by the rollup (forward or back:
  the CRM is where sales keeps the truth about deals).
- The rollup never moves an account back, and after a change by a person, an import or the
  CRM it counts only events after that change (`rollup.evidence_for_stage`), so the
  engagement that was already weighed cannot undo it.
- Every change is in the stage history with its source (`person`, `import`, `crm`,
  `engagement`) and its reason, such as "HubSpot deal 'Acme renewal' is closedwon"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select

from connectors.crm.base import (
    PULL_KINDS,
    CrmAccount,
    CrmBackend,
    CrmDeal,
    CrmMeeting,
    PullKind,
    PullPage,
)
from core.domains import domain_or_none, show
from models.cursors import read_cursor, store_cursor
from models.db import chunked, session_scope
from models.store import dialect_insert, update_rows_by_id
from models.tables import Account, Contact, CrmPush, EngagementEvent, StageChange, utcnow
from models.tables import CrmDeal as CrmDealRow
from stages.crm.stage_map import StageTable, furthest, load_stage_table, map_deal
from stages.engagement.journey import WantedStage, set_stages_in
from stages.engagement.rollup import (
    EngagementRules,
    load_engagement_rules,
    rollup_in,
    store_events_in,
)

CRM_LABELS = {"hubspot": "HubSpot", "salesforce": "Salesforce", "sandbox": "Sandbox CRM"}
NOT_MEETINGS = {"CANCELED", "CANCELLED", "NO_SHOW"}
SHOWN = 50  # lines of each list the report keeps (the counts are exact)

Progress = Callable[[PullKind, int, PullPage], None]


def cursor_source(crm: str, kind: str) -> str:
    """The `synccursor` row of one kind of one CRM."""
    return f"crm:{crm}:{kind}"


@dataclass
class PullReport:
    """What one pull read and changed, and everything it did not use, with why."""

    crm: str
    pages: dict[str, int] = field(default_factory=dict)
    cursors: dict[str, str | None] = field(default_factory=dict)
    accounts_read: int = 0
    owners_set: int = 0
    owners_cleared: int = 0
    deals_read: int = 0
    stages_moved: int = 0
    meetings_read: int = 0
    meetings_stored: int = 0
    unknown_domains: Counter[str] = field(default_factory=Counter)
    moves: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # meetings stored earlier, since canceled or missed: their events removed
    withdrawn: list[str] = field(default_factory=list)
    # accounts whose deals now all say nothing (lost): their stage is left as it was
    unmapped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts the CLI prints and the flows return."""
        return {
            "accounts_read": self.accounts_read,
            "owners_set": self.owners_set,
            "owners_cleared": self.owners_cleared,
            "deals_read": self.deals_read,
            "stages_moved": self.stages_moved,
            "kept": len(self.kept),
            "meetings_read": self.meetings_read,
            "meetings_stored": self.meetings_stored,
            "unknown_domains": len(self.unknown_domains),
            "skipped": len(self.skipped),
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, lists cut to their first SHOWN lines (counts stay exact)."""
        return {
            "crm": self.crm,
            **self.counts(),
            "pages": self.pages,
            "cursors": self.cursors,
            "moves": self.moves[:SHOWN],
            "kept_by_precedence": self.kept[:SHOWN],
            "meetings_withdrawn": self.withdrawn[:SHOWN],
            "deals_say_nothing": self.unmapped[:SHOWN],
            "unknown": dict(self.unknown_domains.most_common(SHOWN)),
            "skipped_records": self.skipped[:SHOWN],
            "warnings": self.warnings[:SHOWN],
            "notes": self.notes,
        }

    def _warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)


@dataclass(frozen=True)
class _Context:
    engine: Engine
    crm: str
    table: StageTable
    rules: EngagementRules
    now: datetime


def pull_crm(
    engine: Engine,
    crm: CrmBackend,
    kinds: Sequence[PullKind] = PULL_KINDS,
    *,
    stage_table: StageTable | None = None,
    rules: EngagementRules | None = None,
    progress: Progress | None = None,
    full: bool = False,
) -> PullReport:
    """Pull each kind since its cursor and apply it, a page and its cursor per transaction.

    `rules` are the engagement rules the meetings are rolled up with (the default file
    when None), `stage_table` the deal stage table. `progress` gets (kind, page number,
    page) after each page is stored. `full` reads from the beginning whatever the cursors
    say: records of accounts imported since they were first pulled then count (applying
    a record again changes nothing). Errors propagate; what was stored stays stored."""
    report = PullReport(crm.name)
    context = _Context(
        engine,
        crm.name,
        stage_table or load_stage_table(),
        rules or load_engagement_rules(),
        utcnow(),
    )
    for kind in kinds:
        source = cursor_source(crm.name, kind)
        cursor = None if full else read_cursor(engine, source)
        report.cursors[kind] = cursor
        report.pages[kind] = 0
        for page in crm.pull_changes(kind, cursor):
            with session_scope(engine) as session:
                _apply(session, context, page, report)
                store_cursor(session, engine, source, page.cursor)
            report.pages[kind] += 1
            report.cursors[kind] = page.cursor
            report.skipped += page.skipped
            if progress is not None:
                progress(kind, report.pages[kind], page)
    report.notes += crm.pull_notes()
    return report


def _apply(session: Any, context: _Context, page: PullPage, report: PullReport) -> None:
    records = page.records
    if page.kind == "accounts":
        accounts = [r for r in records if isinstance(r, CrmAccount)]
        _apply_accounts(session, context, accounts, report)
    elif page.kind == "deals":
        _apply_deals(session, context, [r for r in records if isinstance(r, CrmDeal)], report)
    else:
        meetings = [r for r in records if isinstance(r, CrmMeeting)]
        _apply_meetings(session, context, meetings, report)


def _accounts_by_domain(session: Any, domains: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Our accounts with these (normalised) domains: id, stage and owner columns."""
    found: dict[str, dict[str, Any]] = {}
    for batch in chunked(sorted(set(domains)), 2000):
        for row in session.execute(
            select(
                Account.id,
                Account.domain,
                Account.stage,
                Account.owner_name,
                Account.owner_email,
                Account.owner_crm,
                Account.owner_active,
            ).where(Account.domain.in_(batch))
        ).mappings():
            found[row["domain"]] = dict(row)
    return found


def _accounts_by_id(session: Any, ids: list[int]) -> list[dict[str, Any]]:
    """Our accounts with these ids, as `_accounts_by_domain` gives them, by id."""
    found: list[dict[str, Any]] = []
    for batch in chunked(ids, 2000):
        found += [
            dict(row)
            for row in session.execute(
                select(Account.id, Account.domain, Account.stage)
                .where(Account.id.in_(batch))
                .order_by(Account.id)
            ).mappings()
        ]
    return found


def _domains(raw: Iterable[str | None]) -> list[str]:
    """The web domains among raw values, normalised, in order, each once."""
    seen: dict[str, None] = {}
    for value in raw:
        domain = domain_or_none(value or "")
        if domain is not None:
            seen.setdefault(domain, None)
    return list(seen)


def _apply_accounts(
    session: Any, context: _Context, records: list[CrmAccount], report: PullReport
) -> None:
    """Owners onto the accounts, and the CRM's record ids into `crmpush`."""
    report.accounts_read += len(records)
    ours = _accounts_by_domain(session, _domains(r.domain for r in records))
    owners: dict[int, dict[str, Any]] = {}
    ids: dict[int, str] = {}
    for record in records:
        domain = domain_or_none(record.domain or "")
        if domain is None:
            report.skipped.append(
                f"{context.crm} account {record.crm_id}: no web domain "
                f"({show(record.domain or 'blank')}), so it matches none of ours"
            )
            continue
        account = ours.get(domain)
        if account is None:
            report.unknown_domains[domain] += 1
            continue
        owner = record.owner
        values = {
            "owner_name": owner.name if owner else None,
            "owner_email": owner.email.strip().lower() if owner and owner.email else None,
            "owner_crm": context.crm if owner else None,
            "owner_active": owner.active if owner else None,
        }
        ids[account["id"]] = record.crm_id
        if any(account[name] != value for name, value in values.items()):
            owners[account["id"]] = {"_id": account["id"], **values}
            account.update(values)  # a later record of the page compares with this one
    for row in owners.values():
        if row["owner_crm"] is None:
            report.owners_cleared += 1
        else:
            report.owners_set += 1
    update_rows_by_id(session, Account, list(owners.values()), updated_at=context.now)
    _remember_ids(session, context, ids)


def _remember_ids(session: Any, context: _Context, ids: dict[int, str]) -> None:
    """The CRM's record id per account in `crmpush`; a new row has no pushed values, so the
    next push still sends the account."""
    if not ids:
        return
    insert = dialect_insert(context.engine, CrmPush.__table__)
    statement = insert.on_conflict_do_update(
        index_elements=["crm", "account_id"], set_={"crm_id": insert.excluded.crm_id}
    )
    now = context.now
    rows = [
        {"crm": context.crm, "account_id": key, "crm_id": value, "pushed_at": now}
        for key, value in ids.items()
    ]
    session.execute(statement, rows)


def _apply_deals(
    session: Any, context: _Context, records: list[CrmDeal], report: PullReport
) -> None:
    """Store the deals, then move each touched account to the stage its deals say."""
    report.deals_read += len(records)
    ours = _accounts_by_domain(session, _domains(d for r in records for d in r.domains))
    rows: dict[str, dict[str, Any]] = {}
    for deal in records:
        domains = _domains(deal.domains)
        known = [domain for domain in domains if domain in ours]
        if not domains:
            report.skipped.append(
                f"{context.crm} deal {deal.crm_id} ({show(deal.name or 'no name')}): "
                "no company with a web domain"
            )
            continue
        for domain in domains:
            if domain not in ours:
                report.unknown_domains[domain] += 1
        if not known:
            continue
        mapped = map_deal(context.table, context.crm, deal)
        if mapped.warning:
            report._warn(mapped.warning)
        for domain in known:  # a deal of several of our accounts counts for each
            account_id = ours[domain]["id"]
            rows[(deal.crm_id, account_id)] = {
                "crm": context.crm,
                "crm_id": deal.crm_id,
                "account_id": account_id,
                "name": deal.name,
                "crm_stage": deal.stage,
                "pipeline": deal.pipeline,
                "closed": deal.closed,
                "won": deal.won,
                "amount": deal.amount,
                "maps_to": mapped.maps_to,
                "modified_at": deal.modified_at,
                "pulled_at": context.now,
            }
    if not rows:
        return
    table = CrmDealRow.__table__
    deal_ids = sorted({deal_id for deal_id, _ in rows})
    # a deal moved to another company no longer counts for the one it left
    left = session.execute(
        select(table.c.crm_id, table.c.account_id).where(
            table.c.crm == context.crm, table.c.crm_id.in_(deal_ids)
        )
    ).all()
    gone = [
        (deal_id, account_id) for deal_id, account_id in left if (deal_id, account_id) not in rows
    ]
    for deal_id, account_id in gone:
        session.execute(
            table.delete().where(
                table.c.crm == context.crm,
                table.c.crm_id == deal_id,
                table.c.account_id == account_id,
            )
        )
    insert = dialect_insert(context.engine, table)
    columns = [n for n in next(iter(rows.values())) if n not in ("crm", "crm_id", "account_id")]
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["crm", "crm_id", "account_id"],
            set_={name: insert.excluded[name] for name in columns},
            # two pulls at once: an older record never overwrites a newer one
            where=table.c.modified_at <= insert.excluded.modified_at,
        ),
        list(rows.values()),
    )
    touched = {account_id for _, account_id in rows} | {a for _, a in gone}
    accounts = _accounts_by_id(session, sorted(touched))
    _move_stages(session, context, accounts, report)


def _move_stages(
    session: Any, context: _Context, accounts: list[dict[str, Any]], report: PullReport
) -> None:
    """Each account to the furthest stage over all its deals, unless a person's later
    change stands."""
    ids = [account["id"] for account in accounts]
    deals: dict[int, list[Any]] = {}
    for row in session.execute(
        select(
            CrmDealRow.account_id,
            CrmDealRow.name,
            CrmDealRow.crm_stage,
            CrmDealRow.maps_to,
            CrmDealRow.modified_at,
        ).where(CrmDealRow.crm == context.crm, CrmDealRow.account_id.in_(ids))
    ):
        deals.setdefault(row.account_id, []).append(row)
    by_person = dict(
        session.execute(
            select(StageChange.account_id, func.max(StageChange.changed_at))
            .where(and_(StageChange.account_id.in_(ids), StageChange.source == "person"))
            .group_by(StageChange.account_id)
        ).all()
    )
    label = CRM_LABELS.get(context.crm, context.crm)
    wanted: dict[str, WantedStage] = {}
    for account in accounts:
        own = deals.get(account["id"], [])
        stage = furthest([deal.maps_to for deal in own])
        if not own:  # touched, and no deal left: its deals moved to another company
            report.unmapped.append(
                f"{account['domain']}: no {label} deal is linked to it any more; the stage "
                f"stays {account['stage']}: set it with `abm accounts set-stage` if the account "
                "is out of play"
            )
        elif stage is None:
            latest = max(own, key=lambda d: d.modified_at)
            report.unmapped.append(
                f"{account['domain']}: no {label} deal says a stage now (latest: "
                f"{show(latest.name or 'without a name', 80)!r} is "
                f"{show(latest.crm_stage, 80)}); the stage stays {account['stage']}: set it "
                "with `abm accounts set-stage` if the account is out of play"
            )
        if stage is None or stage == account["stage"]:
            continue
        deciding = max((d for d in own if d.maps_to == stage), key=lambda d: d.modified_at)
        name = show(deciding.name or "without a name", 80)
        reason = f"{label} deal {name!r} is {show(deciding.crm_stage, 80)}"
        person_at = by_person.get(account["id"])
        if person_at is not None and person_at > deciding.modified_at:
            report.kept.append(
                f"{account['domain']}: kept {account['stage']}: set by a person on "
                f"{person_at:%Y-%m-%d %H:%M}, after the CRM's change ({reason}, modified "
                f"{deciding.modified_at:%Y-%m-%d %H:%M}; it says {stage})"
            )
            continue
        wanted[account["domain"]] = WantedStage(stage, reason)
    moves = set_stages_in(session, wanted, "crm", context.now)
    domains = {account["id"]: account["domain"] for account in accounts}
    for move in moves:
        report.moves.append(
            f"{domains[move['account_id']]}: {move['from_stage']} -> {move['to_stage']} "
            f"({move['reason']})"
        )
    report.stages_moved += len(moves)


def _apply_meetings(
    session: Any, context: _Context, records: list[CrmMeeting], report: PullReport
) -> None:
    """One `meeting` event per meeting held or booked, stored once, rolled up with the
    engagement rules in the same transaction."""
    report.meetings_read += len(records)
    emails = sorted({email.strip().lower() for r in records for email in r.attendee_emails})
    people: dict[str, tuple[int, int | None]] = {}
    for batch in chunked(emails, 2000):
        for email, contact_id, account_id in session.execute(
            select(Contact.email, Contact.id, Contact.account_id).where(Contact.email.in_(batch))
        ):
            people[email] = (contact_id, account_id)
    ours = _accounts_by_domain(session, _domains(d for r in records for d in r.domains))
    events = []
    withdrawn: dict[str, str] = {}
    for meeting in records:
        what = f"{context.crm} meeting {meeting.crm_id} ({show(meeting.title or 'no title')})"
        if meeting.outcome and meeting.outcome.upper() in NOT_MEETINGS:
            report.skipped.append(f"{what}: {meeting.outcome.upper()}, so not a meeting")
            withdrawn[f"meeting:{meeting.crm_id}"] = f"{what}: {meeting.outcome.upper()}"
            continue
        if meeting.start_at is None:
            report.skipped.append(f"{what}: no start time")
            continue
        attendees = [e.strip().lower() for e in meeting.attendee_emails]
        attendee = next((people[e] for e in attendees if e in people), None)
        account_id = attendee[1] if attendee else None
        if account_id is None:
            known = [d for d in _domains(meeting.domains) if d in ours]
            account_id = ours[known[0]]["id"] if known else None
        if account_id is None and attendee is None:
            domains = _domains(meeting.domains) or _domains(
                e.rpartition("@")[2] for e in meeting.attendee_emails
            )
            if not domains:
                report.skipped.append(f"{what}: no attendee or company with a web domain")
            for domain in domains:
                report.unknown_domains[domain] += 1
            continue
        events.append(
            {
                "provider": context.crm,
                "provider_event_id": f"meeting:{meeting.crm_id}",
                "type": "meeting",
                "channel": "crm",
                "occurred_at": meeting.start_at,
                "account_id": account_id,
                "contact_id": attendee[0] if attendee else None,
                "data": {"title": meeting.title, "outcome": meeting.outcome},
            }
        )
    moved = _withdraw_meetings(session, context, withdrawn, report)
    moved |= _reschedule_meetings(session, context, events)
    report.meetings_stored += store_events_in(
        session, context.engine, events, context.rules, context.now
    )
    if moved:
        rollup_in(session, moved, context.rules, context.now)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _withdraw_meetings(
    session: Any, context: _Context, withdrawn: dict[str, str], report: PullReport
) -> set[int]:
    """Remove the events of meetings stored earlier and since canceled or missed: a meeting
    that did not happen neither stops a sequence nor counts. The accounts to roll up again."""
    if not withdrawn:
        return set()
    table = EngagementEvent.__table__
    gone = session.execute(
        table.delete()
        .where(
            table.c.provider == context.crm,
            table.c.provider_event_id.in_(list(withdrawn)),
        )
        .returning(table.c.provider_event_id, table.c.account_id)
    ).all()
    for event_id, _ in gone:
        report.withdrawn.append(f"{withdrawn[event_id]}: its meeting event was removed")
    return {account_id for _, account_id in gone if account_id is not None}


def _reschedule_meetings(session: Any, context: _Context, events: list[dict[str, Any]]) -> set[int]:
    """Move the events of meetings stored earlier whose start time changed; the accounts
    to roll up again."""
    if not events:
        return set()
    table = EngagementEvent.__table__
    starts = {e["provider_event_id"]: e for e in events}
    moved: set[int] = set()
    for batch in chunked(sorted(starts), 2000):
        stored = session.execute(
            select(
                table.c.id, table.c.provider_event_id, table.c.occurred_at, table.c.account_id
            ).where(table.c.provider == context.crm, table.c.provider_event_id.in_(batch))
        ).all()
        for row_id, event_id, occurred_at, account_id in stored:
            wanted = starts[event_id]
            if _utc(occurred_at) != _utc(wanted["occurred_at"]):
                session.execute(
                    table.update()
                    .where(table.c.id == row_id)
                    .values(occurred_at=wanted["occurred_at"], data=wanted["data"])
                )
                if account_id is not None:
                    moved.add(account_id)
    return moved

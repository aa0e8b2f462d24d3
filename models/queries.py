"""Read-side queries behind the listing commands and the demo summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, case, exists, func, not_, or_, select, true

from models.tables import (
    Account,
    Contact,
    CrmDeal,
    CrmPush,
    Delivery,
    EngagementEvent,
    StageChange,
)


@dataclass(frozen=True)
class AccountFilters:
    """What a list of accounts is narrowed to (`abm accounts list`, the console's accounts
    page). `tier` "none": accounts not targeted. `coverage`: "full" (a reachable contact in
    every role of `required_roles`), "missing:<role>" (no reachable contact in that role) or
    "unreachable" (no reachable contact at all). `source`: accounts whose kept engagement
    score has points from that source. `search`: part of the name or domain, any case."""

    tier: int | Literal["none"] | None = None
    stage: str | None = None
    coverage: str | None = None
    source: str | None = None
    search: str | None = None
    required_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountSort:
    """The order of a list of accounts: `key` one of ACCOUNT_SORTS; `stages` the journey in
    order, for key "stage" (the stage names are not alphabetical). The domain breaks ties,
    so pages never overlap."""

    key: str = "score"
    descending: bool = True
    stages: tuple[str, ...] = ()


ACCOUNT_SORTS = ("score", "engagement", "name", "stage", "tier", "changed")


def _reachable(role: str | None = None) -> ColumnElement[bool]:
    """The account has an active contact (in this role): an indexed seek per account."""
    test = [Contact.account_id == Account.id, Contact.status == "active"]
    if role is not None:
        test.append(Contact.role == role)
    return exists().where(*test)


def _coverage_test(coverage: str, required: Sequence[str]) -> ColumnElement[bool]:
    if coverage == "full":
        return and_(true(), *(_reachable(role) for role in required))
    if coverage == "unreachable":
        return not_(_reachable())
    role = coverage.removeprefix("missing:")
    if coverage.startswith("missing:") and role in required:
        return not_(_reachable(role))
    raise ValueError(f"coverage {coverage!r}: use full, unreachable or missing:<required role>")


def _account_conditions(filters: AccountFilters) -> list[ColumnElement[bool]]:
    """The WHERE clause of a filtered list, one condition a filter."""
    conditions: list[ColumnElement[bool]] = []
    if filters.tier == "none":
        conditions.append(Account.tier.is_(None))
    elif filters.tier is not None:
        conditions.append(Account.tier == filters.tier)
    if filters.stage is not None:
        conditions.append(Account.stage == filters.stage)
    if filters.coverage is not None:
        conditions.append(_coverage_test(filters.coverage, filters.required_roles))
    if filters.source is not None:
        conditions.append(Account.engagement_sources[filters.source].as_float() > 0)
    if filters.search:
        conditions.append(
            or_(
                Account.domain.icontains(filters.search, autoescape=True),
                Account.name.icontains(filters.search, autoescape=True),
            )
        )
    return conditions


def _account_order(sort: AccountSort) -> list[Any]:
    if sort.key not in ACCOUNT_SORTS:
        raise ValueError(f"sort {sort.key!r}: use one of {', '.join(ACCOUNT_SORTS)}")
    column: Any = {
        "score": Account.icp_score,
        "engagement": Account.engagement_score,
        "name": func.lower(func.coalesce(Account.name, Account.domain)),
        "stage": case(
            {stage: index for index, stage in enumerate(sort.stages)},
            value=Account.stage,
            else_=len(sort.stages),
        ),
        "tier": Account.tier,
        "changed": Account.updated_at,
    }[sort.key]
    column = column.desc() if sort.descending else column.asc()
    # accounts without a score or tier go last whichever way the list is sorted
    return [column.nulls_last(), Account.domain]


def _listed_columns() -> tuple[Any, ...]:
    """What every account listing shows of an account (the command line and the console)."""
    return (
        Account.id,
        Account.domain,
        Account.name,
        Account.icp_score.label("score"),
        Account.tier,
        Account.stage,
        Account.engagement_score,
    )


def list_accounts(
    engine: Engine, tier: int | None = None, stage: str | None = None
) -> list[dict[str, Any]]:
    """Accounts, best ICP fit first, with how many contacts each has."""
    contacts = (
        select(Contact.account_id, func.count().label("contacts"))
        .group_by(Contact.account_id)
        .subquery()
    )
    query = (
        select(
            *_listed_columns(),
            Account.industry,
            func.coalesce(contacts.c.contacts, 0).label("contacts"),
        )
        .outerjoin(contacts, contacts.c.account_id == Account.id)
        .where(*_account_conditions(AccountFilters(tier=tier, stage=stage)))
        .order_by(*_account_order(AccountSort()))
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def account_page(
    engine: Engine, filters: AccountFilters, sort: AccountSort, page: int, size: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """One page of accounts (page 1 first) and how many match in all, for the console.

    Three queries whatever the table's size: the count, the page's rows (filters, order,
    limit), and for those rows only their contacts (`contacts`: how many; `reachable_roles`:
    the roles of the active ones, for the committee coverage)."""
    conditions = _account_conditions(filters)
    query = (
        select(
            *_listed_columns(),
            Account.engagement_sources,
            Account.updated_at,
        )
        .where(*conditions)
        .order_by(*_account_order(sort))
        .limit(size)
        .offset((max(page, 1) - 1) * size)
    )
    with engine.connect() as connection:
        total = connection.execute(
            select(func.count()).select_from(Account).where(*conditions)
        ).scalar_one()
        rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            row["contacts"], row["reachable_roles"] = 0, []
        by_id = {row["id"]: row for row in rows}
        if by_id:
            people = connection.execute(
                select(Contact.account_id, Contact.role, Contact.status, func.count())
                .where(Contact.account_id.in_(list(by_id)))
                .group_by(Contact.account_id, Contact.role, Contact.status)
            )
            for account_id, role, status, count in people:
                row = by_id[account_id]
                row["contacts"] += count
                if status == "active" and role is not None:
                    row["reachable_roles"].append(role)
    for row in rows:
        row["reachable_roles"] = sorted(set(row["reachable_roles"]))
    return rows, int(total)


def count_accounts(engine: Engine) -> int:
    """How many accounts there are at all (an empty list says why it is empty)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Account)).scalar_one())


def get_account(engine: Engine, domain: str) -> dict[str, Any] | None:
    """One account with its contacts, stage history, recent engagement and what the CRM
    says of it (`crm`: its owner and which CRM, the CRM's record ids, its deals)."""
    with engine.connect() as connection:
        row = (
            connection.execute(select(Account.__table__).where(Account.domain == domain))
            .mappings()
            .first()
        )
        if row is None:
            return None
        data = dict(row)
        account_id = data["id"]
        data["contacts"] = [
            dict(contact)
            for contact in connection.execute(
                select(
                    Contact.email,
                    Contact.first_name,
                    Contact.last_name,
                    Contact.title,
                    Contact.seniority,
                    Contact.function,
                    Contact.role,
                    Contact.status,
                )
                .where(Contact.account_id == account_id)
                .order_by(Contact.role, Contact.email)
            ).mappings()
        ]
        data["stage_history"] = [
            dict(change)
            for change in connection.execute(
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
        data["crm"] = {
            "owner": (
                {
                    "name": data["owner_name"],
                    "email": data["owner_email"],
                    "crm": data["owner_crm"],
                    "active": data["owner_active"] is not False,
                }
                if data["owner_crm"]
                else None
            ),
            "records": dict(
                connection.execute(
                    select(CrmPush.crm, CrmPush.crm_id).where(
                        CrmPush.account_id == account_id, CrmPush.crm_id.is_not(None)
                    )
                ).all()
            ),
            "deals": [
                dict(deal)
                for deal in connection.execute(
                    select(
                        CrmDeal.crm,
                        CrmDeal.crm_id,
                        CrmDeal.name,
                        CrmDeal.crm_stage,
                        CrmDeal.maps_to,
                        CrmDeal.closed,
                        CrmDeal.won,
                        CrmDeal.amount,
                        CrmDeal.modified_at,
                    )
                    .where(CrmDeal.account_id == account_id)
                    .order_by(CrmDeal.modified_at.desc(), CrmDeal.crm_id)
                ).mappings()
            ],
        }
        data["engagement"] = [
            dict(event)
            for event in connection.execute(
                select(
                    EngagementEvent.occurred_at,
                    EngagementEvent.type,
                    EngagementEvent.channel,
                    Contact.email,
                )
                .outerjoin(Contact, Contact.id == EngagementEvent.contact_id)
                .where(EngagementEvent.account_id == account_id)
                .order_by(EngagementEvent.occurred_at.desc())
                .limit(50)
            ).mappings()
        ]
    return data


def list_contacts(engine: Engine, account_domain: str | None = None) -> list[dict[str, Any]]:
    query = (
        select(
            Contact.email,
            Account.domain.label("account_domain"),
            Contact.first_name,
            Contact.last_name,
            Contact.title,
            Contact.seniority,
            Contact.function,
            Contact.role,
            Contact.status,
        )
        .join(Account, Account.id == Contact.account_id)
        .order_by(Account.domain, Contact.email)
    )
    if account_domain is not None:
        query = query.where(Account.domain == account_domain)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def accounts_by_tier_and_stage(engine: Engine) -> dict[tuple[int | None, str], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Account.tier, Account.stage, func.count()).group_by(Account.tier, Account.stage)
        )
        return {(tier, stage): count for tier, stage, count in rows}


def delivery_state_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
        return dict(rows.all())

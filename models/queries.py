"""Read-side queries behind the listing commands and the demo summary."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from models.tables import (
    Account,
    Contact,
    CrmDeal,
    CrmPush,
    Delivery,
    EngagementEvent,
    StageChange,
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
    query = select(
        Account.id,
        Account.domain,
        Account.name,
        Account.icp_score.label("score"),
        Account.tier,
        Account.stage,
        Account.engagement_score,
        Account.industry,
        func.coalesce(contacts.c.contacts, 0).label("contacts"),
    ).outerjoin(contacts, contacts.c.account_id == Account.id)
    if tier is not None:
        query = query.where(Account.tier == tier)
    if stage is not None:
        query = query.where(Account.stage == stage)
    query = query.order_by(Account.icp_score.desc().nulls_last(), Account.domain)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


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

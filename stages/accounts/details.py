"""Everything about one account that `abm accounts show` prints and the console's account
page shows, assembled here once so the two never disagree: the stored account with its
contacts, stage history and CRM record (`models.queries.get_account`), the engagement by
source with its intent topics, the timeline, the committee coverage against the ICP rules'
required roles, and the campaigns its people are in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, select

from core.settings import Settings
from core.vocabulary import PERSON_STATES
from models.queries import get_account
from models.tables import Campaign, Delivery
from stages.committee.coverage import coverage
from stages.delivery.people import DEFERRED, person_state
from stages.engagement.breakdown import engagement_by_source
from stages.engagement.rollup import engagement_rules_from
from stages.engagement.sources import SOURCES, source_totals
from stages.engagement.timeline import account_timeline
from stages.targeting.scoring import load_icp_rules


def account_details(engine: Engine, settings: Settings, domain: str) -> dict[str, Any] | None:
    """The account with this domain (any case, spaces around ignored), None if there is
    none: `get_account`'s fields plus `engagement_sources` and `intent` (the breakdown),
    `timeline` (oldest first, all of it), `committee` (required, covered, gaps) and
    `campaigns` (`account_campaigns`)."""
    account = get_account(engine, domain.strip().lower())
    if account is None:
        return None
    rules = engagement_rules_from(settings)
    account["engagement_sources"], account["intent"] = engagement_by_source(engine, account, rules)
    account["timeline"] = account_timeline(engine, account["id"])
    required = load_icp_rules(settings.icp_rules).committee.required_roles
    reachable = [c["role"] for c in account["contacts"] if c["status"] == "active"]
    cover = coverage(reachable, required)
    account["committee"] = {
        "required": list(required),
        "covered": list(cover.covered),
        "gaps": list(cover.gaps),
    }
    account["campaigns"] = account_campaigns(engine, account["id"])
    return account


def account_campaigns(engine: Engine, account_id: int) -> list[dict[str, Any]]:
    """The campaigns with a ledger row for the account's people, by key: `people` (how many
    of its people the campaign holds) and `states` (person state -> how many of them have
    a step in that state, in the order of PERSON_STATES; a person with one step sent and
    the next planned counts in both)."""
    query = (
        select(
            Campaign.key,
            Campaign.name,
            Campaign.status,
            Delivery.contact_id,
            Delivery.state,
            Delivery.last_error.like(f"{DEFERRED}%").label("deferred"),
        )
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.account_id == account_id)
        .distinct()
    )
    campaigns: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query).mappings():
            campaign = campaigns.setdefault(
                row["key"],
                {"key": row["key"], "name": row["name"], "status": row["status"], "people": set()},
            )
            state = person_state(row["state"], DEFERRED if row["deferred"] else None)
            campaign["people"].add(row["contact_id"])
            campaign.setdefault("by_state", {}).setdefault(state, set()).add(row["contact_id"])
    return [
        {
            "key": campaign["key"],
            "name": campaign["name"],
            "status": campaign["status"],
            "people": len(campaign["people"]),
            "states": {
                state: len(campaign["by_state"][state])
                for state in PERSON_STATES
                if state in campaign["by_state"]
            },
        }
        for _, campaign in sorted(campaigns.items())
    ]


def committee_by_role(
    contacts: Iterable[Mapping[str, Any]], required: Sequence[str]
) -> list[dict[str, Any]]:
    """The account's people grouped by committee role: the required roles first, in the
    rules' order, each `covered` when one of its people is active (reachable), then the
    other roles its people hold, then people with no role. A required role nobody holds is
    there with no people: that is the gap to fill."""
    wanted = list(dict.fromkeys(required))
    people: dict[str | None, list[Mapping[str, Any]]] = {role: [] for role in wanted}
    for contact in contacts:
        people.setdefault(contact["role"], []).append(contact)
    others = sorted(role for role in people if role is not None and role not in wanted)
    order: list[str | None] = [*wanted, *others, *([None] if None in people else [])]
    return [
        {
            "role": role,
            "required": role in wanted,
            "covered": any(person["status"] == "active" for person in people[role]),
            "people": people[role],
        }
        for role in order
    ]


def top_source(engagement_sources: Mapping[str, Any] | None) -> str | None:
    """The source with the most points in a kept breakdown (`Account.engagement_sources`),
    earlier in SOURCES on a tie; None when no source has any."""
    totals = source_totals(engagement_sources)
    if not totals:
        return None
    best = max(SOURCES, key=lambda source: (totals[source], -SOURCES.index(source)))
    return best if totals[best] > 0 else None

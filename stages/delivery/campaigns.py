"""The campaigns there are, as `abm campaign list` and the console's campaign pages show
them: status (and why paused), the steps of the file as it is now, progress in the ledger,
and the accounts a reply holds back. One reading for both, so they never disagree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from models.tables import Account, AuditLog, Campaign, Delivery
from stages.delivery.ledger import ledger_summary, pause_reason

# How `send_rules.check_chunk` words a row held by a reply at its account under
# `account_rules: {on_reply: pause}`; `send_rules.release_account` lets them go.
REPLY_PAUSE = "deferred: someone at the account replied (paused%"


def campaign_steps(source: str | None) -> tuple[list[dict[str, str]] | None, str | None]:
    """(steps, None) from the campaign's file as it is now, or (None, why not)."""
    from core.campaign_file import load_campaign
    from core.errors import ConfigError

    if not source:
        return None, "no file recorded"
    path = Path(source)
    if not path.is_absolute() and not path.is_file() and os.environ.get("ABM_HOME"):
        path = Path(os.environ["ABM_HOME"]) / path
    if not path.is_file():
        return None, f"file missing: {source}"
    try:
        _, campaign = load_campaign(path)
    except ConfigError as exc:
        return None, f"file no longer valid: {exc}"
    return [{"id": step.id, "channel": step.channel} for step in campaign.steps], None


def _row(engine: Engine, campaign: Any, progress: bool = True) -> dict[str, Any]:
    steps, problem = campaign_steps(campaign.source_path)
    row = {
        "key": campaign.key,
        "name": campaign.name,
        "status": campaign.status,
        "paused_because": pause_reason(engine, campaign.id),
        "source_path": campaign.source_path,
        "steps": steps,
        "file_problem": problem,
    }
    if progress:
        summary = ledger_summary(engine, campaign.id)
        row["progress"] = {"sent": summary["sent"], "planned": summary["planned"]}
    return row


def _campaigns() -> Any:
    return select(
        Campaign.id, Campaign.key, Campaign.name, Campaign.status, Campaign.source_path
    ).order_by(Campaign.key)


def campaign_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every campaign that has run: its status (and why it is paused), the steps of its file
    as it is now (or why they cannot be read) and its progress in the ledger."""
    with engine.connect() as connection:
        campaigns = connection.execute(_campaigns()).all()
    return [_row(engine, campaign) for campaign in campaigns]


def campaign_row(engine: Engine, key: str, progress: bool = True) -> dict[str, Any] | None:
    """One campaign as `campaign_rows` lists it, with its id (without `progress`, which
    counts the whole ledger, when the caller counts it another way); None when no campaign
    has that key."""
    with engine.connect() as connection:
        campaign = connection.execute(_campaigns().where(Campaign.key == key)).first()
    if campaign is None:
        return None
    return {"id": campaign.id, **_row(engine, campaign, progress)}


def held_accounts(
    engine: Engine, campaign_id: int, limit: int | None = None
) -> list[dict[str, Any]]:
    """Accounts whose messages in this campaign wait because someone there replied (the
    campaign's `on_reply: pause`), with how many wait, by domain (the first `limit`): each
    is released on its own (`send_rules.release_account`, `abm campaign resume --account`)."""
    query = (
        select(Account.domain, Account.name, func.count())
        .select_from(Delivery)
        .join(Account, Account.id == Delivery.account_id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.state == "planned",
            Delivery.last_error.like(REPLY_PAUSE),
        )
        .group_by(Account.domain, Account.name)
        .order_by(Account.domain)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [
            {"domain": domain, "name": name, "waiting": n}
            for domain, name, n in connection.execute(query)
        ]


def last_pause(engine: Engine, key: str) -> dict[str, Any] | None:
    """Who paused the campaign last and when, from the audit log (the console and `abm
    campaign pause` both record it): a person's pause keeps no reason in the campaign row,
    since a reason there marks a pause by a rule (`ledger.paused_by_rule`)."""
    query = (
        select(AuditLog.actor, AuditLog.at, AuditLog.via)
        .where(AuditLog.action == "campaign.pause", AuditLog.target == key)
        .order_by(AuditLog.at.desc(), AuditLog.id.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        found = connection.execute(query).first()
    return None if found is None else {"actor": found.actor, "at": found.at, "via": found.via}

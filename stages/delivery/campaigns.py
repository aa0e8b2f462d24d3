"""The campaigns there are, as `abm campaign list` and the console's campaign pages show
them: status (and why paused), the steps of the file as it is now, progress in the ledger,
and the accounts a reply holds back. One reading for both, so they never disagree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from models.tables import Account, Campaign, Delivery
from stages.delivery.ledger import pause_reason

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
    return [
        {"id": step.id, "channel": step.channel, "wait": step.wait} for step in campaign.steps
    ], None


def with_unplanned(
    steps: list[dict[str, str]] | None, ledger: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ledger's rows per step (each with a "step"), in the order of the campaign file,
    with a row `{"step", "channel", "wait", "not_planned": True}` for each step of the file
    the ledger has no row for yet: a step is planned only when the one before it was sent
    and its wait ended, so without these the first run looks like the whole campaign.
    Steps the ledger has but the file no longer names follow in the ledger's order."""
    found = {row["step"]: {**row, "not_planned": False} for row in ledger}
    rows = []
    for position, step in enumerate(steps or []):
        row = found.pop(step["id"], None)
        if row is None:
            wait = None if position == 0 else step.get("wait")
            row = {"step": step["id"], "channel": step["channel"], "wait": wait}
            row["not_planned"] = True
        rows.append(row)
    return rows + list(found.values())


def progress_in_words(rows: list[dict[str, Any]]) -> str:
    """What `with_unplanned`'s rows have sent, per step: "5 of 5 sent for intro; followup
    not planned yet"."""
    planned = [r for r in rows if not r["not_planned"]]
    waiting = [r["step"] for r in rows if r["not_planned"]]
    words = ", ".join(f"{r['sent']:,} of {r['planned']:,} sent for {r['step']}" for r in planned)
    if waiting:
        later = f"{', '.join(waiting)} not planned yet"
        words = f"{words}; {later}" if words else f"nothing planned yet: {later}"
    return words


def progress_share(rows: list[dict[str, Any]]) -> float:
    """How far the campaign is, from 0 to 1: each step counts the same, sent of planned,
    a step not planned yet as not begun (so a finished first step of two is half way)."""
    if not rows:
        return 0.0
    done = sum(r["sent"] / r["planned"] for r in rows if not r["not_planned"] and r["planned"])
    return done / len(rows)


def step_progress(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    """Sent and planned (every ledger row) per step, in the order the steps were first
    planned: one pass over the campaign's part of the funnel index."""
    counts: dict[str, dict[str, Any]] = {}
    query = (
        select(Delivery.step, Delivery.state, func.count(), func.min(Delivery.id))
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.step, Delivery.state)
    )
    with engine.connect() as connection:
        for step, state, n, first in connection.execute(query):
            row = counts.setdefault(step, {"step": step, "sent": 0, "planned": 0, "first": first})
            row["planned"] += n
            row["first"] = min(row["first"], first)
            if state == "sent":
                row["sent"] += n
    return sorted(counts.values(), key=lambda row: row["first"])


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
        steps_done = with_unplanned(steps, step_progress(engine, campaign.id))
        row["progress"] = {
            "sent": sum(step.get("sent", 0) for step in steps_done),
            "planned": sum(step.get("planned", 0) for step in steps_done),
        }
        row["step_progress"] = {
            "words": progress_in_words(steps_done),
            "share": progress_share(steps_done),
            "not_planned": [step["step"] for step in steps_done if step["not_planned"]],
        }
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

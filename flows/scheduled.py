"""The flows deployments run on a schedule (see prefect.yaml):

- `advance_sequences` (every 15 minutes, once switched on: it sends, so it is deployed
  off): every active campaign with anything due or new (one query says which) sends what
  is due now:
  later steps whose wait has passed, messages deferred by a cap or a sending window, and
  retryable failures whose backoff is over. Stop conditions are checked again at send time.
- `sync_engagement` (hourly, once switched on): LinkedIn ad analytics by company and
  lead-form responses since the stored cursors, then the accounts' scores and stages. In
  sandbox mode it reads only the sandbox files and, with none, does nothing.
- `poll_mailbox` (every 5 minutes, once switched on): the monitored mailbox
  (ABM_IMAP_URL) once: replies, delivery reports, complaints and auto-replies since the
  stored cursor, stored once each with the suppressions and account rollups they cause.
- `sync_crm` (every 30 minutes, once switched on): what changed in the CRM (ABM_CRM)
  since the stored cursors, owners, deals and the stages they give, meetings, then every
  account changed since its last push goes to the CRM. Without a CRM it does nothing.
- `rescore_accounts` (nightly): ICP fit and tiers for all accounts, then engagement scores
  and stages, so time decay moves accounts even when nothing new happened; then every
  account changed since its last CRM push goes to the CRM (when one is configured).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from sqlalchemy import select

from connectors.crm import crm_choice
from core.campaign_file import CampaignFile, load_campaign
from core.errors import AbmError
from core.settings import get_settings
from flows.campaign import campaign_fingerprint, run_campaign
from flows.tasks import (
    pull_crm_changes,
    push_crm_changes,
    score_accounts,
    write_back_engagement,
)
from models.db import get_engine, require_current_schema
from models.tables import Account, Campaign
from stages.delivery.ledger import campaigns_with_work
from stages.engagement.linkedin_sync import sync_linkedin
from stages.engagement.mailbox_poll import poll_mailbox as read_mailbox
from stages.engagement.rollup import engagement_rules_from


@flow(name="advance-sequences")
def advance_sequences() -> dict[str, Any]:
    """Run the active campaigns that have anything due or new, under this one flow run;
    returns summaries by key (`{"idle": why}` for a campaign with nothing to do).

    One query finds them (`campaigns_with_work`): rows due, leases run out, a later step
    whose wait ended, a contact or account changed since the campaign was last completely
    planned, or a campaign file or rules changed since. A tick with nothing due costs that
    query and reading the campaign files."""
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    require_current_schema(engine)
    with engine.connect() as connection:
        campaigns = connection.execute(
            select(Campaign.id, Campaign.key, Campaign.source_path).where(
                Campaign.status == "active"
            )
        ).all()
    found: dict[int, tuple[CampaignFile, str]] = {}
    broken: set[int] = set()
    for campaign_id, key, source in campaigns:
        if not source or not Path(source).is_file():
            logger.warning("campaign %s: file %s is gone; not advanced", key, source)
            continue
        try:
            _, campaign = load_campaign(Path(source))
            found[campaign_id] = (campaign, campaign_fingerprint(settings, campaign))
        except AbmError:
            broken.add(campaign_id)  # the run says what is wrong with it, and fails
    work = campaigns_with_work(engine, found) | broken
    summaries: dict[str, Any] = {}
    for campaign_id, key, source in campaigns:
        if campaign_id in work:
            summaries[key] = run_campaign(campaign_file=source)
        elif campaign_id in found:
            summaries[key] = {"idle": "nothing due or new since its last complete run"}
    idle = [key for key, summary in summaries.items() if "idle" in summary]
    logger.info(
        "%d active campaigns: %d run, %d with nothing due or new%s",
        len(campaigns),
        len(summaries) - len(idle),
        len(idle),
        f" ({', '.join(idle[:20])})" if idle else "",
    )
    return summaries


@flow(name="rescore-accounts")
def rescore_accounts() -> dict[str, Any]:
    """Nightly: ICP scores and tiers, then engagement with decay, for every account."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    require_current_schema(engine)
    rules = str(settings.icp_rules) if settings.icp_rules else None
    per_tier = score_accounts(settings.database_url, rules)
    with engine.connect() as connection:
        ids = list(connection.execute(select(Account.id)).scalars())
    changes = write_back_engagement(settings.database_url, ids)
    summary: dict[str, Any] = {"accounts": len(ids), "per_tier": per_tier, "stage_changes": changes}
    if crm_choice(settings) != "none":
        summary["crm"] = push_crm_changes(settings.database_url)
    return summary


@flow(name="sync-crm")
def sync_crm() -> dict[str, Any]:
    """Pull what changed in the CRM, then push what changed here: pulled first, so a push
    sends the stages and owners the CRM just gave. Without a CRM it does nothing."""
    logger = get_run_logger()
    settings = get_settings()
    if crm_choice(settings) == "none":
        note = "no CRM: set ABM_CRM (hubspot, salesforce, sandbox) or ABM_HUBSPOT_ACCESS_TOKEN"
        logger.info(note)
        return {"notes": [note]}
    require_current_schema(get_engine(settings.database_url))
    pulled = pull_crm_changes(settings.database_url)
    pushed = push_crm_changes(settings.database_url)
    return {"pull": pulled, "push": pushed}


@flow(name="sync-engagement")
def sync_engagement() -> dict[str, Any]:
    """Pull provider engagement incrementally, then roll it up into the accounts; when
    nothing was pulled (a sandbox with no files) the database is left as it was."""
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    require_current_schema(engine)
    engagement_rules_from(settings)  # a bad ABM_ENGAGEMENT_RULES stops it before any pull
    report = sync_linkedin(engine, settings)
    for note in report.notes:
        logger.info(note)
    for problem in report.problems:
        logger.warning(problem)
    changes = 0
    if report.stored:
        with engine.connect() as connection:
            ids = list(connection.execute(select(Account.id)).scalars())
        changes = write_back_engagement(settings.database_url, ids)
    return {**asdict(report), "stage_changes": changes}


@flow(name="poll-mailbox")
def poll_mailbox() -> dict[str, Any]:
    """Read the monitored mailbox once and store what is new; without ABM_IMAP_URL it does
    nothing. A message that could not be read is a warning; a connection that kept dropping
    fails the run (the next one resumes from the stored cursor)."""
    logger = get_run_logger()
    settings = get_settings()
    if not settings.imap_url:
        note = "ABM_IMAP_URL is not set: no mailbox to read"
        logger.info(note)
        return {"read": 0, "stored": 0, "notes": [note], "problems": []}
    engine = get_engine(settings.database_url)
    require_current_schema(engine)
    report = read_mailbox(engine, settings)
    for note in report.notes:
        logger.info(note)
    for problem in report.problems:
        logger.warning(problem)
    logger.info(
        "%s: read %d, stored %d new events (%d replies, %d auto-replies, %d hard and %d soft "
        "bounces, %d complaints)",
        report.mailbox,
        report.read,
        report.stored,
        report.replies,
        report.auto_replies,
        report.hard_bounces,
        report.soft_bounces,
        report.complaints,
    )
    if report.incomplete:
        raise RuntimeError(report.problems[-1])
    return report.as_dict()

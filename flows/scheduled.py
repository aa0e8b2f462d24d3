"""The flows deployments run on a schedule (see prefect.yaml):

- `advance_sequences` (every 15 minutes): every active campaign sends what is due now:
  later steps whose wait has passed, messages deferred by a cap or a sending window, and
  retryable failures whose backoff is over. Stop conditions are checked again at send time.
- `sync_engagement` (hourly): LinkedIn ad analytics by company and lead-form responses
  since the stored cursors, then the touched accounts' scores and stages.
- `rescore_accounts` (nightly): ICP fit and tiers for all accounts, then engagement scores
  and stages, so time decay moves accounts even when nothing new happened.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from sqlalchemy import select

from core.settings import get_settings
from flows.campaign import run_campaign
from flows.tasks import score_accounts, write_back_engagement
from models.db import get_engine, require_current_schema
from models.tables import Account, Campaign
from stages.engagement.linkedin_sync import sync_linkedin


@flow(name="advance-sequences")
def advance_sequences() -> dict[str, Any]:
    """Run every active campaign whose file is still present; returns summaries by key."""
    logger = get_run_logger()
    engine = get_engine(get_settings().database_url)
    require_current_schema(engine)
    with engine.connect() as connection:
        campaigns = connection.execute(
            select(Campaign.key, Campaign.source_path).where(Campaign.status == "active")
        ).all()
    summaries: dict[str, Any] = {}
    for key, source in campaigns:
        if not source or not Path(source).is_file():
            logger.warning("campaign %s: file %s is gone; not advanced", key, source)
            continue
        summaries[key] = run_campaign(campaign_file=source)
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
    return {"accounts": len(ids), "per_tier": per_tier, "stage_changes": changes}


@flow(name="sync-engagement")
def sync_engagement() -> dict[str, Any]:
    """Pull provider engagement incrementally, then roll it up into the accounts."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    require_current_schema(engine)
    report = sync_linkedin(engine, settings)
    with engine.connect() as connection:
        ids = list(connection.execute(select(Account.id)).scalars())
    changes = write_back_engagement(settings.database_url, ids)
    return {**asdict(report), "stage_changes": changes}

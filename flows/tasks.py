"""Thin Prefect tasks around the pipeline's stages. The stage modules hold the logic and do
not import Prefect, so the command line stays quick; the flows compose these tasks.

Tasks take a database URL, not an engine, so they can run in another process or worker.
No task persists its result: results can hold personal data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.crm import crm_choice, get_crm
from connectors.email import get_backend
from core.campaign_file import Audience
from core.settings import get_settings
from models.db import get_engine
from stages.committee.coverage import Coverage, classify_contacts, committee_coverage
from stages.crm import push_changed
from stages.crm.pull import pull_crm
from stages.crm.stage_map import stage_table_from
from stages.delivery.ledger import ChunkOutcome, DeliveryContext
from stages.delivery.send import deliver, rehearse
from stages.engagement.rollup import (
    engagement_rules_from,
    rollup_accounts,
    simulate_campaign_engagement,
)
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@task(name="score-accounts", cache_policy=NO_CACHE, persist_result=False)
def score_accounts(database_url: str, rules_path: str | None) -> dict[int | None, int]:
    """Rescore all accounts: one read, one bulk update, thousands of accounts a second."""
    return rescore_accounts_in_db(get_engine(database_url), load_icp_rules(_path(rules_path)))


@task(name="select-target-accounts", cache_policy=NO_CACHE, persist_result=False)
def select_target_accounts(database_url: str, audience: Audience) -> list[int]:
    """The campaign's accounts: tiers, journey stages and firmographic filters."""
    return target_account_ids(get_engine(database_url), audience)


@task(name="map-stakeholders", cache_policy=NO_CACHE, persist_result=False)
def map_stakeholders(
    database_url: str, account_ids: list[int], required: list[str], title_rules: str | None
) -> dict[int, Coverage]:
    """Classify titles changed since last classified, then measure committee coverage."""
    engine = get_engine(database_url)
    classify_contacts(engine, _path(title_rules))
    return committee_coverage(engine, account_ids, required)


@task(
    name="deliver-chunk",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[10, 60],
)
def deliver_chunk(ids: list[int], context: DeliveryContext) -> ChunkOutcome:
    """One task per chunk of a thousand or so contacts, never one per contact.

    Safe to retry: a retry claims only rows still `planned` or `failed`, so whatever the
    first attempt handed to the provider is never sent again. Tagged `abm-provider:<name>`
    so a Prefect tag concurrency limit caps parallel chunks per provider."""
    settings = get_settings()
    engine = get_engine(context.database_url)
    return deliver(engine, settings, context, ids, get_backend(settings))


@task(name="rehearse-chunk", cache_policy=NO_CACHE, persist_result=False)
def rehearse_chunk(ids: list[int], context: DeliveryContext) -> ChunkOutcome:
    """Dry run of a chunk: every check and render, nothing sent, no ledger row changed."""
    return rehearse(get_engine(context.database_url), get_settings(), context, ids)


@task(name="simulate-engagement", cache_policy=NO_CACHE, persist_result=False)
def simulate_engagement(database_url: str, campaign_id: int) -> int:
    return simulate_campaign_engagement(get_engine(database_url), campaign_id)


@task(name="write-back-engagement", cache_policy=NO_CACHE, persist_result=False)
def write_back_engagement(database_url: str, account_ids: list[int]) -> int:
    """Roll events up into account engagement scores and stages, by the rules
    ABM_ENGAGEMENT_RULES names (else the default), as everywhere else."""
    rules = engagement_rules_from(get_settings())
    return rollup_accounts(get_engine(database_url), account_ids, rules)


@task(name="crm-push", cache_policy=NO_CACHE, persist_result=False)
def push_crm_changes(database_url: str) -> dict[str, Any]:
    """Every account whose tier, ICP score, engagement score or stage changed since its last
    push to the CRM (when configured), whatever changed it; failed ones go at the next push."""
    crm = get_crm(get_settings())
    if crm is None:
        return {"skipped": "no CRM: ABM_CRM is none, or auto without ABM_HUBSPOT_ACCESS_TOKEN"}
    with crm:
        report = push_changed(get_engine(database_url), crm)
    if report.failures:
        get_run_logger().warning(
            "CRM push: %d accounts failed and are retried at the next push, e.g. %s",
            report.failed,
            "; ".join(f"{d}: {r}" for d, r in list(report.failures.items())[:5]),
        )
    return {**report.counts(), "failures": dict(list(report.failures.items())[:50])}


@task(name="crm-pull", cache_policy=NO_CACHE, persist_result=False)
def pull_crm_changes(database_url: str) -> dict[str, Any]:
    """What changed in the CRM since the stored cursors (owners, deals and the stages they
    give, meetings), each page stored with its cursor; a refused token fails the task with
    what was stored kept."""
    settings = get_settings()
    crm = get_crm(settings)
    if crm is None:
        return {"skipped": f"no CRM (ABM_CRM={crm_choice(settings)})"}
    logger = get_run_logger()
    table, rules = stage_table_from(settings), engagement_rules_from(settings)
    with crm:
        report = pull_crm(get_engine(database_url), crm, stage_table=table, rules=rules)
    for line in report.moves[:20]:
        logger.info("CRM: %s", line)
    for line in report.kept + report.skipped + report.warnings:
        logger.warning("CRM pull: %s", line)
    for note in report.notes:
        logger.info(note)
    return report.as_dict()

"""The `run_campaign` flow: the pipeline's table of contents, top to bottom.

target -> map -> plan -> render and deliver (in chunks) -> write back.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from sqlalchemy import func, select

from connectors.crm import crm_choice
from connectors.email import get_backend
from core.campaign_file import load_campaign
from core.settings import Settings, get_settings
from flows.preflight import preflight
from flows.tasks import (
    deliver_chunk,
    map_stakeholders,
    push_crm_changes,
    rehearse_chunk,
    score_accounts,
    select_target_accounts,
    simulate_engagement,
    write_back_engagement,
)
from models.db import chunked, get_engine, require_current_schema
from models.tables import Account, Contact, utcnow
from stages.committee.coverage import Coverage
from stages.delivery.ledger import (
    ChunkOutcome,
    DeliveryContext,
    campaign_paused,
    due_delivery_ids,
    forget_rehearsal,
    ledger_summary,
    pending_outside_audience,
    plan_step,
    register_campaign,
    release_expired_leases,
)
from stages.delivery.reputation import pause_if_unhealthy
from stages.delivery.send import default_sender_counts, default_sender_text
from stages.delivery.uncertain import apply_policy
from stages.engagement.rollup import refuse_simulation_on_real_data
from stages.report import publish_artifact, report_data


def _targets_table(database_url: str, coverage: dict[int, Coverage]) -> list[dict[str, Any]]:
    """Per tier: accounts, average coverage and the most common gaps (no personal data)."""
    with get_engine(database_url).connect() as connection:
        tiers = dict(
            connection.execute(
                select(Account.id, Account.tier).where(Account.id.in_(list(coverage)))
            ).all()
        )
    rows = []
    for tier in sorted({t for t in tiers.values() if t is not None}):
        ids = [account_id for account_id, t in tiers.items() if t == tier]
        gaps = Counter(gap for account_id in ids for gap in coverage[account_id].gaps)
        rows.append(
            {
                "tier": tier,
                "accounts": len(ids),
                "full coverage": sum(1 for i in ids if not coverage[i].gaps),
                "avg coverage": f"{sum(coverage[i].ratio for i in ids) / len(ids):.0%}",
                "top gaps": ", ".join(f"{role} ({n})" for role, n in gaps.most_common(3)),
            }
        )
    return rows


def _dry_run_summary(outcomes: list[ChunkOutcome]) -> dict[str, Any]:
    """What a real run would do now: the same keys as a run summary, nothing sent."""
    reasons: Counter[str] = Counter()
    for outcome in outcomes:
        reasons.update(outcome.skipped_by_reason)
    sent = sum(o.sent for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    deferred = sum(o.deferred for o in outcomes)
    failed = sum(o.dead for o in outcomes)
    return {
        "dry_run": True,
        "planned": sent + skipped + deferred + failed,
        "sent": sent,
        "skipped": skipped,
        "deferred": deferred,
        "failed": failed,
        "uncertain": 0,
        "pending": deferred,
        "skipped_by_reason": dict(sorted(reasons.items())),
        "sent_from_default_sender": default_sender_counts(outcomes),
    }


def _summary_markdown(key: str, summary: dict[str, Any]) -> str:
    lines = [
        f"# Campaign `{key}`",
        "",
        "| planned | sent | skipped | failed | uncertain | pending |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {summary['planned']} | {summary['sent']} | {summary['skipped']} "
        f"| {summary['failed']} | {summary['uncertain']} | {summary['pending']} |",
    ]
    if summary.get("paused_because"):
        lines += ["", f"**Paused:** {summary['paused_because']}"]
    if fallback := default_sender_text(summary.get("sent_from_default_sender") or {}):
        lines += ["", f"**Send as owner:** {fallback}"]
    if summary["skipped_by_reason"]:
        lines += ["", "| skipped because | messages |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in summary["skipped_by_reason"].items()]
    return "\n".join(lines)


def _deliver_step(
    settings: Settings,
    task: Task,
    context: DeliveryContext,
    artifact_key: str,
    warm: TaskRunner | None = None,
) -> list[ChunkOutcome]:
    """One task run per chunk of the step's due rows, with a progress artifact in the UI.
    `warm`: chunk processes the flow started early, used when the plan wants the same."""
    engine = get_engine(context.database_url)
    ids = due_delivery_ids(engine, context.campaign_id, context.step)
    plan = chunk_plan(settings, len(ids), os.cpu_count() or 1)
    chunks = [list(chunk) for chunk in chunked(ids, plan.size)]
    get_run_logger().info(
        "step %s: %d messages due in %d chunks on %d %s",
        context.step,
        len(ids),
        len(chunks),
        plan.workers,
        plan.kind,
    )
    progress = create_progress_artifact(
        progress=0.0,
        key=f"{artifact_key}-{context.step}-progress".lower()[:100],
        description=f"{context.campaign_key}, step {context.step}: share of due messages handled",
    )
    outcomes = []
    shown = 0
    reuse = warm is not None and plan.kind == "processes"
    with nullcontext(warm) if reuse else chunk_task_runner(plan) as runner:
        futures = runner.map(task, {"ids": chunks, "context": unmapped(context)})
        for future in as_completed(futures):
            outcomes.append(future.result())
            done = 100 * len(outcomes) // max(1, len(chunks))
            if done > shown:  # at most a hundred updates, however many chunks
                update_progress_artifact(progress, float(done))
                shown = done
    return outcomes


# Threads share one interpreter: past a few they only contend for the GIL and the database
# connection pool (5 + 10).
CHUNK_THREADS = 4


# From this many chunks in a step, `auto` runs them on processes: below it, starting the
# processes (a few seconds) costs more than a second core saves.
PROCESSES_FROM_CHUNKS = 8


def chunk_runner_kind(setting: str, chunks: int, cores: int) -> str:
    """`threads` or `processes` for a step of `chunks` chunks: rendering is CPU work, so
    threads (cheap to start) use one core and processes use them all."""
    if setting != "auto":
        return setting
    return "processes" if cores > 1 and chunks >= PROCESSES_FROM_CHUNKS else "threads"


# A task handed to a process pool is pickled with its Prefect context in the flow's process,
# tenths of a second each: on processes, chunks grow (up to MAX_PROCESS_CHUNK) so that each
# process gets about CHUNKS_PER_PROCESS of them and is never left waiting for the next.
CHUNKS_PER_PROCESS = 4
MAX_PROCESS_CHUNK = 10_000


@dataclass(frozen=True)
class ChunkPlan:
    """How a step's due rows are cut and run: `threads` or `processes`, how many at once,
    how many rows per chunk task."""

    kind: str
    workers: int
    size: int


def chunk_plan(settings: Settings, due: int, cores: int) -> ChunkPlan:
    """The plan for `due` rows on a machine of `cores` cores (`ABM_CHUNK_RUNNER`,
    `ABM_CHUNK_WORKERS`, `ABM_CHUNK_SIZE`, the smallest chunk on processes)."""
    size = settings.chunk_size
    kind = chunk_runner_kind(settings.chunk_runner, -(-due // size), cores)
    workers = settings.chunk_workers or (cores if kind == "processes" else CHUNK_THREADS)
    if kind == "processes":
        size = max(size, min(MAX_PROCESS_CHUNK, -(-due // (workers * CHUNKS_PER_PROCESS))))
    return ChunkPlan(kind, workers, size)


def chunk_task_runner(plan: ChunkPlan) -> TaskRunner:
    """Prefect's process pool or thread pool, as planned. Beyond one machine: work pools
    and workers."""
    if plan.kind == "processes":
        return WarmProcessPool(max_workers=plan.workers)
    return ThreadPoolTaskRunner(max_workers=plan.workers)


def _import_chunk_modules() -> None:
    """Run by each chunk process as it starts: what its first chunk would import."""
    import flows.tasks  # noqa: F401


class WarmProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool, its processes started on entry rather than at the first
    task. Opened when the flow starts, they start up and import (seconds each) while the
    flow scores, maps and plans, instead of after."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, initializer=_import_chunk_modules)

    def __enter__(self) -> WarmProcessPool:
        super().__enter__()
        # Prefect's executor starts a spawned process per submit while none is idle; should
        # a later Prefect name it differently, the processes simply start at the first task
        executor = getattr(self, "_executor", None)
        if executor is not None:
            for _ in range(self._max_workers):
                executor.submit(int)
        return self


@contextmanager
def _early_chunk_processes(settings: Settings) -> Iterator[TaskRunner | None]:
    """The chunk processes, started as the flow starts when its first step will likely
    need them (at most every contact is due, so the contacts count stands in for the due
    count), and stopped when it ends; None when threads will do."""
    with get_engine(settings.database_url).connect() as connection:
        contacts = connection.execute(select(func.count()).select_from(Contact)).scalar_one()
    plan = chunk_plan(settings, contacts, os.cpu_count() or 1)
    if plan.kind != "processes":
        yield None
        return
    with chunk_task_runner(plan) as runner:
        yield runner


@flow(name="run-campaign", log_prints=False)
def run_campaign(
    campaign_file: str = "campaigns/demo.yaml",
    limit: int | None = None,
    simulate: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run one campaign file now: every step of the pipeline, idempotent on re-run."""
    logger = get_run_logger()
    settings = get_settings()
    # every input (campaign file, rules, templates, backend settings) before anything is written
    preflight(settings, campaign_file)
    database_url = settings.database_url
    engine = get_engine(database_url)
    require_current_schema(engine)
    if simulate:  # the demo's switch: refused before anything is sent on real accounts
        refuse_simulation_on_real_data(engine)
    path = Path(campaign_file)
    key, campaign = load_campaign(path)
    artifact_key = key.replace("_", "-")
    campaign_id = register_campaign(engine, key, campaign, path)
    if not dry_run:
        pause_if_unhealthy(engine, settings, campaign_id)  # the reputation circuit breaker
    if campaign_paused(engine, campaign_id):
        summary = ledger_summary(engine, campaign_id)
        logger.warning("campaign %s sends nothing: %s", key, summary["paused_because"])
        return {**summary, "paused": True}
    with _early_chunk_processes(settings) as warm:
        title_rules = str(settings.title_rules) if settings.title_rules else None
        icp_rules = str(settings.icp_rules) if settings.icp_rules else None

        # 1. target
        score_accounts(database_url, icp_rules)
        account_ids = select_target_accounts(database_url, campaign.audience)
        logger.info("%d target accounts in tiers %s", len(account_ids), campaign.audience.tiers)
        left = pending_outside_audience(engine, campaign_id, campaign.audience, account_ids)
        if left:
            logger.warning(
                "%d planned messages are for people no longer in this campaign's audience "
                "(tier, stage, filters or roles changed): each is skipped as left_audience "
                "when it comes due",
                left,
            )

        # 2. map
        required = list(campaign.audience.required_roles)
        coverage = map_stakeholders(database_url, account_ids, required, title_rules)
        if coverage:
            create_table_artifact(
                key=f"{artifact_key}-targets",
                table=_targets_table(database_url, coverage),
                description=f"Target accounts of {key} by tier, with committee coverage",
            )

        # 3-4. plan, render and deliver, a chunk of contacts per task
        backend = get_backend(settings)
        release_expired_leases(engine, campaign_id, requeue=backend.idempotent)
        if settled := apply_policy(engine, campaign_id, campaign.uncertain):
            logger.warning(
                "%d messages uncertain for %s or more: %s, as the campaign file's "
                "`uncertain:` policy says",
                settled,
                campaign.uncertain.after,
                "sent again under the same Message-ID"
                if campaign.uncertain.then == "resend"
                else "counted as sent",
            )
        roles = list(campaign.audience.roles) if campaign.audience.roles else None
        task = (
            rehearse_chunk
            if dry_run
            else deliver_chunk.with_options(tags=[f"abm-provider:{backend.name}"])
        )
        rehearsal: list[ChunkOutcome] = []
        started = utcnow()
        for index, step in enumerate(campaign.steps):
            plan_step(engine, campaign_id, key, campaign.steps, index, account_ids, roles, limit)
            context = DeliveryContext(
                database_url=database_url,
                campaign=campaign,
                campaign_id=campaign_id,
                campaign_key=key,
                step=step.id,
            )
            rehearsal += _deliver_step(settings, task, context, artifact_key, warm)

        if dry_run:
            forget_rehearsal(engine, campaign_id, started)
            return {**_dry_run_summary(outcomes=rehearsal), "left_audience_pending": left}

        # 5. write back
        if simulate:
            simulate_engagement(database_url, campaign_id)
        write_back_engagement(database_url, account_ids)
        if crm_choice(settings) != "none":
            crm = push_crm_changes(database_url)  # every changed account, not just this audience
            logger.info("CRM push: %s", {k: v for k, v in crm.items() if k != "failures"})

        summary = {
            **ledger_summary(engine, campaign_id),
            "left_audience_pending": left,
            "sent_from_default_sender": default_sender_counts(rehearsal),  # this run's sends
        }
        if fallback := default_sender_text(summary["sent_from_default_sender"]):
            logger.warning("send as owner: %s", fallback)
        if summary["in_flight"]:
            logger.warning(
                "%d messages are still claimed by chunks that failed: the next run sends them "
                "once their lease of %d s has expired (see the failed task runs)",
                summary["in_flight"],
                settings.lease_seconds,
            )
        for why, waiting in summary["deferred_by_reason"].items():
            logger.info("%d messages wait, to go when allowed: %s", waiting, why)
        publish_artifact(report_data(engine))
        create_markdown_artifact(
            key=f"{artifact_key}-summary",
            markdown=_summary_markdown(key, summary),
            description=f"Delivery summary of {key}",
        )
        return summary


if __name__ == "__main__":
    run_campaign()

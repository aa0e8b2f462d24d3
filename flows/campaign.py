"""The `run_campaign` flow: the pipeline's table of contents, top to bottom.

target -> map -> plan -> render and deliver (in chunks) -> write back.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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
from prefect.utilities.annotations import quote
from sqlalchemy import Engine, func, select

from connectors.crm import crm_choice
from connectors.email import get_backend
from core.campaign_file import CampaignFile, load_campaign
from core.settings import Settings, get_settings
from flows.distributed import dask_task_runner, take_over_abandoned
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
from models.cursors import read_cursor, write_cursor
from models.db import chunked, get_engine, require_current_schema
from models.tables import (
    Account,
    Campaign,
    Contact,
    Delivery,
    EngagementEvent,
    StageChange,
    utcnow,
)
from stages.committee.coverage import Coverage, classify_contacts
from stages.committee.titles import load_title_table
from stages.delivery.ledger import (
    ChunkOutcome,
    DeliveryContext,
    campaign_paused,
    due_delivery_ids,
    forget_rehearsal,
    ledger_summary,
    mark_planned,
    pending_outside_audience,
    plan_fingerprint,
    plan_step,
    register_campaign,
    release_expired_leases,
    work_estimate,
)
from stages.delivery.reputation import pause_if_unhealthy
from stages.delivery.send import default_sender_counts, default_sender_text
from stages.delivery.uncertain import apply_policy
from stages.engagement.rollup import refuse_simulation_on_real_data
from stages.report import publish_artifact, report_data
from stages.targeting.scoring import load_icp_rules, rules_fingerprint


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
        if plan.kind == "dask":  # rows a dead worker held: taken over when its lease ends
            outcomes += take_over_abandoned(runner, task, context, plan.size)
    return outcomes


# Threads share one interpreter: past a few they only contend for the GIL and the database
# connection pool (5 + 10).
CHUNK_THREADS = 4


# From this many chunks in a step, `auto` runs them on processes: below it, starting the
# processes (a few seconds) costs more than a second core saves.
PROCESSES_FROM_CHUNKS = 8


def chunk_runner_kind(setting: str, chunks: int, cores: int) -> str:
    """`threads` or `processes` for a step of `chunks` chunks: rendering is CPU work, so
    threads (cheap to start) use one core and processes use them all. `dask` only when set."""
    if setting != "auto":
        return setting
    return "processes" if cores > 1 and chunks >= PROCESSES_FROM_CHUNKS else "threads"


# A task handed to a process pool (or to Dask) is pickled with its Prefect context in the
# flow's process, tenths of a second each: on processes and Dask, chunks grow (up to
# MAX_PROCESS_CHUNK) so that each process gets about CHUNKS_PER_PROCESS of them and is never
# left waiting for the next.
CHUNKS_PER_PROCESS = 4
MAX_PROCESS_CHUNK = 10_000


@dataclass(frozen=True)
class ChunkPlan:
    """How a step's due rows are cut and run: `threads`, `processes` or `dask` (at the
    scheduler's address), how many at once, how many rows per chunk task."""

    kind: str
    workers: int
    size: int
    scheduler: str | None = None


def chunk_plan(settings: Settings, due: int, cores: int) -> ChunkPlan:
    """The plan for `due` rows on a machine of `cores` cores (`ABM_CHUNK_RUNNER`,
    `ABM_CHUNK_WORKERS`, `ABM_CHUNK_SIZE`, the smallest chunk on processes). On Dask the
    cluster's size is not known here: ABM_CHUNK_WORKERS (its threads in all) or `cores`."""
    size = settings.chunk_size
    kind = chunk_runner_kind(settings.chunk_runner, -(-due // size), cores)
    workers = settings.chunk_workers or (CHUNK_THREADS if kind == "threads" else cores)
    if kind in ("processes", "dask"):
        size = max(size, min(MAX_PROCESS_CHUNK, -(-due // (workers * CHUNKS_PER_PROCESS))))
    scheduler = settings.dask_scheduler if kind == "dask" else None
    return ChunkPlan(kind, workers, size, scheduler)


def chunk_task_runner(plan: ChunkPlan) -> AbstractContextManager[TaskRunner]:
    """Prefect's process pool or thread pool, as planned; beyond one machine, the workers of
    a Dask cluster (flows/distributed.py)."""
    if plan.kind == "dask" and plan.scheduler:
        return dask_task_runner(plan.scheduler)
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
def _early_chunk_processes(
    settings: Settings, campaign_id: int, fingerprint: str
) -> Iterator[TaskRunner | None]:
    """The chunk processes, started as the flow starts when its first step will likely
    need them, and stopped when it ends; None when threads will do. Likely: the rows due
    now and the contacts changed since the campaign was last completely planned with this
    file and these rules (else every contact) would make a step of `processes`. A run with
    nothing due never starts them (seconds of start-up and shut-down for nothing)."""
    engine = get_engine(settings.database_url)
    with engine.connect() as connection:
        planned = connection.execute(
            select(Campaign.planned_through, Campaign.plan_fingerprint).where(
                Campaign.id == campaign_id
            )
        ).first()
    since = planned.planned_through if planned and planned.plan_fingerprint == fingerprint else None
    estimate = work_estimate(engine, campaign_id, since)
    if estimate is None:
        with engine.connect() as connection:
            estimate = connection.execute(select(func.count()).select_from(Contact)).scalar_one()
    plan = chunk_plan(settings, estimate, os.cpu_count() or 1)
    if plan.kind != "processes":
        yield None
        return
    with chunk_task_runner(plan) as runner:
        yield runner


# The `synccursor` row holding the change stamp the report was last built at.
REPORT_BUILT = "built:report"


def campaign_fingerprint(settings: Settings, campaign: CampaignFile) -> str:
    """What a campaign was planned with: its file as parsed and the ICP and title rules in
    effect (`stages.delivery.ledger.plan_fingerprint`)."""
    return plan_fingerprint(
        campaign,
        rules_fingerprint(load_icp_rules(settings.icp_rules)),
        rules_fingerprint(load_title_table(settings.title_rules)),
    )


def _change_stamp(engine: Engine, settings: Settings) -> str:
    """What the report and the targets table are built from, in a few indexed reads: the
    day (the report counts weeks and decays), the rules, the latest change to an account,
    contact or campaign, the latest event and stage change, and the row counts (a removal
    shows). A run that changed the ledger rebuilds them anyway."""
    with engine.connect() as connection:
        values = [
            connection.execute(statement).scalar()
            for statement in (
                select(func.max(Account.updated_at)),
                select(func.count()).select_from(Account),
                select(func.max(Contact.updated_at)),
                select(func.count()).select_from(Contact),
                select(func.max(Campaign.updated_at)),
                select(func.count()).select_from(Campaign),
                select(func.max(EngagementEvent.id)),
                select(func.max(StageChange.id)),
            )
        ]
    rules = (
        rules_fingerprint(load_icp_rules(settings.icp_rules)),
        rules_fingerprint(load_title_table(settings.title_rules)),
    )
    text = "|".join(str(v) for v in (utcnow().date(), *rules, *values))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _accounts_sent_to_since(engine: Engine, campaign_id: int, since: Any) -> list[int]:
    """The accounts whose ledger rows of this campaign changed since `since`: whose
    engagement a run's sends can have moved."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(Delivery.account_id)
                .where(Delivery.campaign_id == campaign_id, Delivery.updated_at >= since)
                .distinct()
            ).scalars()
        )


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
    run_started = utcnow()
    fingerprint = campaign_fingerprint(settings, campaign)
    with _early_chunk_processes(settings, campaign_id, fingerprint) as warm:
        title_rules = str(settings.title_rules) if settings.title_rules else None
        icp_rules = str(settings.icp_rules) if settings.icp_rules else None

        # 1. target: scores and titles brought up to date where accounts, contacts or the
        # rules changed since they were last worked out (the roles planning filters on)
        score_accounts(database_url, icp_rules)
        classify_contacts(engine, settings.title_rules)
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

        # 2. map: committee coverage, when what it is measured on changed since the
        # targets table was last made (the accounts, their people, the rules, the roles)
        required = list(campaign.audience.required_roles)
        targets_key = f"built:targets:{key}"[:80]
        targets_stamp = hashlib.sha256(
            f"{_change_stamp(engine, settings)}|{required}|{account_ids}".encode()
        ).hexdigest()
        if read_cursor(engine, targets_key) != targets_stamp:
            # quote: Prefect would otherwise walk every id looking for futures in the inputs
            coverage = map_stakeholders(database_url, quote(account_ids), required, title_rules)
            if coverage:
                create_table_artifact(
                    key=f"{artifact_key}-targets",
                    table=_targets_table(database_url, coverage),
                    description=f"Target accounts of {key} by tier, with committee coverage",
                )
            write_cursor(engine, targets_key, targets_stamp)

        # 3-4. plan, render and deliver, a chunk of contacts per task
        backend = get_backend(settings)
        released = release_expired_leases(engine, campaign_id, requeue=backend.idempotent)
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
        planned = 0
        for index, step in enumerate(campaign.steps):
            planned += plan_step(
                engine, campaign_id, key, campaign.steps, index, account_ids, roles, limit
            )
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
            return {
                **_dry_run_summary(outcomes=rehearsal),
                "left_audience_pending": left,
                "target_accounts": len(account_ids),
            }

        # 5. write back: the accounts this run's sends (or the demo's simulation) touched;
        # the nightly rescore applies time decay to every account
        if simulate:
            simulate_engagement(database_url, campaign_id)
            write_back_engagement(database_url, account_ids)
        elif rehearsal and (touched := _accounts_sent_to_since(engine, campaign_id, started)):
            write_back_engagement(database_url, touched)
        if crm_choice(settings) != "none":
            crm = push_crm_changes(database_url)  # every changed account, not just this audience
            logger.info("CRM push: %s", {k: v for k, v in crm.items() if k != "failures"})

        summary = {
            **ledger_summary(engine, campaign_id),
            "left_audience_pending": left,
            "target_accounts": len(account_ids),
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
        # the report over the whole database, when this run changed the ledger or anything
        # it is built from changed since it was last built
        stamp = _change_stamp(engine, settings)
        if (
            rehearsal
            or planned
            or released
            or settled
            or simulate
            or (read_cursor(engine, REPORT_BUILT) != stamp)
        ):
            publish_artifact(report_data(engine))
            write_cursor(engine, REPORT_BUILT, stamp)
        if limit is None:
            mark_planned(engine, campaign_id, run_started, fingerprint)
        create_markdown_artifact(
            key=f"{artifact_key}-summary",
            markdown=_summary_markdown(key, summary),
            description=f"Delivery summary of {key}",
        )
        return summary


if __name__ == "__main__":
    run_campaign()

"""One campaign over many machines: a step's chunk tasks on the workers of a Dask cluster.

The flow itself runs where Prefect put it (a work pool's worker); with ABM_CHUNK_RUNNER=dask
its `deliver_chunk` tasks go to the scheduler at ABM_DASK_SCHEDULER, which hands them to
`dask worker` processes on any machine that has this checkout, its own ABM_* settings (or
`.env` in its working folder) and reaches the same PostgreSQL. Each chunk writes to the
ledger itself; results come back through Dask, so no storage is shared but the database.

A worker that dies (SIGKILL, a machine gone) takes its chunk's claim with it. Dask runs
that chunk again on a live worker, which finds the rows still claimed and leaves them:
the ledger never hands a claimed row out twice. Once the dead worker's lease has run out,
`take_over_abandoned` releases its rows as a new run would (handed-over ones `uncertain`
unless the backend is idempotent) and the live workers deliver the rest, so the run ends
with nothing in flight."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from prefect import Task, get_run_logger, unmapped
from prefect.task_runners import TaskRunner
from sqlalchemy import func, select

from connectors.email import get_backend
from core.errors import AbmError, ConfigError
from core.settings import get_settings
from models.db import chunked, get_engine
from models.tables import Delivery, utcnow
from stages.delivery.ledger import (
    ChunkOutcome,
    DeliveryContext,
    due_delivery_ids,
    release_expired_leases,
)

HELD = ("rendered", "sending")  # claimed by a chunk, outcome not yet recorded
# A worker that dies while taking over dies holding rows again: a few rounds, then the
# rows are left (and said so) to the next run rather than waited on without end.
TAKE_OVER_ROUNDS = 3
# How long a run waits for the first worker to join the scheduler before it gives up.
WORKERS_WAIT_SECONDS = 60.0


def worker_view() -> dict[str, Any]:
    """Run on each Dask worker: the email backend its own settings choose, or why none."""
    try:
        backend = get_backend(get_settings())
    except AbmError as exc:
        return {"problem": str(exc)}
    return {"email_backend": backend.name, "idempotent": backend.idempotent}


def disagreements(flow: dict[str, Any], workers: dict[str, dict[str, Any]]) -> list[str]:
    """Workers whose settings would send otherwise than the flow's: each is named with why
    (a lease released by the flow is requeued or made uncertain by the flow's backend)."""
    found = []
    for address, view in sorted(workers.items()):
        if "problem" in view:
            found.append(f"{address}: {view['problem']}")
        elif view["email_backend"] != flow["email_backend"]:
            found.append(
                f"{address}: ABM_EMAIL_BACKEND is {view['email_backend']} there, "
                f"{flow['email_backend']} here"
            )
    return found


class DaskChunkRunner(AbstractContextManager[TaskRunner]):
    """Prefect's Dask task runner on an existing cluster, checked as it opens: the scheduler
    answers, at least one worker has joined, and every worker sends as the flow would. Dask
    is imported only here (a second of imports a run on one machine does not pay)."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self.runner: TaskRunner | None = None

    def __enter__(self) -> TaskRunner:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=self.scheduler)
        runner.__enter__()
        try:
            self._check(runner)
        except BaseException:
            runner.__exit__(None, None, None)
            raise
        self.runner = runner
        return runner

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            self.runner.__exit__(*exc)
            self.runner = None

    def _check(self, runner: Any) -> None:
        try:
            client = runner.client
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"ABM_DASK_SCHEDULER={self.scheduler}: no Dask scheduler answered ({exc}); "
                "start one with `dask scheduler` or fix the address"
            ) from None
        try:
            client.wait_for_workers(1, timeout=WORKERS_WAIT_SECONDS)
        except (OSError, TimeoutError):
            raise AbmError(
                f"no Dask worker joined the scheduler at {self.scheduler} within "
                f"{WORKERS_WAIT_SECONDS:.0f} s: start `dask worker {self.scheduler}` on each "
                "machine, from a checkout with the same ABM_* settings"
            ) from None
        views = client.run(worker_view)
        if wrong := disagreements(worker_view(), views):
            raise ConfigError("Dask workers that would send otherwise: " + "; ".join(wrong))
        get_run_logger().info(
            "chunk tasks go to %d Dask workers (%d threads) at %s",
            len(views),
            sum(client.nthreads().values()),
            self.scheduler,
        )


def dask_task_runner(scheduler: str) -> AbstractContextManager[TaskRunner]:
    """The chunk task runner of ABM_CHUNK_RUNNER=dask, as a `with` opens it."""
    return DaskChunkRunner(scheduler)


def held_rows(context: DeliveryContext) -> dict[str, Any]:
    """Rows of the step claimed by a chunk and not yet recorded: how many by state, and when
    the last of their leases runs out."""
    engine = get_engine(context.database_url)
    where = (
        Delivery.campaign_id == context.campaign_id,
        Delivery.step == context.step,
        Delivery.state.in_(HELD),
    )
    with engine.connect() as connection:
        states = dict(
            connection.execute(
                select(Delivery.state, func.count()).where(*where).group_by(Delivery.state)
            ).all()
        )
        until = connection.execute(select(func.max(Delivery.lease_until)).where(*where)).scalar()
    if isinstance(until, datetime) and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return {"states": states, "until": until}


def _wait_for_leases(context: DeliveryContext, deadline: datetime | None) -> None:
    """Until no held row of the step has a lease still running (recorded ones are no longer
    held): bounded, since a lease is never extended."""
    engine = get_engine(context.database_url)
    while True:
        with engine.connect() as connection:
            live = connection.execute(
                select(func.count()).where(
                    Delivery.campaign_id == context.campaign_id,
                    Delivery.step == context.step,
                    Delivery.state.in_(HELD),
                    Delivery.lease_until >= utcnow(),
                )
            ).scalar_one()
        if not live:
            return
        left = (deadline - utcnow()).total_seconds() if deadline else 0.0
        time.sleep(min(1.0, max(0.1, left)))


def take_over_abandoned(
    runner: TaskRunner, task: Task, context: DeliveryContext, size: int
) -> list[ChunkOutcome]:
    """After every chunk of the step has returned, rows still claimed belong to a worker that
    died: once their lease runs out they are released and what is due is delivered again by
    the live workers. Returns the outcomes of those chunks."""
    logger = get_run_logger()
    engine = get_engine(context.database_url)
    requeue = get_backend(get_settings()).idempotent
    outcomes: list[ChunkOutcome] = []
    for _ in range(TAKE_OVER_ROUNDS):
        held = held_rows(context)
        if not held["states"]:
            return outcomes
        handed = held["states"].get("sending", 0)
        wait = max(0.0, (held["until"] - utcnow()).total_seconds()) if held["until"] else 0.0
        logger.warning(
            "step %s: %d messages are still claimed though every chunk has returned: a worker "
            "died holding them. Taken over when their lease runs out (in %.0f s): %d never "
            "handed to the provider go again, %d handed over %s",
            context.step,
            sum(held["states"].values()),
            wait,
            sum(held["states"].values()) - handed,
            handed,
            "go again under the same Message-ID (the backend is idempotent)"
            if requeue
            else "become uncertain (the campaign's `uncertain:` policy settles them)",
        )
        _wait_for_leases(context, held["until"])
        release_expired_leases(engine, context.campaign_id, requeue=requeue)
        ids = due_delivery_ids(engine, context.campaign_id, context.step)
        chunks = [list(chunk) for chunk in chunked(ids, size)]
        futures = runner.map(task, {"ids": chunks, "context": unmapped(context)})
        outcomes += [future.result() for future in futures]
    if left := sum(held_rows(context)["states"].values()):
        logger.warning(
            "step %s: %d messages still claimed after %d take-overs (workers keep dying): the "
            "next run sends them once their lease has run out",
            context.step,
            left,
            TAKE_OVER_ROUNDS,
        )
    return outcomes

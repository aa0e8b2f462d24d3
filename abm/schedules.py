"""Campaign files on the schedule of the `run-campaign/run-campaign` deployment, through
Prefect's own client against the server the user configured (PREFECT_API_URL).

Each campaign gets one schedule of that deployment, named (slug) after the campaign's key
and carrying its file as the `campaign_file` parameter: scheduling the campaign again
replaces it, and `prefect deploy --all` keeps it (the deployment declares `schedules: null`
in prefect.yaml, which leaves existing schedules as they are)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.campaign_file import load_campaign
from core.errors import AbmError, ConfigError

FLOW = "run-campaign"
DEPLOYMENT = f"{FLOW}/run-campaign"
SLUG_PREFIX = "abm-campaign-"
NO_SERVER = (
    "no Prefect server is configured, and a schedule on a temporary one would vanish with "
    "it: start one with `prefect server start`, point PREFECT_API_URL at it "
    "(`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`) and deploy the flows "
    "from the checkout with `prefect deploy --all` (README: Deploying on Prefect)"
)


def schedule_slug(key: str) -> str:
    """The name of a campaign's schedule on the deployment: one schedule per campaign."""
    return f"{SLUG_PREFIX}{key}"


def checkout_relative(file: Path, checkout: Path) -> str:
    """The `campaign_file` parameter for a file: relative to the checkout the workers run
    from (the pull step makes it their working directory), absolute only when outside it."""
    if not file.is_absolute():
        file = Path.cwd() / file
    try:
        return file.resolve().relative_to(checkout.resolve()).as_posix()
    except ValueError:
        return str(file.resolve())


def checkout() -> Path:
    """Where workers run from: ABM_HOME as prefect.yaml uses it, else this folder."""
    return Path(os.environ.get("ABM_HOME") or Path.cwd())


def cron_schedule(cron: str, timezone: str) -> Any:
    """Prefect's cron schedule, or a usage error naming the option that is wrong."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AbmError(
            f"--timezone {timezone!r} is not a time zone: use an IANA name such as Europe/Berlin"
        ) from None
    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError:
        raise AbmError(
            f"--cron {cron!r} is not a cron expression: five fields, minute hour day month "
            'weekday, such as "0 9 * * 1-5" (09:00 on weekdays)'
        ) from None


def schedule_row(deployment: str, schedule: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """One schedule of a campaign deployment as `abm campaign schedules` shows it."""
    when = schedule.schedule
    params = {**defaults, **(schedule.parameters or {})}
    slug = schedule.slug or ""
    by_abm = slug.startswith(SLUG_PREFIX)
    cron = getattr(when, "cron", None)
    interval = getattr(when, "interval", None)
    if cron:
        text = cron
    elif interval is not None:
        text = f"every {interval}"
    else:
        text = str(getattr(when, "rrule", when))
    return {
        "deployment": deployment,
        "campaign": slug.removeprefix(SLUG_PREFIX) if by_abm else None,
        "campaign_file": params.get("campaign_file"),
        "cron": cron,
        "schedule": text,
        "timezone": getattr(when, "timezone", None) or "UTC",
        "active": bool(schedule.active),
        "set_by": "abm campaign schedule" if by_abm else "the deployment (prefect.yaml)",
        "slug": schedule.slug,
        "id": str(schedule.id),
    }


@contextmanager
def prefect_client() -> Iterator[Any]:
    """A client of the configured Prefect server; usage errors (exit 2) saying how to get
    one when none is configured or it does not answer."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise AbmError(NO_SERVER)
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise AbmError(
                f"the Prefect server at {url} does not answer ({type(problem).__name__}): "
                "start it with `prefect server start`, or point PREFECT_API_URL at one that runs"
            )
        yield client


def _deployment(client: Any) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        url = client.api_url
        raise AbmError(
            f"the Prefect server at {url} has no deployment {DEPLOYMENT}: deploy the flows "
            "from the checkout with `prefect deploy --all` (README: Deploying on Prefect)"
        ) from None


def schedule_campaign(file: Path, cron: str, timezone: str | None) -> dict[str, Any]:
    """Run a campaign file on `cron` (in `timezone`, by default the campaign's sending
    window's, else UTC) from now on; replaces the campaign's earlier schedule."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    key, campaign = load_campaign(file)
    zone = timezone or (campaign.sending_window.timezone if campaign.sending_window else "UTC")
    when = cron_schedule(cron, zone)
    parameters = {"campaign_file": checkout_relative(file, checkout())}
    slug = schedule_slug(key)
    with prefect_client() as client:
        deployment = _deployment(client)
        existing = [s for s in client.read_deployment_schedules(deployment.id) if s.slug == slug]
        if existing:
            client.update_deployment_schedule(
                deployment.id, existing[0].id, active=True, schedule=when, parameters=parameters
            )
        else:
            client.create_deployment_schedules(
                deployment.id,
                [
                    DeploymentScheduleCreate(
                        schedule=when, active=True, parameters=parameters, slug=slug
                    )
                ],
            )
        (schedule,) = [s for s in client.read_deployment_schedules(deployment.id) if s.slug == slug]
        row = schedule_row(DEPLOYMENT, schedule, deployment.parameters or {})
    return {**row, "campaign": key, "replaced": bool(existing), "paused": bool(deployment.paused)}


def campaign_schedules() -> list[dict[str, Any]]:
    """Every schedule of every deployment of the campaign flow, active or not."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    rows = []
    with prefect_client() as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW]))
        )
        for deployment in sorted(deployments, key=lambda d: d.name):
            for schedule in client.read_deployment_schedules(deployment.id):
                name = f"{FLOW}/{deployment.name}"
                rows.append(schedule_row(name, schedule, deployment.parameters or {}))
    return sorted(rows, key=lambda r: (r["deployment"], r["campaign"] or "", r["slug"] or ""))


def unschedule_campaign(file: Path) -> list[dict[str, Any]]:
    """Delete the schedules `abm campaign schedule` made for a campaign file (matched by its
    key, or by the file when it can no longer be read); returns what was deleted. Schedules
    that come from prefect.yaml are left alone: the next deploy would bring them back."""
    try:
        slug: str | None = schedule_slug(load_campaign(file)[0])
    except ConfigError:
        slug = None
    wanted = checkout_relative(file, checkout())
    with prefect_client() as client:
        deployment = _deployment(client)
        defaults = deployment.parameters or {}
        rows = [
            (schedule, schedule_row(DEPLOYMENT, schedule, defaults))
            for schedule in client.read_deployment_schedules(deployment.id)
        ]
        mine = [
            (schedule, row)
            for schedule, row in rows
            if row["campaign"] is not None
            and (schedule.slug == slug or row["campaign_file"] == wanted)
        ]
        if not mine:
            raise AbmError(
                f"{file} is not scheduled on {DEPLOYMENT}: `abm campaign schedules` lists what is"
            )
        for schedule, _ in mine:
            client.delete_deployment_schedule(deployment.id, schedule.id)
    return [row for _, row in mine]

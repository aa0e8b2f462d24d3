"""`prefect.yaml` as an operator uses it: a real Prefect server, a process work pool named
`abm`, `prefect deploy --all` from the checkout, a deployment run and a worker that picks it
up. Everything Prefect or abm writes goes to tmp_path, never to `.abm` or `~/.prefect`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import httpx
import pytest
from smtp_server import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
ABM = [sys.executable, "-m", "abm"]

ACCOUNTS = """domain,name,tier
three-a.example,Three A,3
three-b.example,Three B,3
one.example,One,1
"""
# Two people at each tier 3 account and two at a tier 1 account: the tier 3 nurture sends
# its first email to four people (the case study waits 7 days; tier 1 is not its audience).
CONTACTS = """email,first_name,title
ana@three-a.example,Ana,VP Engineering
bo@three-a.example,Bo,CFO
cy@three-b.example,Cy,Director of IT
dee@three-b.example,Dee,CTO
eve@one.example,Eve,CEO
fay@one.example,Fay,VP Marketing
"""
TIER3 = {"ana@three-a.example", "bo@three-a.example", "cy@three-b.example", "dee@three-b.example"}


def _stop(process: subprocess.Popen, grace: float = 15) -> None:
    """End a process started in its own session, and its children; SIGKILL if it hangs."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
        except ProcessLookupError:
            pass


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
    """Run a command to completion (or fail the test after `timeout`); its combined output."""
    process = subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process, grace=5)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(args[:4])} did not finish in {timeout:.0f} s:\n{output}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything it left running
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{' '.join(args)} exited {process.returncode}:\n{output}"
    return output


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of every command: Prefect and abm state in tmp_path only."""
    state = tmp_path / "state"
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "ABM_"))
    }
    return {
        **inherited,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # no scheduled runs of run-campaign-nightly for the worker to pick up by chance
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "ABM_HOME": str(REPO),
        "ABM_DATABASE_URL": f"sqlite:///{tmp_path / 'abm.db'}",
        "ABM_STATE_DIR": str(state),
        "ABM_OUTBOX_DIR": str(state / "outbox"),
        "ABM_EMAIL_BACKEND": "outbox",
        "ABM_LINKEDIN_MODE": "sandbox",
        "ABM_SECRET_KEY": "test-secret-key",
    }


@pytest.fixture
def prefect_server(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A real `prefect server start` on a free port, starting in the background; call the
    fixture's value to wait until it is healthy and get its API URL."""
    api = env["PREFECT_API_URL"]
    port = api.rsplit(":", 1)[1].split("/")[0]
    log_path = tmp_path / "prefect-server.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def wait_healthy(timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(
                    f"the Prefect server exited {server.returncode}:\n{log_path.read_text()}"
                )
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(
            f"the Prefect server was not healthy in {timeout:.0f} s:\n{log_path.read_text()}"
        )

    try:
        yield wait_healthy
    finally:
        _stop(server)
        log.close()


@pytest.mark.slow
def test_deploy_all_then_a_worker_runs_the_campaign_from_the_checkout(
    prefect_server, env, tmp_path
):
    # the database and data, while the server starts (both take a while)
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    _run([*ABM, "init"], env, tmp_path)
    _run([*ABM, "import", "accounts", "accounts.csv"], env, tmp_path)
    _run([*ABM, "import", "contacts", "contacts.csv"], env, tmp_path)
    _run([*ABM, "score"], env, tmp_path)
    prefect_api = prefect_server()

    _run([PREFECT, "work-pool", "create", "abm", "--type", "process"], env, tmp_path)
    _run([PREFECT, "--no-prompt", "deploy", "--all"], env, REPO)

    with httpx.Client(base_url=prefect_api, timeout=10) as api:
        nightly = api.get("/deployments/name/run-campaign/run-campaign-nightly").json()
        assert nightly["parameters"] == {"campaign_file": "campaigns/tier3-nurture.yaml"}
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 6 * * 1-5"]
        assert nightly["schedules"][0]["schedule"]["timezone"] == "Europe/London"
        # deploying switches on nothing that sends: the nightly campaign and the sequences
        # stay off until the user switches them on, the LinkedIn sync until the real API is
        # configured; only the rescore (no messages) runs
        assert [s["active"] for s in nightly["schedules"]] == [False]
        for flow_name, name, on in (
            ("advance-sequences", "advance-sequences", False),
            ("sync-engagement", "sync-engagement", False),
            ("rescore-accounts", "rescore-accounts", True),
        ):
            scheduled = api.get(f"/deployments/name/{flow_name}/{name}").json()
            assert scheduled["schedules"], scheduled
            active = [s["active"] for s in scheduled["schedules"]]
            assert active == [on], (name, active)
        deployment = api.get("/deployments/name/run-campaign/run-campaign").json()
        assert deployment["schedules"] == []
        assert deployment["work_pool_name"] == "abm"
        assert deployment["entrypoint"] == "flows/campaign.py:run_campaign"
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]

    # a campaign file scheduled from the command line, relative to the checkout, outlives
    # the next `prefect deploy --all`
    tier1 = REPO / "campaigns" / "tier1-executive-programme.yaml"
    _run([*ABM, "campaign", "schedule", str(tier1), "--cron", "0 9 * * 1-5"], env, tmp_path)
    _run([PREFECT, "--no-prompt", "deploy", "--all"], env, REPO)
    schedules = subprocess.run(
        [*ABM, "campaign", "schedules", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert schedules.returncode == 0, schedules.stderr
    listed = json.loads(schedules.stdout)
    by_abm = [row for row in listed if row["campaign"] == "tier1-executive-programme"]
    assert [(r["deployment"], r["campaign_file"], r["cron"], r["active"]) for r in by_abm] == [
        (
            "run-campaign/run-campaign",
            "campaigns/tier1-executive-programme.yaml",
            "0 9 * * 1-5",
            True,
        )
    ]
    assert by_abm[0]["timezone"] == "Europe/London"  # the campaign's sending window's
    nightly_rows = [r for r in listed if r["deployment"] == "run-campaign/run-campaign-nightly"]
    assert [r["active"] for r in nightly_rows] == [False]
    _run([*ABM, "campaign", "unschedule", str(tier1)], env, tmp_path)

    started = _run(
        [
            PREFECT,
            "deployment",
            "run",
            "run-campaign/run-campaign",
            "--param",
            "campaign_file=campaigns/tier3-nurture.yaml",
        ],
        env,
        tmp_path,
    )
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
    # the worker works elsewhere: the relative campaign path only resolves if the pull
    # step moved the run into the checkout
    worker = _run([PREFECT, "worker", "start", "--pool", "abm", "--run-once"], env, tmp_path, 120)

    with httpx.Client(base_url=prefect_api, timeout=10) as api:
        flow_run = api.get(f"/flow_runs/{flow_run_id}").json()
    assert flow_run["state"]["type"] == "COMPLETED", worker
    assert flow_run["parameters"]["campaign_file"] == "campaigns/tier3-nurture.yaml"
    emails = sorted((tmp_path / "state" / "outbox").glob("*.eml"))
    assert len(emails) == len(TIER3), worker
    recipients = {
        message_from_bytes(path.read_bytes(), policy=default)["To"].addresses[0].addr_spec
        for path in emails
    }
    assert recipients == TIER3

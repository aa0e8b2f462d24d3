"""`python -m bench`: the orchestrator end to end beside the naive Prefect way and the raw
limits, per size, in one command.

This process only orchestrates: it runs the loopback SMTP server (a thread) and a temporary
Prefect server (a subprocess, started once and timed on its own), and starts every
measurement in a fresh child process (`bench.raw`, `bench.naive`, `bench.e2e`), so that each
size's peak memory is its own and no measured code shares a Python interpreter with the
SMTP server it talks to. Every run gets a fresh database and state folder. Prefect's own log
and the children's output go to files in the work folder, never to the terminal."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, fresh_database, is_postgres_url

DEFAULT_SIZES = (10_000, 100_000)
GOALS = {
    "outbox_vs_naive_x": 100.0,
    "smtp_vs_naive_x": 10.0,
    "outbox_vs_raw_renders": 0.5,
    "smtp_vs_bare_smtplib": 0.8,
}
CLICKS_GOAL = 1000.0  # tracked-link clicks a second through the redirect, each stored
CONSOLE_GOAL_MS = 300.0  # the slowest console page's p95 (bench.console): lower is better


class BenchError(Exception):
    """A measurement failed; the message names the log that says why."""


_STARTED = time.monotonic()


def _say(message: str) -> None:
    """Progress on stderr, with the time since the harness started."""
    print(f"[{time.monotonic() - _STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


@contextmanager
def _stdio_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr file descriptors at `path` for a while, so
    a subprocess started meanwhile (the Prefect server) writes there, not to the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@contextmanager
def prefect_server(work: Path) -> Iterator[tuple[str, float]]:
    """(API URL, seconds to start) of a temporary local Prefect server with a fresh
    database of its own (its migrations are part of the start-up), as `abm demo` uses."""
    from abm.prefect_runtime import _file_logging_config

    log = work / "prefect-server.log"
    for name in [name for name in os.environ if name.startswith("PREFECT_")]:
        del os.environ[name]
    os.environ.update(
        PREFECT_HOME=str(work / "prefect-server"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_SETTINGS_PATH=str(_file_logging_config(log)),
    )
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    started = time.perf_counter()
    with _stdio_to(log):
        server.start()
    try:
        yield server.api_url, time.perf_counter() - started
    finally:
        with _stdio_to(log):
            server.stop()


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def settle(max_wait_s: float = 60.0, busy_below: float = 0.15) -> float:
    """Wait until the CPUs are at least 85% idle over one second (the temporary Prefect
    server digests a run's events for a while after it), so that each measurement starts on
    a quiet machine; returns the seconds waited. Gives up after `max_wait_s`, and does not
    wait where /proc/stat is missing."""
    started = time.monotonic()
    try:
        idle, total = _cpu_times()
        while time.monotonic() - started < max_wait_s:
            time.sleep(1.0)
            idle2, total2 = _cpu_times()
            busy = 1 - (idle2 - idle) / max(1, total2 - total)
            if busy < busy_below:
                break
            idle, total = idle2, total2
    except OSError:
        pass
    return round(time.monotonic() - started, 1)


@contextmanager
def _smtp(enabled: bool) -> Iterator[tuple[str | None, Any]]:
    if not enabled:
        yield None, None
        return
    try:
        from bench.smtp_sink import smtp_sink
    except ImportError as exc:  # aiosmtpd is a development dependency
        raise BenchError(
            f"--smtp needs aiosmtpd ({exc}): pip install aiosmtpd, or --no-smtp"
        ) from None
    with smtp_sink() as (url, handler):
        yield url, handler


class Runner:
    """Starts the measuring child processes with a clean environment (no `ABM_*` or
    `PREFECT_*` from the caller, no `.env`: they run in the work folder)."""

    def __init__(self, work: Path, api_url: str) -> None:
        self.work = work
        self.log = work / "children.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ABM_", "PREFECT_"))}
        env.update(
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(work / "prefect-client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
        )
        self.env = env

    def run(
        self, module: str, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        out = self.work / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", f"bench.{module}", *argv, "--out", str(out)]
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(f"\n$ {' '.join(command)}\n")
            handle.flush()
            done = subprocess.run(
                command,
                env={**self.env, **(env or {})},
                cwd=self.work,
                stdout=handle,
                stderr=handle,
                check=False,
            )
        if done.returncode != 0:
            tail = "".join(self.log.read_text(encoding="utf-8").splitlines(True)[-15:])
            raise BenchError(f"bench.{module} ({name}) failed, exit {done.returncode}:\n{tail}")
        return json.loads(out.read_text(encoding="utf-8"))

    def generate(self, contacts: int, folder: Path) -> None:
        """The demo dataset for one size, written by a child (it holds every row in memory)."""
        code = (
            "import sys; from pathlib import Path; from abm.demo_data import write_demo_csvs; "
            "write_demo_csvs(Path(sys.argv[1]), contacts=int(sys.argv[2]))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(folder), str(contacts)],
            env=self.env,
            cwd=self.work,
            check=True,
        )


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import sqlite3

    import prefect
    import sqlalchemy

    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _postgres_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator to three significant digits (None when either is missing)."""
    if not numerator or not denominator:
        return None
    return float(f"{numerator / denominator:.3g}")


def handled(run: dict[str, Any]) -> int:
    """Contacts whose ledger row reached a final state (sent, skipped or failed); rows left
    claimed or planned by a run that ended early are not counted as done."""
    summary = run["summary"]
    return summary["planned"] - summary["pending"] - summary["uncertain"]


def complete(run: dict[str, Any]) -> bool:
    """Every planned message reached a final state in this run."""
    return run["summary"]["pending"] == 0 and run["summary"]["uncertain"] == 0


def bare_bound_per_s(raw: dict[str, Any], cores: int) -> float | None:
    """Contacts/s if every core did nothing per contact but the bare pieces: one bulk-inserted
    row, one bare Jinja2 render and one bare file write, spread perfectly over `cores`. No
    real run can reach it (no CSV parsing, MIME, ledger, scoring or Prefect in it): it shows
    how far this machine's own limits are from the end-to-end figures."""
    pieces = ("raw_bulk_inserts_per_s", "raw_renders_per_s", "bare_file_writes_per_s")
    rates = [raw.get(key) for key in pieces]
    if not all(rates):
        return None
    return round(cores / sum(1 / rate for rate in rates), 1)


def size_result(
    contacts: int,
    outbox: dict[str, Any],
    smtp: dict[str, Any] | None,
    naive: dict[str, Any],
    raw: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one size, with the naive and raw ones of the same harness run."""
    stages = {name: stage["wall_s"] for name, stage in outbox["stages"].items()}
    stages_total = sum(stages.values())
    naive_smtp = naive.get("smtp", {}).get("contacts_per_s")
    naive_outbox = naive["outbox"]["contacts_per_s"]
    result: dict[str, Any] = {
        "contacts": contacts,
        "e2e_contacts_per_s": round(handled(outbox) / outbox["e2e_s"], 1),
        "complete": complete(outbox),
        "naive_contacts_per_s": naive_smtp or naive_outbox,
        "naive_variant": "smtp" if naive_smtp else "outbox",
        "naive_sample": naive["sample"],
        "naive_outbox_contacts_per_s": naive_outbox,
        "raw_renders_per_s": raw["raw_renders_per_s"],
        "full_messages_per_s": raw["full_messages_per_s"],
        "raw_bulk_inserts_per_s": raw["raw_bulk_inserts_per_s"],
        "bare_smtplib_msgs_per_s": raw.get("bare_smtplib_msgs_per_s"),
        "bare_file_writes_per_s": raw.get("bare_file_writes_per_s"),
        "bare_bound_contacts_per_s": bare_bound_per_s(raw, os.cpu_count() or 1),
        "task_runs": outbox["task_runs"],
        "task_runs_per_100k": round(outbox["task_runs"] * 100_000 / contacts, 1),
        "peak_rss_mb": outbox["peak_rss_mb"],
        "peak_rss_mb_by_stage": outbox["peak_rss_mb_by_stage"],
        "chunk_process_peak_rss_mb": outbox.get("chunk_process_peak_rss_mb"),
        "e2e_s": outbox["e2e_s"],
        "import_s": outbox["import_s"],
        "import_contacts_per_s": round(contacts / outbox["import_contacts_s"], 1),
        "flow_s": outbox["flow_s"],
        "flow_contacts_per_s": round(contacts / outbox["flow_s"], 1),
        "stage_wall_s": {**stages, "flow_outside_tasks": round(outbox["flow_s"] - stages_total, 2)},
        "deliver_chunk_busy_s": outbox["stages"].get("deliver-chunk", {}).get("busy_s"),
        "prefect_import_s": outbox["prefect_import_s"],
        "migrate_s": outbox["migrate_s"],
        "imported": outbox["imported"],
        "rejected_rows": outbox["rejected"],
        "messages_sent": outbox["summary"]["sent"],
        "messages_skipped": outbox["summary"]["skipped"],
        "messages_deferred": outbox["summary"]["deferred"],
        "messages_pending": outbox["summary"]["pending"] + outbox["summary"]["uncertain"],
        "ledger_rows": outbox["ledger_rows"],
        "eml_files": outbox["eml_files"],
        "load_avg_after": outbox["load_avg_after"],
    }
    if smtp is not None:
        result.update(
            e2e_smtp_contacts_per_s=round(handled(smtp) / smtp["e2e_s"], 1),
            smtp_complete=complete(smtp),
            smtp_messages_pending=smtp["summary"]["pending"] + smtp["summary"]["uncertain"],
            e2e_smtp_s=smtp["e2e_s"],
            smtp_flow_s=smtp["flow_s"],
            smtp_messages_sent=smtp["summary"]["sent"],
            smtp_messages_received=smtp["received_by_server"],
            smtp_peak_rss_mb=smtp["peak_rss_mb"],
            smtp_task_runs=smtp["task_runs"],
            e2e_smtp_messages_per_s=round(smtp["summary"]["sent"] / smtp["e2e_s"], 1),
        )
    result.update(
        outbox_vs_naive_x=_ratio(result["e2e_contacts_per_s"], naive_smtp or naive_outbox),
        outbox_vs_naive_outbox_x=_ratio(result["e2e_contacts_per_s"], naive_outbox),
        smtp_vs_naive_x=_ratio(result.get("e2e_smtp_contacts_per_s"), naive_smtp),
        outbox_vs_raw_renders=_ratio(result["e2e_contacts_per_s"], raw["raw_renders_per_s"]),
        outbox_vs_full_messages=_ratio(result["e2e_contacts_per_s"], raw["full_messages_per_s"]),
        outbox_vs_bare_bound=_ratio(
            result["e2e_contacts_per_s"], result["bare_bound_contacts_per_s"]
        ),
        smtp_vs_bare_smtplib=_ratio(
            result.get("e2e_smtp_contacts_per_s"), raw.get("bare_smtplib_msgs_per_s")
        ),
    )
    result["goals_met"] = {
        name: result[name] >= goal for name, goal in GOALS.items() if result[name] is not None
    }
    return result


class Measurements:
    """The child runs of one harness run, each with a fresh database and state folder."""

    def __init__(
        self, args: argparse.Namespace, work: Path, runner: Runner, smtp: tuple[str | None, Any]
    ) -> None:
        self.args = args
        self.work = work
        self.runner = runner
        self.smtp_url, self.handler = smtp
        self.server_url = args.database_url if is_postgres_url(args.database_url) else None
        self.smtp_args: tuple[str, ...] = ("--smtp-url", self.smtp_url) if self.smtp_url else ()
        self.e2e_args: tuple[str, ...] = (
            ("--task-workers", str(args.task_workers)) if args.task_workers else ()
        ) + (("--chunk-runner", args.chunk_runner) if args.chunk_runner else ())

    def _run(
        self, module: str, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        with fresh_database(self.server_url, self.work / "db", name) as url:
            state = self.work / "runs" / name
            waited = settle(self.args.settle_s)
            if waited >= 2:
                _say(f"  (waited {waited:.0f} s for a quiet machine)")
            result = self.runner.run(
                module, name, "--state-dir", str(state), "--database-url", url, *argv, env=env
            )
            result["settled_after_s"] = waited
            return result

    def raw(self) -> dict[str, Any]:
        _say("raw limits: bare Jinja2 renders, bulk inserts, one-connection smtplib ...")
        a = self.args
        return self._run(
            "raw",
            "raw",
            *("--renders", str(a.renders), "--inserts", str(a.inserts)),
            *("--smtp-messages", str(a.smtp_messages), *self.smtp_args),
            *("--file-writes", str(a.file_writes)),
        )

    def naive(self) -> dict[str, Any]:
        """Each variant in a child of its own, after the machine is quiet again: run back
        to back, the second started while the server still digested the first's task runs,
        which made it look up to twice as slow as it is."""
        _say(f"naive Prefect way on {self.args.naive_sample} contacts ...")
        result: dict[str, Any] = {}
        for variant in ("smtp", "outbox") if self.smtp_url else ("outbox",):
            name = f"naive_{variant}"
            part = self._run(
                "naive",
                name,
                "--sample",
                str(self.args.naive_sample),
                "--only",
                variant,
                *self.smtp_args,
            )
            shutil.rmtree(self.work / "runs" / name / "outbox", ignore_errors=True)
            result.update(sample=part["sample"], database=part["database"])
            result[variant] = part[variant]
            result["peak_rss_mb"] = max(result.get("peak_rss_mb", 0.0), part["peak_rss_mb"])
        return result

    def send_limits(self, contacts: int) -> dict[str, Any]:
        """SMTP throughput of the send path with every send limit set but none binding,
        beside none set (`bench.send_limits`): what rate limiting costs."""
        _say(f"send limits on {contacts:,} contacts over SMTP: limited and unlimited rounds ...")
        assert self.smtp_url is not None
        result = self._run(
            "send_limits",
            "send_limits",
            *("--contacts", str(contacts), "--smtp-url", self.smtp_url),
        )
        _say(f"  limited / unlimited: {result['limited_vs_unlimited_overall']}")
        return result

    def clicks(self, clicks: int) -> dict[str, Any]:
        """Tracked-link clicks through the redirect server, each stored and counted
        (`bench.click_redirect`)."""
        _say(f"{clicks:,} tracked-link clicks through the redirect server ...")
        result = self._run("click_redirect", "click_redirect", "--clicks", str(clicks))
        _say(f"  {result['clicks_per_s']:,} clicks/s, {result['stored']:,} stored")
        return result

    def console(self, repeat: int) -> dict[str, Any]:
        """The console's pages over 30,000 accounts and 100,000 ledger rows (`bench.console`)."""
        _say(f"console pages, {repeat} requests each ...")
        result = self._run("console", "console", "--repeat", str(repeat))
        _say(f"  slowest page p95: {result['slowest_p95_ms']} ms")
        return result

    def e2e(self, contacts: int) -> dict[str, dict[str, Any]]:
        """The outbox run (and, up to --smtp-max-contacts, the SMTP run) of one size."""
        data = self.work / "data" / str(contacts)
        _say(f"{contacts:,} contacts: generating the demo dataset ...")
        self.runner.generate(contacts, data)
        backends = ["outbox"]
        if self.smtp_url and contacts <= self.args.smtp_max_contacts:
            backends.append("smtp")
        runs: dict[str, dict[str, Any]] = {}
        for backend in backends:
            _say(f"{contacts:,} contacts: end to end to the {backend} ...")
            name = f"e2e_{contacts}_{backend}"
            before = self.handler.messages if self.handler else 0
            argv = ("--data-dir", str(data), "--backend", backend)
            smtp_args = self.smtp_args if backend == "smtp" else ()
            result = self._run("e2e", name, *argv, *smtp_args, *self.e2e_args)
            result["received_by_server"] = self.handler.messages - before if self.handler else 0
            result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            runs[backend] = result
            summary = result["summary"]
            line = f"  {backend}: {summary['sent']:,} sent in {result['e2e_s']} s"
            if summary["pending"] or summary["uncertain"]:
                line += f", INCOMPLETE: {summary['pending']:,} still claimed or planned"
            _say(line)
            if not self.args.keep:
                shutil.rmtree(self.work / "runs" / name, ignore_errors=True)  # 1M .eml: ~6 GB
        if not self.args.keep:
            shutil.rmtree(data, ignore_errors=True)
        return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement: the raw limits, each size end to end, then the naive way (last,
    because its task runs keep the temporary Prefect server busy for a while after)."""
    args.keep = args.keep or args.work_dir is not None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="abm-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            smtp = stack.enter_context(_smtp(args.smtp))
            _say("starting a temporary Prefect server ...")
            api_url, startup_s = stack.enter_context(prefect_server(work))
            _say(f"  Prefect server up in {startup_s:.1f} s")
            report["machine"] = machine()  # imports Prefect: only once its settings are made
            measure = Measurements(args, work, Runner(work, api_url), smtp)
            if measure.server_url:
                report["machine"]["postgresql"] = _postgres_version(measure.server_url)
            raw = measure.raw()
            runs = {contacts: measure.e2e(contacts) for contacts in args.contacts}
            if args.send_limits and measure.smtp_url:
                report["send_limits"] = measure.send_limits(args.send_limits)
            if args.clicks:
                report["clicks"] = measure.clicks(args.clicks)
            if args.console_repeat:
                report["console"] = measure.console(args.console_repeat)
            naive = measure.naive()
    except BaseException:
        _say(f"stopped; the logs are in {work}")
        raise
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sizes = {
        str(contacts): size_result(contacts, run["outbox"], run.get("smtp"), naive, raw)
        for contacts, run in runs.items()
    }
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.update(
        database="postgresql" if measure.server_url else "sqlite",
        prefect_server_start_s=round(startup_s, 2),
        naive=naive,
        raw=raw,
        sizes=sizes,
        memory=_memory(sizes),
        chunk_runner=_chunk_runner(runs),
        harness_s=round(time.perf_counter() - started, 1),
        work_dir=str(work) if args.keep else None,
    )
    return report


def _chunk_runner(runs: dict[int, dict[str, dict[str, Any]]]) -> Any:
    """Where the flows ran their chunk tasks, and how many at once, as the e2e runs said."""
    found = {run.get("chunk_runner") for size in runs.values() for run in size.values()}
    return found.pop() if len(found) == 1 else sorted(map(str, found))


def _memory(sizes: dict[str, Any]) -> dict[str, Any]:
    """Peak memory per size, of the whole run and of the flow alone, and their growth."""
    peaks = {size: result["peak_rss_mb"] for size, result in sizes.items()}
    flow = {size: result["peak_rss_mb_by_stage"].get("flow") for size, result in sizes.items()}
    workers = {size: result.get("chunk_process_peak_rss_mb") for size, result in sizes.items()}
    memory: dict[str, Any] = {
        "peak_rss_mb": peaks,
        "flow_peak_rss_mb": flow,
        "chunk_process_peak_rss_mb": workers,
    }
    ordered = sorted(sizes, key=int)
    if len(ordered) > 1:
        small, large = ordered[0], ordered[-1]
        memory["contacts_x"] = round(int(large) / int(small), 1)
        memory["peak_rss_x"] = _ratio(peaks[large], peaks[small])
        memory["flow_peak_rss_x"] = _ratio(flow[large], flow[small])
    return memory


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


ROWS: tuple[tuple[str, str, float | None], ...] = (
    ("e2e to outbox, contacts/s", "e2e_contacts_per_s", None),
    ("  every message done (outbox)", "complete", None),
    ("e2e over SMTP, contacts/s", "e2e_smtp_contacts_per_s", None),
    ("  every message done (SMTP)", "smtp_complete", None),
    ("naive Prefect way, contacts/s", "naive_contacts_per_s", None),
    ("naive way to the outbox, contacts/s", "naive_outbox_contacts_per_s", None),
    ("outbox / naive (goal >= 100x)", "outbox_vs_naive_x", GOALS["outbox_vs_naive_x"]),
    ("SMTP / naive (goal >= 10x)", "smtp_vs_naive_x", GOALS["smtp_vs_naive_x"]),
    ("bare Jinja2 renders/s", "raw_renders_per_s", None),
    ("composer full messages/s (no DB)", "full_messages_per_s", None),
    ("outbox / raw renders (goal >= 0.5)", "outbox_vs_raw_renders", GOALS["outbox_vs_raw_renders"]),
    ("bare file writes/s", "bare_file_writes_per_s", None),
    (
        "bare bound (insert + render + file, all cores), contacts/s",
        "bare_bound_contacts_per_s",
        None,
    ),
    ("outbox / bare bound", "outbox_vs_bare_bound", None),
    ("bare smtplib, one connection, msgs/s", "bare_smtplib_msgs_per_s", None),
    ("SMTP / bare smtplib (goal >= 0.8)", "smtp_vs_bare_smtplib", GOALS["smtp_vs_bare_smtplib"]),
    ("bare bulk inserts/s", "raw_bulk_inserts_per_s", None),
    ("tracked-link clicks/s, stored (goal >= 1,000)", "clicks_per_s", CLICKS_GOAL),
    ("console, slowest page p95, ms (goal <= 300)", "slowest_p95_ms", CONSOLE_GOAL_MS),
    ("import, contacts/s", "import_contacts_per_s", None),
    ("e2e to outbox, s", "e2e_s", None),
    ("  import, s", "import_s", None),
    ("  flow, s", "flow_s", None),
    ("e2e over SMTP, s", "e2e_smtp_s", None),
    ("messages sent (outbox)", "messages_sent", None),
    ("messages left claimed (outbox)", "messages_pending", None),
    ("messages sent (SMTP)", "smtp_messages_sent", None),
    ("messages left claimed (SMTP)", "smtp_messages_pending", None),
    (".eml files / ledger rows", "eml_files", None),
    ("task runs", "task_runs", None),
    ("task runs per 100k contacts", "task_runs_per_100k", None),
    ("peak RSS, MB (whole run)", "peak_rss_mb", None),
    ("peak RSS, MB (import only)", "import_peak_rss_mb", None),
    ("peak RSS, MB (flow only)", "flow_peak_rss_mb", None),
    ("peak RSS, MB (largest chunk process)", "chunk_process_peak_rss_mb", None),
)


def _rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, one cell per size) for every row of ROWS, goals marked."""
    rows = []
    for label, key, goal in ROWS:
        cells = []
        for result in report["sizes"].values():
            if key in ("import_peak_rss_mb", "flow_peak_rss_mb"):
                value: Any = result["peak_rss_mb_by_stage"].get(key.split("_")[0])
            elif key == "eml_files":
                value = f"{result['eml_files']:,} / {result['ledger_rows']:,}"
            elif key == "clicks_per_s":  # one run, not per size
                value = report.get("clicks", {}).get(key)
            elif key == "slowest_p95_ms":  # one run, not per size; lower is better
                value = report.get("console", {}).get(key)
            else:
                value = result.get(key)
            text = _fmt(value)
            if goal is not None and value is not None:
                met = value <= goal if key == "slowest_p95_ms" else value >= goal
                text += " ok" if met else " MISSED"
            cells.append(text)
        rows.append((label.strip(), cells) if label.startswith("  ") else (label, cells))
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The table and its notes as GitHub markdown, for the README."""
    sizes = [f"{int(size):,} contacts" for size in report["sizes"]]
    lines = ["| | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _rows(report)]
    return "\n".join(lines) + "\n\n" + "\n".join(_notes(report)) + "\n"


def table(report: dict[str, Any]) -> str:
    """The human-readable table: one column per size."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=f"abm-orchestrator benchmark ({report['database']})")
    grid.add_column("")
    for size in report["sizes"]:
        grid.add_column(f"{int(size):,} contacts", justify="right")
    for label, cells in _rows(report):
        grid.add_row(label, *cells)
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(grid)
    return console.export_text() + "\n".join(_notes(report)) + "\n"


def _notes(report: dict[str, Any]) -> list[str]:
    """What the table needs beside it: machine, server start-up, samples, warnings."""
    m = report["machine"]
    notes = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, "
        f"Python {m['python']}, Prefect {m['prefect']}, SQLite {m['sqlite']}"
        + (f", PostgreSQL {m['postgresql']}" if "postgresql" in m else "")
        + "; load average "
        f"{m['load_avg_at_start'][0]} at start, {m['load_avg_at_end'][0]} at end.",
        f"Temporary Prefect server start-up (fresh database, migrations): "
        f"{report['prefect_server_start_s']} s, not counted in the flow times.",
        f"Naive way measured on {report['naive']['sample']} contacts "
        "(one task per contact, new SMTP connection each, one ORM row each).",
        f"Chunk tasks ran on: {report.get('chunk_runner', report.get('task_workers'))}. "
        "e2e contacts/s counts "
        "contacts whose message reached a final state (sent, skipped, failed), over import "
        "plus flow time.",
    ]
    incomplete = [
        f"{int(size):,} ({which})"
        for size, result in report["sizes"].items()
        for which, done in (("outbox", result["complete"]), ("SMTP", result.get("smtp_complete")))
        if done is False
    ]
    if incomplete:
        notes.append(
            "WARNING: runs that ended with messages still claimed or planned: "
            + ", ".join(incomplete)
            + " (see the Prefect log in the work folder)."
        )
    limits = report.get("send_limits")
    if limits:
        notes.append(
            f"Send limits set but not binding, over SMTP: {limits['limited_vs_unlimited_overall']}"
            f"x the throughput with none ({limits['pairs']} rounds of each on "
            f"{limits['messages_per_round']:,} messages; per pair "
            f"{limits['limited_vs_unlimited_per_pair']}); by the sending process's CPU time "
            f"per message, {limits['cpu_limited_vs_unlimited']}x. Timed alone, the limits take "
            f"{limits['limits_ms_per_chunk']} ms a chunk ({limits['limits_share_of_chunk']:.2%} "
            f"of its send time), the circuit breaker {limits['breaker_ms_per_chunk']} ms "
            f"({limits['breaker_share_of_chunk']:.2%})."
        )
    clicks = report.get("clicks")
    if clicks:
        notes.append(
            f"Tracked links: {clicks['clicks']:,} clicks through the redirect server "
            f"(uvicorn, one process, {clicks['database']}) from {clicks['connections']} "
            f"keep-alive loopback connections, {clicks['clicks_per_s']:,} clicks/s, each "
            f"answered 302 once stored; {clicks['stored']:,} stored, latency p50 "
            f"{clicks['latency_ms_p50']} ms, p99 {clicks['latency_ms_p99']} ms, server peak "
            f"{clicks['server_peak_rss_mb']} MB."
        )
    console = report.get("console")
    if console:
        pages = ", ".join(f"{row['page']} {row['p95_ms']}" for row in console["pages"])
        notes.append(
            f"Console ({console['database']}, {console['accounts']:,} accounts, "
            f"{console['ledger_rows']:,} ledger rows, {console['repeat']} requests a page), "
            f"p95 ms: {pages}."
        )
    memory = report["memory"]
    if "peak_rss_x" in memory:
        notes.append(
            f"Memory: {memory['contacts_x']}x the contacts -> {memory['peak_rss_x']}x peak RSS "
            f"(flow alone: {memory['flow_peak_rss_x']}x)."
        )
    return notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end campaign throughput beside the naive Prefect way and the raw "
        "limits, per size; each size in a fresh process, database and state folder.",
    )
    parser.add_argument(
        "--contacts",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="sizes to run (default: 10000 100000)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (postgresql+psycopg://...): every run gets a fresh "
        "database on it, dropped afterwards; default: fresh SQLite files",
    )
    parser.add_argument(
        "--smtp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also deliver over SMTP to a loopback aiosmtpd server (default: yes)",
    )
    parser.add_argument(
        "--smtp-max-contacts",
        type=int,
        default=100_000,
        metavar="N",
        help="larger sizes go to the outbox only (default: 100000)",
    )
    parser.add_argument(
        "--task-workers",
        type=int,
        default=None,
        metavar="N",
        help="run the end-to-end flows with at most N chunk tasks at once "
        "(ABM_CHUNK_WORKERS; default: 4 threads or a process per core)",
    )
    parser.add_argument(
        "--chunk-runner",
        choices=("threads", "processes"),
        default=None,
        help="where chunk tasks run (ABM_CHUNK_RUNNER; default: threads)",
    )
    parser.add_argument(
        "--send-limits",
        type=int,
        default=0,
        metavar="N",
        help="also measure, on N contacts over SMTP, the send path with every send limit "
        "set but none binding beside none set (default: not measured)",
    )
    parser.add_argument(
        "--clicks",
        type=int,
        default=20_000,
        metavar="N",
        help="tracked-link clicks through the redirect server, each stored "
        "(bench.click_redirect; default: 20000, 0: not measured)",
    )
    parser.add_argument(
        "--console-repeat",
        type=int,
        default=20,
        metavar="N",
        help="time each console page N times over 30,000 accounts and 100,000 ledger rows "
        "(bench.console; default: 20, 0: not measured)",
    )
    parser.add_argument("--naive-sample", type=int, default=500, metavar="N")
    parser.add_argument("--renders", type=int, default=5000, metavar="N", help="raw renders")
    parser.add_argument(
        "--inserts", type=int, default=100_000, metavar="N", help="raw bulk inserts"
    )
    parser.add_argument(
        "--smtp-messages", type=int, default=5000, metavar="N", help="bare smtplib loop"
    )
    parser.add_argument(
        "--file-writes", type=int, default=10_000, metavar="N", help="bare file writes"
    )
    parser.add_argument("--work-dir", default=None, help="keep everything here (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--out", default=None, help="also write the JSON object to this file")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as markdown (for the README)"
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=60.0,
        metavar="S",
        help="wait up to S seconds for a quiet machine before each measurement (default: 60)",
    )
    parser.add_argument(
        "--from-json", default=None, metavar="FILE", help="print a saved report; measure nothing"
    )
    args = parser.parse_args(argv)
    if args.database_url and not is_postgres_url(args.database_url):
        if not args.database_url.startswith("sqlite"):
            parser.error("--database-url must be postgresql+psycopg://... (SQLite is the default)")
        args.database_url = None
    if any(n < 1 for n in args.contacts):
        parser.error("--contacts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        try:
            report = run(args)
        except BenchError as exc:
            _say(str(exc))
            return 1
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.markdown:
        print(markdown(report), end="")
    else:
        print(table(report), end="")
    return 0

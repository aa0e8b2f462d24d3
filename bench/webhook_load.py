"""The webhook receiver under load: `python -m bench.webhook_load [--events N] [--posters P]
[--workers W] [--database-url URL] [--kill/--no-kill] [--json] [--out FILE]`.

Goal (issue 22): at least 5,000 signed SendGrid events/s sustained on loopback, p99 batch
latency under 1 s, and no acknowledged event missing after the server is SIGKILLed mid-load.

It needs a PostgreSQL server (--database-url, else ABM_BENCH_POSTGRES_URL or
ABM_TEST_POSTGRES_URL): it creates a database of its own there and drops it at the end. In
it, a ledger of sent messages (people ten to an account, as in the demo dataset, each
message with a Message-ID of the form the composer writes). Every message then gets the
events SendGrid would post about it: processed, delivered (or a bounce, some of them
blocks), deferred now and then, opens (some twice), clicks with their URL, a few
unsubscribes and spam reports; each event carries SendGrid's fields (sg_event_id,
sg_message_id, ip, useragent, ...) and our custom_args (abm_message_id, campaign, step,
variant), so the bodies are the size SendGrid's are (~370 bytes an event). The events are
cut into batches of 1,000 in time order.

The real `abm webhooks serve --workers W` runs as a subprocess; P poster processes share the
batches and each posts its share one after the other on a keep-alive connection, signing
every post as SendGrid does (ECDSA P-256 over timestamp + body, a fresh timestamp each post).
A 503 is retried after its Retry-After; a post with no answer (connection refused or
dropped) is retried as SendGrid retries, and the receiver de-duplicates it.

Two phases, one database:
- steady: all batches posted once; events/s over the wall time, p50/p99 latency of the
  posts that got 2xx, and the CPU seconds of the server (all its processes), the posters
  and PostgreSQL (its postmaster and backends), which share this machine's cores;
- kill (--kill, default on): a new set of batches; after about a third of them, the server's
  whole process group gets SIGKILL, and it is started again a second later. Every batch
  that got a 2xx (acknowledged) must have all its storable events in the database; the
  posts that got no answer are posted again and counted, and so are the re-posted batches
  that had already been committed (the window between commit and response).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import (
    REPO_ROOT,
    SECRET_KEY,
    free_port,
    fresh_database,
    is_postgres_url,
    seed_sent_ledger,
    set_message_ids,
    write_result,
)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SENDER_DOMAIN = "demo.example"
CAMPAIGN_KEY = "bench-webhooks"
# SendGrid event -> stored? (processed, deferred and blocks are not engagement)
STORED = {"delivered", "open", "click", "bounce", "unsubscribe", "spamreport"}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
)
URLS = (
    "https://demo.example/guides/stitching-tools?utm_source=abm&utm_medium=email",
    "https://demo.example/pricing?utm_source=abm&utm_medium=email&utm_campaign=bench",
    "https://demo.example/customers/line-speed?utm_source=abm&utm_medium=email",
)


# ---- the data: a ledger of sent messages, and SendGrid's events about them ----------------


def seed_ledger(database_url: str, messages: int) -> list[tuple[str, str]]:
    """`messages` sent messages (two steps for each of messages/2 people) in a fresh
    database; their (Message-ID, recipient) pairs."""
    from models.tables import utcnow

    sent = utcnow() - timedelta(hours=2)
    roles = ("decision_maker", "specifier", "influencer", "user", "reviewer")
    rows = seed_sent_ledger(
        database_url, messages, CAMPAIGN_KEY, ("intro", "follow-up"), sent, roles
    )
    pairs = {}
    for delivery_id, _, _, email in rows:
        digest = hashlib.sha256(f"{SECRET_KEY}:{delivery_id}".encode()).hexdigest()[:12]
        pairs[delivery_id] = (f"<abm.{delivery_id}.{digest}@{SENDER_DOMAIN}>", email)
    set_message_ids(database_url, {row_id: mid for row_id, (mid, _) in pairs.items()})
    return list(pairs.values())


def _sg_message_id(rng: random.Random) -> str:
    return (
        f"{rng.getrandbits(56):014x}.filterdrecv-{rng.getrandbits(24):06x}-"
        f"{rng.randrange(1, 99)}-{rng.getrandbits(32):08X}-{rng.randrange(1, 40)}.0"
    )


def sendgrid_events(
    pairs: list[tuple[str, str]], phase: str, start: int, seed: int
) -> list[dict[str, Any]]:
    """What SendGrid would post about these messages, in time order: a realistic mix."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n, (message_id, email) in enumerate(pairs):
        sg_id = _sg_message_id(rng)
        at = start + n // 4
        base = {
            "email": email,
            "smtp-id": message_id,
            "sg_message_id": sg_id,
            "category": ["bench"],
            "abm_message_id": message_id,
            "abm_campaign": CAMPAIGN_KEY,
            "abm_step": "intro" if n % 2 == 0 else "follow-up",
            "abm_variant": "a",
        }

        def add(
            event: str, delay: int, n: int = n, at: int = at, base: dict = base, **extra: Any
        ) -> None:
            raw = f"{event}-{phase}-{n}-{len(events)}".encode()
            events.append(
                {
                    **base,
                    "event": event,
                    "timestamp": at + delay,
                    "sg_event_id": base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:16])
                    .decode()
                    .rstrip("="),
                    **extra,
                }
            )

        add("processed", 0)
        if rng.random() < 0.05:
            add("deferred", 30, response="451 4.7.1 Try again later", attempt="1")
        chance = rng.random()
        if chance < 0.02:
            add("bounce", 60, reason="550 5.1.1 The email account does not exist", status="5.1.1",
                type="bounce")  # fmt: skip
            continue
        if chance < 0.03:
            add("bounce", 60, reason="421 4.7.0 Message temporarily deferred", status="4.7.0",
                type="blocked")  # fmt: skip
            continue
        add("delivered", 60, response="250 2.0.0 OK", ip="168.245.12.3", tls=1)
        if rng.random() < 0.45:
            agent = rng.choice(USER_AGENTS)
            add("open", 600, ip="66.249.84.12", useragent=agent, sg_machine_open=False)
            if rng.random() < 0.3:
                add("open", 7200, ip="66.249.84.13", useragent=agent, sg_machine_open=False)
            if rng.random() < 0.2:
                add("click", 900, ip="81.2.69.142", useragent=agent, url=rng.choice(URLS),
                    url_offset={"index": 0, "type": "html"})  # fmt: skip
            if rng.random() < 0.01:
                add("unsubscribe", 1200, ip="81.2.69.142", useragent=agent)
            elif rng.random() < 0.003:
                add("spamreport", 1300)
    events.sort(key=lambda event: event["timestamp"])
    return events


def batches_of(events: list[dict[str, Any]], size: int) -> list[tuple[bytes, list[str]]]:
    """The bodies SendGrid would post, and in each the event ids the receiver stores."""
    found = []
    for i in range(0, len(events), size):
        part = events[i : i + size]
        stored = [
            e["sg_event_id"]
            for e in part
            if e["event"] in STORED and not (e["event"] == "bounce" and e["type"] == "blocked")
        ]
        found.append((json.dumps(part, separators=(",", ":")).encode(), stored))
    return found


# ---- the posters ---------------------------------------------------------------------------


def _sign(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE: base64.b64encode(signature).decode(),
        TIMESTAMP: timestamp,
        "Content-Type": "application/json",
        "User-Agent": "SendGrid Event API",
    }


def poster(
    number: int,
    port: int,
    key_pem: bytes,
    bodies: list[bytes],
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Post `bodies` in order on one keep-alive connection; never give up on a batch: a 503
    waits its Retry-After, no answer reconnects and posts it again (SendGrid retries)."""
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    acked, latencies, statuses = [], [], {}
    unanswered = reposted_committed = 0
    connection: http.client.HTTPConnection | None = None
    ready.set()
    go.wait()
    cpu = time.process_time()
    for index, body in enumerate(bodies):
        answered_before = False  # this batch had no answer once: was it committed anyway?
        while True:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.perf_counter()
            try:
                connection.request("POST", "/webhooks/sendgrid", body, _sign(key, body))
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
                unanswered += 1
                answered_before = True
                time.sleep(0.2)
                continue
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 503:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                if response.headers.get("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
                continue
            if not 200 <= response.status < 300:
                raise SystemExit(f"poster {number}: {response.status} {answer[:300]!r}")
            latencies.append(time.perf_counter() - started)
            report = json.loads(answer)
            if answered_before and report["stored"] == 0 and report["received"]:
                reposted_committed += 1
            acked.append((index, report["stored"]))
            break
    results.put(
        {
            "poster": number,
            "acked": acked,
            "latencies": latencies,
            "statuses": statuses,
            "unanswered": unanswered,
            "reposted_committed": reposted_committed,
            "cpu_s": time.process_time() - cpu,
            "ended": time.time(),
        }
    )


# ---- the server, and the CPU each side used --------------------------------------------------


def start_server(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    """`abm webhooks serve` in a process group of its own, once /healthz answers."""
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "abm", "webhooks", "serve"),
                *("--port", str(port), "--workers", str(workers)),
            ],
            env=env,
            cwd=env["ABM_STATE_DIR"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return server
        except OSError:
            time.sleep(0.1)
    kill_group(server)
    raise SystemExit(f"the webhook server did not start; see {log}")


def kill_group(server: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the server and its workers (one process group) and wait for the server."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, sig)
    server.wait(timeout=30)


def _ticks(pid: int, children_too: bool = False) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0
    # utime, stime (and the waited-for children's cutime, cstime): fields 14-17
    return sum(int(value) for value in fields[11 : 15 if children_too else 13])


def _group(pgid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii") as handle:
                    if int(handle.read().rpartition(")")[2].split()[2]) == pgid:
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def server_cpu_s(server: subprocess.Popen) -> float:
    """CPU seconds of the server's whole process group (the master and its workers)."""
    return sum(_ticks(pid) for pid in _group(server.pid)) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s(database_url: str) -> float | None:
    """CPU seconds of the PostgreSQL server (postmaster, its live backends and those it
    reaped), when it runs on this machine."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            backend = connection.execute(text("select pg_backend_pid()")).scalar_one()
        with open(f"/proc/{backend}/stat", encoding="ascii") as handle:
            postmaster = int(handle.read().rpartition(")")[2].split()[1])
    except OSError:
        return None
    finally:
        engine.dispose()
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii") as handle:
                    if int(handle.read().rpartition(")")[2].split()[1]) == postmaster:
                        children.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    ticks = _ticks(postmaster, children_too=True) + sum(_ticks(pid) for pid in children)
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


# ---- one phase -----------------------------------------------------------------------------


def run_phase(
    *,
    name: str,
    batches: list[tuple[bytes, list[str]]],
    posters: int,
    port: int,
    key_pem: bytes,
    server: subprocess.Popen,
    restart: Any,
    kill_after: float | None,
    database_url: str,
) -> tuple[dict[str, Any], subprocess.Popen]:
    """Post all batches with `posters` processes; optionally SIGKILL and restart the server
    `kill_after` seconds in. Returns the phase's figures and the server now running."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    go = context.Event()
    readies, processes = [], []
    for number in range(posters):
        ready = context.Event()
        share = [body for body, _ in batches[number::posters]]
        process = context.Process(
            target=poster, args=(number, port, key_pem, share, ready, go, results)
        )
        process.start()
        readies.append(ready)
        processes.append(process)
    for ready in readies:
        ready.wait()
    server_used = -server_cpu_s(server)
    pg_cpu = postgres_cpu_s(database_url)
    busy, total = _machine_busy()
    started = time.time()
    go.set()
    killed_at = None
    if kill_after is not None:
        time.sleep(kill_after)
        server_used += server_cpu_s(server)  # the killed server's share
        kill_group(server)
        killed_at = time.time() - started
        time.sleep(1.0)
        server = restart()
        server_used -= server_cpu_s(server)  # the new one counts from here
    reports = [results.get() for _ in processes]
    for process in processes:
        process.join()
    seconds = max(report["ended"] for report in reports) - started
    server_used += server_cpu_s(server)
    pg_used = postgres_cpu_s(database_url)
    busy_after, total_after = _machine_busy()
    latencies = sorted(latency for report in reports for latency in report["latencies"])
    statuses: dict[str, int] = {}
    for report in reports:
        for status, count in report["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    acked_ids = [
        event_id
        for report in reports
        for index, _ in report["acked"]
        for event_id in batches[report["poster"] + index * posters][1]
    ]
    events = sum(json.loads(body).__len__() for body, _ in batches)
    result = {
        "phase": name,
        "batches": len(batches),
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "batch_ms_p50": round(1000 * statistics.median(latencies), 1),
        "batch_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "batch_ms_max": round(1000 * latencies[-1], 1),
        "statuses": statuses,
        "cpu_s_server": round(server_used, 1),
        "cpu_s_posters": round(sum(report["cpu_s"] for report in reports), 1),
        "cpu_s_postgres": round(pg_used - pg_cpu, 1) if pg_used and pg_cpu else None,
        "machine_busy": round((busy_after - busy) / max(1, total_after - total), 2),
        "acked_batches": sum(len(report["acked"]) for report in reports),
        "acked_events_stored": len(acked_ids),
    }
    missing = _missing(database_url, acked_ids)
    result["acked_missing"] = missing
    if kill_after is not None:
        result["killed_at_s"] = round(killed_at or 0, 2)
        result["unanswered_posts"] = sum(report["unanswered"] for report in reports)
        result["reposted_already_committed"] = sum(
            report["reposted_committed"] for report in reports
        )
    return result, server


def _missing(database_url: str, event_ids: list[str]) -> int:
    """How many of these SendGrid event ids are not in the database."""
    from sqlalchemy import create_engine, select

    from models.db import chunked
    from models.tables import EngagementEvent

    engine = create_engine(database_url)
    found = 0
    with engine.connect() as connection:
        for batch in chunked(sorted(set(event_ids)), 10_000):
            found += len(
                connection.execute(
                    select(EngagementEvent.provider_event_id).where(
                        EngagementEvent.provider == "sendgrid",
                        EngagementEvent.provider_event_id.in_(batch),
                    )
                ).all()
            )
    engine.dispose()
    return len(set(event_ids)) - found


def _rolled_up(database_url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from models.tables import Account

    engine = create_engine(database_url)
    with engine.connect() as connection:
        scored = connection.execute(
            select(func.count()).select_from(Account).where(Account.engagement_score > 0)
        ).scalar_one()
    engine.dispose()
    return scored


def run(args: argparse.Namespace) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABM_")}
    env.update(
        ABM_DATABASE_URL=args.database_url,
        ABM_SECRET_KEY=SECRET_KEY,
        ABM_STATE_DIR=str(state),
        ABM_SENDGRID_WEBHOOK_PUBLIC_KEY=public,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    # about 2.7 events a message: the messages that give N events in each phase
    messages = int(args.events / 2.7) + 1
    pairs = seed_ledger(args.database_url, messages)
    now = int(time.time()) - 3 * 3600
    steady = batches_of(sendgrid_events(pairs, "steady", now, 1), args.batch)
    kill = batches_of(sendgrid_events(pairs, "kill", now + 3600, 2), args.batch)
    port = free_port()
    log = state / "server.log"

    def restart() -> subprocess.Popen:
        return start_server(env, port, args.workers, log)

    server = restart()
    try:
        common = {"posters": args.posters, "port": port, "key_pem": key_pem}
        first, server = run_phase(
            name="steady", batches=steady, server=server, restart=restart, kill_after=None,
            database_url=args.database_url, **common,
        )  # fmt: skip
        phases = [first]
        if args.kill:
            kill_after = max(1.0, first["seconds"] / 3)
            second, server = run_phase(
                name="kill", batches=kill, server=server, restart=restart, kill_after=kill_after,
                database_url=args.database_url, **common,
            )  # fmt: skip
            phases.append(second)
    finally:
        kill_group(server, signal.SIGTERM)
    return {
        "database": "postgresql",
        "cores": os.cpu_count(),
        "workers": args.workers,
        "posters": args.posters,
        "batch": args.batch,
        "messages": len(pairs),
        "accounts_scored": _rolled_up(args.database_url),
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in each phase")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--posters", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server")
    parser.add_argument("--state-dir", default=None, help="a fresh folder (default: temporary)")
    parser.add_argument("--out", default=None, help="where the JSON result goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server_url = (
        args.database_url
        or os.environ.get("ABM_BENCH_POSTGRES_URL")
        or os.environ.get("ABM_TEST_POSTGRES_URL")
    )
    if not is_postgres_url(server_url):
        raise SystemExit(
            "bench.webhook_load needs a PostgreSQL server: --database-url, or "
            "ABM_BENCH_POSTGRES_URL (e.g. from .ci/start-postgres)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="abm-bench-webhooks-") as tmp,
        fresh_database(server_url, Path(tmp), "webhooks") as url,
    ):
        args.database_url = url
        args.state_dir = args.state_dir or tmp
        result = run(args)
    if args.out:
        write_result(Path(args.out), result)
    if args.json:
        print(json.dumps(result))
    elif not args.out:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

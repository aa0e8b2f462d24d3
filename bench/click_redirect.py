"""Tracked-link clicks through the redirect, stored: `python -m bench.click_redirect
[--clicks N] [--connections C] [--json]`. Goal: 1,000 clicks/s on loopback.

`python -m bench` starts it once, in a process of its own, with a fresh database. It writes a
ledger of N sent messages (one campaign, N/2 people, ten to an account as in the demo
dataset, two steps each) straight into the database, signs one tracked link per message
as the composer does, starts the real web server (`abm webhooks serve`'s app under uvicorn
with its SERVER_LIMITS, in a child process) on a loopback port, and has C keep-alive
connections follow every link once, each GET answered only once its click is committed.
Every click is a new one to store (a person's browser, an hour after sending: counted, not
a scanner's). It reports clicks/s over the wall time of all N, the latency per click, how
many events were stored (must be N), how many accounts were rolled up, and the server's
peak memory. The client is a small asyncio loop of raw HTTP/1.1 requests, so that the
measuring side costs little of the machine beside the server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    SECRET_KEY,
    _vm_hwm_kb,
    free_port,
    seed_sent_ledger,
    set_message_ids,
    write_result,
)

URL = (
    "https://bench.example/guides/stitching-tools"
    "?utm_source=abm&utm_medium=email&utm_campaign=bench&utm_content={step}"
)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HEADERS = f"Host: bench.example\r\nUser-Agent: {BROWSER}\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def _ledger(database_url: str, clicks: int) -> list[int]:
    """N sent messages in a fresh database; their ledger row ids."""
    from models.tables import utcnow

    sent = utcnow() - timedelta(hours=1)
    rows = seed_sent_ledger(database_url, clicks, "bench-clicks", ("s1", "s2"), sent)
    set_message_ids(
        database_url,
        {row_id: f"<abm.bench.{step}.{contact}@demo.example>" for row_id, step, contact, _ in rows},
    )
    return [row_id for row_id, *_ in rows]


def _links(ids: list[int]) -> list[str]:
    from core.tracking_tokens import SigningKeys, make_click_token

    keys = SigningKeys(SECRET_KEY)
    return [
        "/c/" + make_click_token(keys, delivery_id, URL.format(step=f"s{1 + n % 2}"))
        for n, delivery_id in enumerate(ids)
    ]


def serve(port: int) -> None:
    """The web server as `abm webhooks serve` runs it (in the child process)."""
    import uvicorn

    from abm.webhooks import SERVER_LIMITS, create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning", **SERVER_LIMITS)


def _start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.click_redirect", "--serve", str(port)],
            env=env,
            cwd=env.get("ABM_STATE_DIR"),
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return server, port
        except OSError:
            time.sleep(0.1)
        if server.poll() is not None:
            break
    server.kill()
    raise SystemExit(f"the web server did not start; see {log}")


async def _connection(
    port: int, paths: list[str], latencies: list[float], statuses: Counter[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in paths:
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\n{HEADERS}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            if length and int(length.group(1)):
                await reader.readexactly(int(length.group(1)))
            latencies.append(time.perf_counter() - started)
            statuses[int(head[9:12])] += 1
    finally:
        writer.close()


async def _follow(
    port: int, links: list[str], connections: int
) -> tuple[float, list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    shares = [links[i::connections] for i in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, share, latencies, statuses) for share in shares))
    return time.perf_counter() - started, latencies, statuses


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABM_")}
    env.update(
        ABM_DATABASE_URL=args.database_url,
        ABM_SECRET_KEY=SECRET_KEY,
        ABM_STATE_DIR=str(state),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("ABM_")})
    ids = _ledger(args.database_url, args.clicks)
    links = _links(ids)
    server, port = _start_server(env, state / "server.log")
    try:
        load_before = os.getloadavg()[0]
        seconds, latencies, statuses = asyncio.run(_follow(port, links, args.connections))
        peak_kb = _vm_hwm_kb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    from sqlalchemy import func, select

    from models.db import get_engine
    from models.tables import Account, EngagementEvent

    engine = get_engine(args.database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            select(func.count()).select_from(EngagementEvent).where(EngagementEvent.type == "click")
        ).scalar_one()
        scored = connection.execute(
            select(func.count()).select_from(Account).where(Account.engagement_score > 0)
        ).scalar_one()
    engine.dispose()
    latencies.sort()
    return {
        "database": engine.dialect.name,
        "clicks": len(links),
        "connections": args.connections,
        "seconds": round(seconds, 2),
        "clicks_per_s": round(len(links) / seconds),
        "stored": stored,
        "accounts_scored": scored,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "latency_ms_p50": round(1000 * statistics.median(latencies), 2),
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "server_peak_rss_mb": round(peak_kb / 1024, 1),
        "load_average": f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--state-dir", default=None, help="a fresh folder (default: temporary)")
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite)")
    parser.add_argument("--out", default=None, help="where the JSON result goes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="abm-bench-clicks-") as tmp:
        args.state_dir = args.state_dir or tmp
        args.database_url = args.database_url or f"sqlite:///{Path(tmp) / 'clicks.db'}"
        result = run(args)
    if args.out:
        write_result(Path(args.out), result)
    if args.json:
        print(json.dumps(result))
    elif not args.out:
        for name, value in result.items():
            print(f"{name:>20}: {value}")


if __name__ == "__main__":
    main()

"""What send-rate limiting costs over SMTP when no limit binds: `python -m bench.send_limits`.

`python -m bench --send-limits N` starts it once, in a process of its own, against the
loopback SMTP server. One fresh database of N demo contacts, imported and scored as in
`bench.e2e`; then rounds, each of which plans the benchmark campaign's step afresh and
delivers every due row through the real send path (`stages.delivery.send.deliver`, one
chunk of ABM_CHUNK_SIZE after another, one SMTP connection per chunk, as a chunk task
does), alternately with no limits and with every limit set far above what the round sends:
a send rate of a million a second, a daily limit of a billion and a warm-up ramp whose
day 1 allows a billion. So the second kind pays for all the work the limits do (the lock
and counts once per chunk, the slot checks per batch) and is never held back. Rounds run
in the order A B B A ..., so that drift of the machine falls on both alike; the result
(messages/s of each, limited / unlimited per pair and overall, and the same from this
process's CPU time per message) goes to `--out`, with the limits' and the circuit
breaker's own time per chunk, measured alone, as a share of a chunk's send time: on a busy
machine the rounds' noise is larger than the cost they are after."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import CAMPAIGN, SECRET_KEY, bench_icp_rules, write_result

NON_BINDING = {
    "ABM_SEND_RATE_PER_SECOND": "1000000",
    "ABM_SEND_MAX_PER_DAY": "1000000000",
}
LIMIT_NAMES = (*NON_BINDING, "ABM_WARMUP")


def _configure(args: argparse.Namespace, state: Path) -> None:
    os.environ.update(
        ABM_STATE_DIR=str(state),
        ABM_DATABASE_URL=args.database_url,
        ABM_EMAIL_BACKEND="smtp",
        ABM_SMTP_URL=args.smtp_url,
        ABM_ICP_RULES=str(bench_icp_rules(state)),
        ABM_SECRET_KEY=SECRET_KEY,
    )
    # SMTP refuses to send with an unsubscribe URL no recipient could reach; nothing here
    # leaves the loopback server, so any public-looking https address will do (as bench.e2e)
    os.environ.setdefault("ABM_PUBLIC_URL", "https://abm.bench.example.com")


def _limits(on: bool, ramp: Path) -> None:
    """Every limit set far above the round's volume, or none."""
    from core.settings import reset_settings

    for name in LIMIT_NAMES:
        os.environ.pop(name, None)
    if on:
        os.environ.update(NON_BINDING, ABM_WARMUP=str(ramp))
    reset_settings()


def _one_round(engine: Any, campaign_id: int, key: str, campaign: Any, targets: list[int]) -> dict:
    """Plan the step afresh and deliver every due row; messages sent and seconds taken."""
    from sqlalchemy import delete

    from connectors.email import get_backend
    from core.settings import get_settings
    from models.db import chunked, session_scope
    from models.tables import Delivery
    from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step
    from stages.delivery.send import deliver

    with session_scope(engine) as session:
        session.execute(delete(Delivery))
    plan_step(engine, campaign_id, key, campaign.steps, 0, targets)
    settings = get_settings()
    context = DeliveryContext(settings.database_url, campaign, campaign_id, key, "intro")
    ids = due_delivery_ids(engine, campaign_id, "intro")
    sent = 0
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in chunked(ids, settings.chunk_size):
        sent += deliver(engine, settings, context, list(chunk), get_backend(settings)).sent
    return {
        "sent": sent,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


def _own_cost(engine: Any, campaign_id: int, chunk_size: int, repeats: int = 20) -> dict:
    """The limits' and the circuit breaker's own work per chunk, timed alone on the ledger
    the rounds left (so not lost in the rounds' noise): `admit` for a chunk's rows (the
    lock, the counts, the booking) with each message's slot check, and the breaker's look
    at the campaign's recent emails, which every chunk pays with or without limits."""
    from core.settings import get_settings
    from stages.delivery.rates import admit, send_limits, slot_ahead
    from stages.delivery.reputation import pause_if_unhealthy

    settings = get_settings()
    limits = send_limits(settings)
    started = time.perf_counter()
    for _ in range(repeats):
        ready, _ = admit(engine, limits, [{} for _ in range(chunk_size)], "demo.example", 0)
        for row in ready:
            slot_ahead([row])
    admit_s = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        pause_if_unhealthy(engine, settings, campaign_id)
    breaker_s = (time.perf_counter() - started) / repeats
    return {"limits_ms_per_chunk": admit_s * 1000, "breaker_ms_per_chunk": breaker_s * 1000}


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    _configure(args, state)
    from abm.demo_data import write_demo_csvs
    from bench.import_contacts import timed_import
    from core.campaign_file import load_campaign
    from core.settings import get_settings, reset_settings
    from models.db import get_engine, migrate
    from stages.delivery.ledger import register_campaign
    from stages.targeting.audience import target_account_ids
    from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

    reset_settings()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    migrate(engine)
    accounts, contacts = write_demo_csvs(state / "data", contacts=args.contacts)
    timed_import(engine, settings, accounts, contacts)
    rescore_accounts_in_db(engine, load_icp_rules(settings.icp_rules))
    key, campaign = load_campaign(CAMPAIGN)
    campaign_id = register_campaign(engine, key, campaign, CAMPAIGN)
    targets = target_account_ids(engine, campaign.audience)
    ramp = state / "ramp.yaml"
    ramp.write_text("1: 1000000000\n", encoding="utf-8")

    _limits(False, ramp)
    _one_round(engine, campaign_id, key, campaign, targets)  # warm-up: imports, caches
    rounds: dict[str, list[dict]] = {"unlimited": [], "limited": []}
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for on in order:
            _limits(on, ramp)
            rounds["limited" if on else "unlimited"].append(
                _one_round(engine, campaign_id, key, campaign, targets)
            )
    _limits(True, ramp)
    own = _own_cost(engine, campaign_id, settings.chunk_size)
    _limits(False, ramp)

    def per_s(run: dict) -> float:
        return run["sent"] / run["seconds"]

    ratios = [
        per_s(on) / per_s(off)
        for on, off in zip(rounds["limited"], rounds["unlimited"], strict=True)
    ]
    total = {
        name: sum(r["sent"] for r in runs) / sum(r["seconds"] for r in runs)
        for name, runs in rounds.items()
    }
    cpu = {
        name: 1000 * sum(r["cpu_seconds"] for r in runs) / sum(r["sent"] for r in runs)
        for name, runs in rounds.items()
    }
    return {
        "database": engine.dialect.name,
        "contacts": args.contacts,
        "messages_per_round": rounds["unlimited"][0]["sent"],
        "pairs": args.pairs,
        "chunk_size": settings.chunk_size,
        "unlimited_msgs_per_s": [round(per_s(r), 1) for r in rounds["unlimited"]],
        "limited_msgs_per_s": [round(per_s(r), 1) for r in rounds["limited"]],
        "limited_vs_unlimited_per_pair": [round(r, 3) for r in ratios],
        "limited_vs_unlimited_median": round(statistics.median(ratios), 3),
        "limited_vs_unlimited_overall": round(total["limited"] / total["unlimited"], 3),
        # this process's own CPU per message (the SMTP server runs elsewhere): what the
        # limits cost, much less disturbed by other load on the machine than wall time
        "unlimited_cpu_ms_per_msg": round(cpu["unlimited"], 3),
        "limited_cpu_ms_per_msg": round(cpu["limited"], 3),
        "cpu_limited_vs_unlimited": round(cpu["unlimited"] / cpu["limited"], 3),
        "limits_ms_per_chunk": round(own["limits_ms_per_chunk"], 2),
        "breaker_ms_per_chunk": round(own["breaker_ms_per_chunk"], 2),
        # the limits' own time against what a chunk takes to send without them
        "limits_share_of_chunk": round(
            own["limits_ms_per_chunk"] / (settings.chunk_size * 1000 / total["unlimited"]), 4
        ),
        "breaker_share_of_chunk": round(
            own["breaker_ms_per_chunk"] / (settings.chunk_size * 1000 / total["unlimited"]), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True, help="a fresh folder for this run")
    parser.add_argument("--database-url", required=True, help="an empty database")
    parser.add_argument("--smtp-url", required=True, help="the loopback SMTP server")
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=4, help="rounds of each kind")
    parser.add_argument("--out", required=True, help="where the JSON result goes")
    args = parser.parse_args()
    write_result(Path(args.out), run(args))


if __name__ == "__main__":
    main()

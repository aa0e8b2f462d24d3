"""Content throughput: `python -m bench.render_messages [--messages N] [--json]`.

Full personalised MIME messages per second (template resolution, sandboxed rendering of
subject and HTML, CSS inlining, UTM links, text derived from HTML, signed unsubscribe link,
RFC 5322 bytes) beside bare Jinja2 renders per second of the same HTML template, measured
in the same run. Goal: at least half of the raw rate. `python -m bench` uses the same two
measurements as its raw render limit."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader

from core.campaign_file import load_campaign
from core.settings import REPO_ROOT, Settings, get_settings
from stages.content.compose import Composer
from stages.content.rendering import FILTERS

CAMPAIGN = REPO_ROOT / "campaigns" / "demo.yaml"
RAW_TEMPLATE = "email/intro/body.html.j2"


def sample_row(i: int) -> dict[str, Any]:
    """A ledger row as the delivery code loads it: one person at one account."""
    return {
        "delivery_id": i,
        "contact_id": i,
        "email": f"person{i}@acme.example",
        "first_name": "Ana",
        "last_name": "Núñez",
        "title": "CFO",
        "seniority": "c_level",
        "function": "finance",
        "role": "approver",
        "domain": "acme.example",
        "account_name": "Acme Robotics GmbH",
        "industry": "Manufacturing",
        "tier": 2,
        "country": "DE",
        "employees": 900,
        "stage": "target",
        "variant": None,
    }


def first_step_composer(settings: Settings, campaign_file: Path = CAMPAIGN) -> Composer:
    """The composer the real send uses for the campaign's first step."""
    key, campaign = load_campaign(campaign_file)
    return Composer(settings, key, 1, campaign, campaign.steps[0])


def raw_renders_per_s(messages: int, composer: Composer) -> float:
    """Bare Jinja2: the step's HTML template rendered with a ready-made context."""
    context = composer._context(sample_row(0), "https://u.example/x")
    raw_env = Environment(loader=FileSystemLoader(str(Path(composer.settings.templates_dir))))
    raw_env.filters.update(FILTERS)
    template = raw_env.get_template(RAW_TEMPLATE)
    started = time.perf_counter()
    for _ in range(messages):
        template.render(context)
    return messages / (time.perf_counter() - started)


def full_messages_per_s(messages: int, composer: Composer) -> float:
    """Everything the real send does per message, up to the RFC 5322 bytes."""
    rows = [sample_row(i) for i in range(messages)]
    started = time.perf_counter()
    for row in rows:
        composer.email(row).as_bytes()
    return messages / (time.perf_counter() - started)


def best_of_rounds(messages: int, composer: Composer, rounds: int) -> tuple[float, float]:
    """(raw renders/s, full messages/s), each the best of `rounds` alternating rounds of
    messages / rounds: on a shared machine both sides then see the same quiet moments."""
    size = max(1, messages // rounds)
    raw, full = 0.0, 0.0
    for _ in range(rounds):
        raw = max(raw, raw_renders_per_s(size, composer))
        full = max(full, full_messages_per_s(size, composer))
    return raw, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, best kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    composer = first_step_composer(get_settings())
    raw, full = best_of_rounds(args.messages, composer, args.rounds)
    result = {
        "messages": args.messages,
        "rounds": args.rounds,
        "raw_renders_per_s": round(raw),
        "full_messages_per_s": round(full),
        "ratio": round(full / raw, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>20}: {value}")


if __name__ == "__main__":
    main()

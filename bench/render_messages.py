"""Content throughput: `python -m bench.render_messages [--messages N] [--json]`.

Full personalised MIME messages per second (template resolution, sandboxed rendering of
subject and HTML, CSS inlining, UTM links, text derived from HTML, signed unsubscribe link,
RFC 5322 bytes) beside bare Jinja2 renders per second of the same HTML template, measured
in the same run. Goal: at least half of the raw rate."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from abm.campaign_file import load_campaign
from abm.settings import REPO_ROOT, get_settings
from flows.compose import Composer
from flows.rendering import FILTERS

CAMPAIGN = REPO_ROOT / "campaigns" / "demo.yaml"


def _row(i: int) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = get_settings()
    key, campaign = load_campaign(CAMPAIGN)
    composer = Composer(settings, key, 1, campaign, campaign.steps[0])
    rows = [_row(i) for i in range(args.messages)]
    context = composer._context(rows[0], "https://u.example/x")

    raw_env = Environment(loader=FileSystemLoader(str(Path(settings.templates_dir))))
    raw_env.filters.update(FILTERS)
    template = raw_env.get_template("email/intro/body.html.j2")
    started = time.perf_counter()
    for _ in rows:
        template.render(context)
    raw = args.messages / (time.perf_counter() - started)

    started = time.perf_counter()
    for row in rows:
        composer.email(row).as_bytes()
    full = args.messages / (time.perf_counter() - started)

    result = {
        "messages": args.messages,
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

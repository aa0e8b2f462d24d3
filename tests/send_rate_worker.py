"""A chunk process for `test_send_limits.py`: imports everything, prints `ready`, reads the
delivery ids of its chunk (a JSON list) and a `go` line from stdin, then delivers the chunk
to the outbox and prints when it started and ended (wall clock, comparable across
processes) and how many it sent, as JSON. Settings come from the environment (`ABM_*`).

    python tests/send_rate_worker.py CAMPAIGN_FILE"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from connectors.email import get_backend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.db import get_engine
from stages.delivery.ledger import DeliveryContext, campaign_id_for
from stages.delivery.send import deliver


def main(campaign_file: str) -> None:
    settings = get_settings()
    engine = get_engine(settings.database_url)
    key, campaign = load_campaign(Path(campaign_file))
    context = DeliveryContext(
        settings.database_url, campaign, campaign_id_for(engine, key), key, campaign.steps[0].id
    )
    print("ready", flush=True)
    ids = json.loads(sys.stdin.readline())
    assert sys.stdin.readline().strip() == "go"
    started = time.time()
    outcome = deliver(engine, settings, context, ids, get_backend(settings))
    ended = time.time()
    print(json.dumps({"started": started, "ended": ended, "sent": outcome.sent}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

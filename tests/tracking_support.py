"""What the tracking tests share: one campaign step really sent through the outbox (built
once per test module; each test gets its own copy of the database) and a client of the web
server as configured."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient
from tests_support import write_file

from abm.demo_data import write_demo_csvs
from abm.webhooks import create_app
from connectors.email import get_backend
from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from models.db import get_engine, migrate
from models.tables import Account, Delivery, EngagementEvent, utcnow
from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step, register_campaign
from stages.delivery.send import deliver
from stages.importing import import_file
from stages.targeting.audience import target_account_ids
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

SECRET = "test-secret-key"  # what the autouse abm_state fixture sets
GUIDE = "https://demo.example/guides/stitching-tools"
CAMPAIGN = """\
key: click-test
name: Click tracking test
audience: {{tiers: [1, 2, 3]}}
caps: {{per_contact: null, per_account: null}}
links:
  guide: {guide}
tracking: {tracking}
steps:
  - id: intro
    variants:
      - {{id: a, template: intro}}
      - {{id: b, template: intro}}
"""
TRACKING = "{clicks: true, opens: false, site_domains: [demo.example]}"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TRACKED = re.compile(r"http://127\.0\.0\.1:8025/c/([A-Za-z0-9_.-]+)")


def campaign_file(folder: Path, tracking: str = TRACKING) -> Path:
    return write_file(folder / "click-test.yaml", CAMPAIGN.format(guide=GUIDE, tracking=tracking))


@pytest.fixture(scope="module")
def sent_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One campaign step really sent through the outbox backend (built once: each test gets
    its own copy of the database), its messages sent an hour ago."""
    folder = tmp_path_factory.mktemp("sent")
    url = f"sqlite:///{folder / 'abm.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ABM_") and "TEST" not in n]:
            patch.delenv(name)
        patch.setenv("ABM_SECRET_KEY", SECRET)
        patch.setenv("ABM_STATE_DIR", str(folder / "state"))
        patch.setenv("ABM_OUTBOX_DIR", str(folder / "outbox"))
        patch.setenv("ABM_DATABASE_URL", url)
        reset_settings()
        settings = get_settings()
        engine = get_engine(url)
        migrate(engine)
        accounts, contacts = write_demo_csvs(folder / "data", contacts=30)
        import_file("accounts", accounts, engine, settings)
        import_file("contacts", contacts, engine, settings)
        rescore_accounts_in_db(engine, load_icp_rules())
        path = campaign_file(folder)
        key, campaign = load_campaign(path)
        campaign_id = register_campaign(engine, key, campaign, path)
        targets = target_account_ids(engine, campaign.audience)
        plan_step(engine, campaign_id, key, campaign.steps, 0, targets)
        context = DeliveryContext(url, campaign, campaign_id, key, "intro")
        with get_backend(settings) as backend:
            outcome = deliver(
                engine, settings, context, due_delivery_ids(engine, campaign_id, "intro"), backend
            )
        assert outcome.sent >= 4
        with engine.begin() as connection:
            connection.execute(update(Delivery).values(sent_at=utcnow() - timedelta(hours=1)))
        engine.dispose()
        get_engine.cache_clear()
        reset_settings()
    yield {"db": folder / "abm.db", "outbox": folder / "outbox", "campaign": path}


@pytest.fixture
def world(sent_world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = tmp_path / "copy.db"
    shutil.copy(sent_world["db"], db)
    url = f"sqlite:///{db}"
    monkeypatch.setenv("ABM_DATABASE_URL", url)
    reset_settings()
    engine = get_engine(url)
    yield {**sent_world, "engine": engine, "url": url}
    engine.dispose()


@pytest.fixture
def client_for(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """A client of the web server as configured by these ABM_* settings."""

    def make(**env: str) -> TestClient:
        for name, value in env.items():
            monkeypatch.setenv(f"ABM_{name.upper()}", value)
        reset_settings()
        return TestClient(create_app(get_settings()), follow_redirects=False)

    return make


@pytest.fixture
def client(client_for) -> TestClient:
    return client_for()


def messages(outbox: Path) -> list[Message]:
    return [
        message_from_bytes(path.read_bytes(), policy=default)
        for path in sorted(outbox.glob("*.eml"))
    ]


def parts(message: Message) -> tuple[str, str]:
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return html, text


def tracked_paths(message: Message) -> list[str]:
    html, _ = parts(message)
    return [f"/c/{token}" for token in TRACKED.findall(html)]


def events(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(
            select(
                EngagementEvent.type,
                EngagementEvent.provider,
                EngagementEvent.provider_event_id,
                EngagementEvent.contact_id,
                EngagementEvent.account_id,
                EngagementEvent.campaign_id,
                EngagementEvent.message_id,
                EngagementEvent.data,
            ).order_by(EngagementEvent.id)
        ).all()


def ledger_row(engine: Engine, message: Message) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(Delivery).where(Delivery.message_id == message["Message-ID"])
        ).one()


def score(engine: Engine, account_id: int) -> float:
    with engine.connect() as connection:
        return connection.execute(
            select(Account.engagement_score).where(Account.id == account_id)
        ).scalar_one()

"""The webhook receiver when the database is busy or the server dies: a 503 with Retry-After
and nothing stored, never a 500; and no event acknowledged (2xx) is ever missing after a
SIGKILL of the server mid-load, its unanswered batches re-posted and stored once."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest
from cli_support import run_abm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from smtp_server import free_port
from sqlalchemy import func, select, text
from starlette.testclient import TestClient

from abm.webhooks import LOCK_TIMEOUT_MS, create_app
from core.settings import REPO_ROOT, get_settings, reset_settings
from models.db import get_engine
from models.tables import EngagementEvent

SECRET_KEY = "load-test-secret-key"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture
def load(monkeypatch):
    """bench.webhook_load, whose data and server helpers these tests share (`python -m
    bench.webhook_load` runs from the checkout)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    import bench.webhook_load

    return bench.webhook_load


def _sign(body: bytes) -> dict[str, str]:
    from bench.webhook_load import _sign as sign

    return sign(KEY, body)


def _stored_ids(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(EngagementEvent.provider_event_id)).scalars().all())


def _app(monkeypatch, database_url: str):
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    reset_settings()
    return TestClient(create_app(get_settings()))


def test_an_unreachable_database_gets_503_with_retry_after_not_500(monkeypatch, load):
    """Connection refused: the provider is told to retry, nothing is acknowledged."""
    client = _app(monkeypatch, f"postgresql+psycopg://abm@127.0.0.1:{free_port()}/abm")
    body = json.dumps(
        [
            {
                "email": "a@b.example",
                "timestamp": int(time.time()),
                "event": "open",
                "sg_event_id": "e1",
            }
        ]
    ).encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=_sign(body))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "nothing was stored" in response.json()["error"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_locked_table_gets_a_quick_503_and_the_retry_stores_the_batch(
    database_url, monkeypatch, load
):
    """A lock the insert needs, held past the receiver's lock timeout: 503 within seconds,
    nothing of the batch stored; posted again once the lock is gone, it is stored whole."""
    engine = get_engine(database_url)
    pairs = load.seed_ledger(database_url, 40)
    events = load.sendgrid_events(pairs, "t", int(time.time()) - 600, 7)
    batch, stored_ids = load.batches_of(events, 100)[0]
    client = _app(monkeypatch, database_url)
    with engine.connect() as holder:
        # without a lock timeout in the receiver, this test ends (and fails) in 20 s
        holder.execute(text("SET idle_in_transaction_session_timeout = '20s'"))
        holder.execute(text("LOCK TABLE engagementevent IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        busy = client.post("/webhooks/sendgrid", content=batch, headers=_sign(batch))
        waited = time.monotonic() - started
        holder.rollback()
    assert busy.status_code == 503, busy.text
    assert int(busy.headers["Retry-After"]) > 0
    assert "LockNotAvailable" in busy.json()["error"]
    assert LOCK_TIMEOUT_MS / 1000 <= waited < LOCK_TIMEOUT_MS / 1000 + 5
    assert _stored_ids(engine) == []
    again = client.post("/webhooks/sendgrid", content=batch, headers=_sign(batch))
    assert again.status_code == 200
    assert again.json()["stored"] == len(stored_ids)
    assert sorted(_stored_ids(engine)) == sorted(stored_ids)


def test_more_than_one_worker_needs_postgresql(capsys, monkeypatch, sqlite_url):
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    reset_settings()
    code, _, err = run_abm(capsys, monkeypatch, "webhooks", "serve", "--workers", "2")
    assert code == 2
    assert "--workers 2 needs PostgreSQL" in " ".join(err.split())


class Poster(threading.Thread):
    """Posts its batches in order like SendGrid: no answer, post it again; 503, wait."""

    def __init__(self, port: int, batches: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.port, self.batches = port, batches
        self.acked: list[int] = []
        self.unanswered = 0
        self.failure: str | None = None

    def run(self) -> None:
        connection = None
        for index, body in enumerate(self.batches):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    connection = connection or http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=30
                    )
                    connection.request("POST", "/webhooks/sendgrid", body, _sign(body))
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException):
                    if connection is not None:
                        connection.close()
                    connection, self.unanswered = None, self.unanswered + 1
                    time.sleep(0.1)
                    continue
                if response.status == 503:
                    time.sleep(0.2)
                    continue
                if response.status != 200:
                    self.failure = f"{response.status}: {answer[:200]!r}"
                    return
                self.acked.append(index)
                break
            else:
                self.failure = f"batch {index} never answered"
                return


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_no_acknowledged_event_is_lost_when_the_server_is_killed_mid_load(
    database_url, tmp_path, load
):
    """`abm webhooks serve --workers 2` on PostgreSQL, three posters; SIGKILL to the whole
    server (master and workers) once a third of the batches are acknowledged, then started
    again. Every acknowledged batch is stored whole; the unanswered ones, posted again, are
    stored once: in the end every event is there exactly once."""
    pairs = load.seed_ledger(database_url, 1500)
    batches = load.batches_of(load.sendgrid_events(pairs, "k", int(time.time()) - 3600, 3), 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABM_")}
    env.update(
        ABM_DATABASE_URL=database_url,
        ABM_SECRET_KEY=SECRET_KEY,
        ABM_STATE_DIR=str(tmp_path),
        ABM_SENDGRID_WEBHOOK_PUBLIC_KEY=PUBLIC_KEY,
        PYTHONPATH=str(REPO_ROOT),
    )
    port, log = free_port(), tmp_path / "server.log"
    server = load.start_server(env, port, 2, log)
    posters = [Poster(port, [body for body, _ in batches[n::3]]) for n in range(3)]
    try:
        for poster in posters:
            poster.start()
        deadline = time.monotonic() + 60
        while sum(len(p.acked) for p in posters) < len(batches) // 3:
            assert time.monotonic() < deadline, Path(log).read_text()
            time.sleep(0.01)
        load.kill_group(server)
        acked_before_kill = sum(len(p.acked) for p in posters)
        time.sleep(0.5)
        server = load.start_server(env, port, 2, log)
        for poster in posters:
            poster.join(timeout=120)
    finally:
        load.kill_group(server)
    assert [p.failure for p in posters] == [None, None, None]
    assert acked_before_kill < len(batches), "the kill came after the load"
    assert sum(p.unanswered for p in posters) >= 1, "no post was cut off by the kill"
    engine = get_engine(database_url)
    stored = set(_stored_ids(engine))
    acked = {
        event_id
        for n, poster in enumerate(posters)
        for index in poster.acked
        for event_id in batches[n + 3 * index][1]
    }
    assert acked - stored == set()
    every = {event_id for _, ids in batches for event_id in ids}
    assert stored == every
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(EngagementEvent)).scalar()
    assert rows == len(every)


def test_a_batch_is_stored_once_per_event_id_keeping_the_first_of_duplicates(engine, load):
    """The one-statement insert (arrays on PostgreSQL): a repeated id within the batch keeps
    its first event, a re-posted batch stores nothing, and the count says so."""
    from stages.engagement.ingest import ingest_sendgrid

    url = engine.url.render_as_string(hide_password=False)
    pairs = load.seed_ledger(url, 4)
    events = load.sendgrid_events(pairs, "d", int(time.time()) - 600, 5)
    events = [e for e in events if e["event"] in ("delivered", "open", "click")]
    twin = {**events[0], "event": "click", "url": "https://demo.example/x"}
    first = ingest_sendgrid(engine, [*events, twin])
    again = ingest_sendgrid(engine, [*events, twin])
    assert (first.stored, again.stored) == (len(events), 0)
    with engine.connect() as connection:
        kind = connection.execute(
            select(EngagementEvent.type).where(
                EngagementEvent.provider_event_id == events[0]["sg_event_id"]
            )
        ).scalar_one()
    assert kind == events[0]["event"]

"""Shared fixtures: a migrated database on SQLite and, when one is available, PostgreSQL;
an isolated `.abm` state folder per test; a temporary Prefect server for flow tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from core.settings import reset_settings
from models.db import get_engine, migrate

POSTGRES_URL = os.environ.get("ABM_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("ABM_TEST_REQUIRE_POSTGRES") == "1"


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("ABM_TEST_REQUIRE_POSTGRES=1 but ABM_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL here: set ABM_TEST_POSTGRES_URL to run these on it")
    name = f"abm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        get_engine.cache_clear()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database; every test using it runs on both kinds."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'abm.db'}"
        migrate(get_engine(url))
        yield url
        get_engine(url).dispose()
    else:
        for url in _postgres_database():
            migrate(get_engine(url))
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only, for tests whose subject is not the database."""
    url = f"sqlite:///{tmp_path / 'abm.db'}"
    migrate(get_engine(url))
    yield url
    get_engine(url).dispose()


@pytest.fixture
def engine(database_url: str) -> Engine:
    return get_engine(database_url)


@pytest.fixture
def db(engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The engine, with ABM_DATABASE_URL naming its database: the command line and the web
    app a test drives use it too. Modules that seed data override this fixture."""
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    return engine


@pytest.fixture
def planned(engine: Engine, tmp_path: Path) -> tuple[int, Any]:
    """The demo campaign's first step planned for a few demo people (`sendgrid_delivery`)."""
    from sendgrid_delivery import plan_intro

    return plan_intro(engine, tmp_path)


@pytest.fixture(autouse=True)
def abm_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own `.abm` folder and outbox, and no `.env` from the checkout."""
    state = tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABM_STATE_DIR", str(state))
    monkeypatch.setenv("ABM_OUTBOX_DIR", str(state / "outbox"))
    monkeypatch.setenv("ABM_SECRET_KEY", "test-secret-key")
    for name in list(os.environ):
        if name.startswith("ABM_") and name not in (
            "ABM_STATE_DIR",
            "ABM_OUTBOX_DIR",
            "ABM_SECRET_KEY",
            "ABM_TEST_POSTGRES_URL",
            "ABM_TEST_REQUIRE_POSTGRES",
        ):
            monkeypatch.delenv(name)
    reset_settings()
    yield state
    reset_settings()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server (own database) for the tests that run real flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

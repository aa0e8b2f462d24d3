"""`abm demo` simulates engagement in its own demo database and labels it as simulated;
the simulation cannot be reached on a database that holds real accounts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine, func, select
from tests_support import write_file

from abm.demo import run_demo
from abm.demo_data import write_demo_csvs
from core.errors import AbmError
from core.settings import get_settings, reset_settings
from flows.campaign import run_campaign
from models.db import get_engine
from models.tables import Delivery, EngagementEvent
from stages.importing import import_file

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


@pytest.fixture
def flow_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Engine:
    """The flows' database, with the process settings the demo changes restored after."""
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ABM_EMAIL_BACKEND", "outbox")
    for name in ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    return get_engine(sqlite_url)


def test_the_demo_shows_engagement_labelled_as_simulated(flow_db: Engine) -> None:
    out = Console(file=io.StringIO(), width=200)
    err = Console(file=io.StringIO(), width=200)

    run_demo(120, out, err)

    with flow_db.connect() as connection:
        events = connection.execute(
            select(EngagementEvent.provider, EngagementEvent.type, EngagementEvent.data)
        ).all()
    simulated = [e for e in events if e.provider == "simulated"]
    assert len(simulated) == len(events) > 0
    assert all(e.data.get("simulated") is True for e in simulated)
    assert {"open", "click"} <= {e.type for e in simulated}
    # tracked links followed through the redirect server, and the site visits after them
    assert {"click_scanner", "web_visit"} <= {e.type for e in simulated}
    summary = out.file.getvalue()
    assert "simulated" in summary.lower()
    assert str(len(simulated)) in summary
    assert "Tracked links, SIMULATED" in summary


def test_a_campaign_run_never_simulates_on_a_database_with_real_accounts(
    flow_db: Engine, tmp_path: Path
) -> None:
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=60)
    import_file("accounts", accounts, flow_db, get_settings())
    import_file("contacts", contacts, flow_db, get_settings())
    real = write_file(tmp_path / "real.csv", "domain,name\nacme.com,Acme\n")
    import_file("accounts", real, flow_db, get_settings())

    with pytest.raises(AbmError, match="demo"):
        run_campaign(campaign_file=str(CAMPAIGN), simulate=True)

    with flow_db.connect() as connection:
        assert connection.execute(select(func.count()).select_from(EngagementEvent)).scalar() == 0
        assert connection.execute(select(func.count()).select_from(Delivery)).scalar() == 0
    assert not list(get_settings().outbox_dir.glob("*.eml"))


def test_the_demo_keeps_its_own_database_and_outbox(
    monkeypatch: pytest.MonkeyPatch, prefect_server: None, abm_state: Path
) -> None:
    for name in ("ABM_DATABASE_URL", "ABM_OUTBOX_DIR"):  # the user's defaults: not set
        monkeypatch.setenv(name, "restored after the test")
        monkeypatch.delenv(name)
    for name in ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    users_database = get_settings().database_url

    out = Console(file=io.StringIO(), width=200)
    run_demo(60, out, Console(file=io.StringIO(), width=200))

    demo = get_engine(f"sqlite:///{abm_state / 'demo' / 'abm.db'}")
    with demo.connect() as connection:
        assert connection.execute(select(func.count()).select_from(EngagementEvent)).scalar()
    assert list((abm_state / "demo" / "outbox").glob("*.eml"))
    assert not Path(".abm/abm.db").exists() and users_database == "sqlite:///.abm/abm.db"
    assert "export ABM_DATABASE_URL=sqlite:///" in out.file.getvalue()

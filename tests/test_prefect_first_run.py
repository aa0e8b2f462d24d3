"""Prefect's local state is set up once, even when the first two runs on a fresh state
folder start at the same moment (two cron entries, two terminals): one process migrates
Prefect's database and registers its blocks, under a file lock, while the other waits;
neither temporary server fails to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from abm.demo_data import write_demo_csvs
from core.settings import get_settings, reset_settings
from models.db import get_engine, migrate
from stages.importing import import_file

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = REPO / "campaigns" / "demo.yaml"
RUNS = 2


def _database(tmp_path: Path, index: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """An application database of its own for each run: the subject here is Prefect's."""
    url = f"sqlite:///{tmp_path / f'abm{index}.db'}"
    monkeypatch.setenv("ABM_DATABASE_URL", url)
    reset_settings()
    engine = get_engine(url)
    migrate(engine)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=30)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    engine.dispose()
    return url


@pytest.mark.slow
def test_two_first_runs_at_once_on_a_fresh_state_folder_both_succeed(
    tmp_path, monkeypatch, abm_state
) -> None:
    urls = [_database(tmp_path, index, monkeypatch) for index in range(RUNS)]
    assert not abm_state.exists()
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "ABM_"))  # no API: each run starts its own server
    }
    base.update(
        ABM_STATE_DIR=str(abm_state),
        ABM_SECRET_KEY="test-secret-key",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "abm", "campaign", "run", str(CAMPAIGN), "--json"],
            env={**base, "ABM_DATABASE_URL": url, "ABM_OUTBOX_DIR": str(tmp_path / f"out{i}")},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, url in enumerate(urls)
    ]
    results = [run.communicate(timeout=600) for run in runs]

    for run, (out, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err
        assert '"sent"' in out
        assert "Traceback" not in err and "startup failed" not in err.lower()
    log = (abm_state / "logs" / "prefect.log").read_text(encoding="utf-8")
    assert "Application startup failed" not in log
    assert "Traceback" not in log
    assert "| ERROR" not in log, log[-3000:]
    # set up once, and remembered: later runs skip the setup
    assert (abm_state / "prefect" / "abm-setup-done").exists()

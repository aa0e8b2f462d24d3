"""Running flows from the CLI: on the Prefect API the user configured, or on a temporary
local server, with Prefect's own console chatter sent to a log file instead of the user."""

from __future__ import annotations

import importlib.util
import os
import traceback
from pathlib import Path
from typing import Any

import yaml

from core.errors import AbmError
from core.settings import get_settings


def prefect_log_path() -> Path:
    return get_settings().state_dir / "logs" / "prefect.log"


def _file_logging_config(log_file: Path) -> Path:
    """Prefect's own logging config with every console handler writing to `log_file`.

    Run logs still reach the Prefect API (and the UI); only the terminal stays quiet."""
    spec = importlib.util.find_spec("prefect")
    assert spec and spec.submodule_search_locations, "prefect is not installed"
    default = Path(next(iter(spec.submodule_search_locations))) / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text())
    for name in ("console", "debug"):
        config["handlers"][name] = {
            "level": 0,
            "class": "logging.FileHandler",
            "formatter": "standard",
            "filename": str(log_file),
            "encoding": "utf-8",
        }
    target = log_file.parent / "prefect-logging.yml"
    target.write_text(yaml.safe_dump(config))
    return target


def prepare_environment(quiet: bool = True) -> None:
    """Settings Prefect reads once, so this runs before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The first start of a temporary server migrates its database: ~20 s on a quiet
    # 2-core machine, more on a busy one, where Prefect's default of 20 s gives up.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str((get_settings().state_dir / "prefect").resolve())
    if quiet and "PREFECT_LOGGING_SETTINGS_PATH" not in os.environ:
        log_file = prefect_log_path().resolve()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(_file_logging_config(log_file))


# In Prefect's home folder: the lock two first runs take turns on, and the mark that the
# setup is done (with the Prefect version it was done for: an upgrade migrates again).
SETUP_LOCK = "abm-setup.lock"
SETUP_DONE = "abm-setup-done"


def ensure_local_prefect_state() -> None:
    """Set up the temporary local server's state once, safely when several processes start
    at the same moment on a fresh state folder.

    Without PREFECT_API_URL, each process starts its own temporary server on the same
    SQLite database in PREFECT_HOME, and each server migrates it and registers Prefect's
    blocks as it starts: two first runs at once migrate the same empty database together,
    and one server fails to start ("duplicate column", "no such index"). Here, under an
    exclusive lock on a file in PREFECT_HOME, the first process starts its server (the
    migration and the block registration happen then, once), and marks the setup done;
    the others wait for the lock, see the mark and start theirs on a database that is
    ready. The server started here is the one the flow then uses (Prefect keeps one
    temporary server a process). Call it after `prepare_environment`."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect import __version__ as prefect_version
    from prefect.settings import get_current_settings

    current = get_current_settings()
    if current.api.url or not current.server.ephemeral.enabled:
        return  # a server someone runs (a profile's API URL), or none allowed: not ours
    home = Path(current.home).expanduser()
    done = home / SETUP_DONE
    version = f"prefect {prefect_version}\n"
    database = _sqlite_file(current.server.database.connection_url)
    if _read(done) == version and (database is None or database.exists()):
        return
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with (home / SETUP_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _read(done) == version and (database is None or database.exists()):
            return  # another process set it up while this one waited
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().start()  # migrates, registers blocks; stays up for the flow
        partial = done.with_suffix(f".{os.getpid()}")
        partial.write_text(version, encoding="utf-8")
        partial.replace(done)


def _sqlite_file(url: Any) -> Path | None:
    """The file of Prefect's SQLite database (a deleted one is set up again), else None."""
    from sqlalchemy.engine import make_url

    text = url.get_secret_value() if hasattr(url, "get_secret_value") else url
    try:
        parsed = make_url(str(text)) if text else None
    except Exception:
        return None
    if parsed is None or parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


class FlowFailed(AbmError):
    """The flow ran and failed; the details are in the Prefect log, not on the terminal."""

    exit_code = 1


def run_flow_quietly(
    campaign_file: str, limit: int | None, simulate: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Run `run_campaign` in this process; Prefect's own logging goes to a file."""
    prepare_environment()
    try:
        ensure_local_prefect_state()
        from flows.campaign import run_campaign

        return run_campaign(
            campaign_file=campaign_file, limit=limit, simulate=simulate, dry_run=dry_run
        )
    except AbmError:
        raise
    except Exception as exc:
        log = prefect_log_path()
        with log.open("a", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(exc)))
        raise FlowFailed(
            f"the campaign flow failed: {type(exc).__name__}: {exc} (details in {log})"
        ) from None

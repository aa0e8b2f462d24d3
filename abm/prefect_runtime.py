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


class FlowFailed(AbmError):
    """The flow ran and failed; the details are in the Prefect log, not on the terminal."""

    exit_code = 1


def run_flow_quietly(
    campaign_file: str, limit: int | None, simulate: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Run `run_campaign` in this process; Prefect's own logging goes to a file."""
    prepare_environment()
    from flows.campaign import run_campaign

    try:
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

"""Running flows from the CLI: on the Prefect API the user configured, or on a temporary
local server, with Prefect's own console chatter sent to a log file instead of the user."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from abm.settings import get_settings


def prepare_environment() -> None:
    """Defaults that must be in place before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        state = get_settings().state_dir.resolve()
        os.environ["PREFECT_HOME"] = str(state / "prefect")


def log_to_file(path: Path) -> None:
    """Move every console handler Prefect installed to `path` (the UI still gets run logs)."""
    import prefect  # noqa: F401  (sets Prefect's logging up)
    from prefect.logging.handlers import PrefectConsoleHandler

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]
    for logger in loggers:
        for old in list(logger.handlers):
            if isinstance(old, PrefectConsoleHandler | logging.StreamHandler) and not isinstance(
                old, logging.FileHandler
            ):
                logger.removeHandler(old)
                if handler not in logger.handlers:
                    logger.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error", "asyncio", "httpx"):
        noisy = logging.getLogger(name)
        noisy.handlers = [handler]
        noisy.propagate = False
    warnings.filterwarnings("ignore")


def prefect_log_path() -> Path:
    return get_settings().state_dir / "logs" / "prefect.log"


def run_flow_quietly(campaign_file: str, limit: int | None, simulate: bool) -> dict[str, Any]:
    """Run `run_campaign` in this process; Prefect's own logging goes to a file."""
    prepare_environment()
    log_to_file(prefect_log_path())
    from flows.campaign import run_campaign

    return run_campaign(campaign_file=campaign_file, limit=limit, simulate=simulate)

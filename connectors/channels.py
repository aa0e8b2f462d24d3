"""The one place a campaign step's channel picks its backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.backend import Backend
from connectors.email import EmailBackend
from connectors.linkedin import get_connector
from connectors.linkedin.backends import MatchedAudienceBackend, RepTaskBackend
from core.settings import Settings


def rep_tasks_path(settings: Settings) -> Path:
    """Where reps find their LinkedIn tasks: one CSV, appended to, never duplicated."""
    return settings.state_dir / "linkedin" / "rep-tasks.csv"


def channel_backend(
    settings: Settings,
    channel: str,
    email: EmailBackend,
    audience: str = "",
    members: str | None = None,
) -> Backend[Any]:
    """The backend for `channel`: the configured email backend (made once per run by the
    flow, which also needs to know whether it is idempotent), the rep-task file, or a
    matched audience named `audience` of `members` (contacts or companies)."""
    if channel == "email":
        return email
    if channel == "linkedin_task":
        return RepTaskBackend(rep_tasks_path(settings))
    if channel == "linkedin_audience":
        return MatchedAudienceBackend(
            lambda: get_connector(settings),
            audience,
            "companies" if members == "companies" else "contacts",
        )
    raise ValueError(f"unknown channel {channel!r}")

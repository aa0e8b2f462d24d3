"""Email backends, chosen by `ABM_EMAIL_BACKEND`."""

from __future__ import annotations

from abm.errors import ConfigError
from abm.settings import Settings
from connectors.email.base import EmailBackend, SendResult
from connectors.email.console import ConsoleBackend
from connectors.email.outbox import OutboxBackend

__all__ = ["EmailBackend", "SendResult", "get_backend"]


def get_backend(settings: Settings) -> EmailBackend:
    """The backend the configuration names."""
    if settings.email_backend == "outbox":
        return OutboxBackend(settings.outbox_dir)
    if settings.email_backend == "console":
        return ConsoleBackend()
    raise ConfigError(f"ABM_EMAIL_BACKEND={settings.email_backend}: unknown backend")

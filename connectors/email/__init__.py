"""Email backends, chosen by `ABM_EMAIL_BACKEND`."""

from __future__ import annotations

from connectors.email.base import EmailBackend, SendResult
from connectors.email.console import ConsoleBackend
from connectors.email.dkim import signer_from_settings
from connectors.email.outbox import OutboxBackend
from connectors.email.sendgrid import SendGridBackend
from connectors.email.smtp import SmtpBackend
from core.errors import ConfigError
from core.safety import require_public_url
from core.settings import Settings

__all__ = ["EmailBackend", "SendResult", "get_backend"]


def get_backend(settings: Settings) -> EmailBackend:
    """The backend the configuration names."""
    if settings.email_backend == "outbox":
        return OutboxBackend(settings.outbox_dir, signer=signer_from_settings(settings))
    if settings.email_backend == "console":
        return ConsoleBackend()
    require_public_url(settings)  # a real backend fails closed before anything is claimed
    if settings.email_backend == "sendgrid":
        if not settings.sendgrid_api_key:
            raise ConfigError("ABM_EMAIL_BACKEND=sendgrid needs ABM_SENDGRID_API_KEY")
        return SendGridBackend(
            settings.sendgrid_api_key, settings.sendgrid_base_url, sandbox=settings.sendgrid_sandbox
        )
    if settings.email_backend == "smtp":
        if not settings.smtp_url:
            raise ConfigError(
                "ABM_EMAIL_BACKEND=smtp needs ABM_SMTP_URL (smtp://user:pass@host:587)"
            )
        signer = signer_from_settings(settings)
        if signer is not None and settings.smtp_relay == "ses":
            raise ConfigError(
                "ABM_SMTP_RELAY=ses with ABM_DKIM_*: Amazon SES replaces the Date and "
                "Message-ID headers, which breaks a signature made before it. Let SES sign "
                "(Easy DKIM or BYODKIM) and unset ABM_DKIM_DOMAIN, ABM_DKIM_SELECTOR and "
                "ABM_DKIM_PRIVATE_KEY"
            )
        try:
            return SmtpBackend.from_url(settings.smtp_url, relay=settings.smtp_relay, signer=signer)
        except ConfigError as exc:
            raise ConfigError(f"ABM_SMTP_URL: {exc}") from None
    raise ConfigError(f"ABM_EMAIL_BACKEND={settings.email_backend}: unknown backend")

"""LinkedIn channel: matched audiences, ad analytics by company, lead forms, rep tasks."""

from connectors.linkedin.client import (
    LinkedInAuthError,
    LinkedInConnector,
    hash_email,
    simulated_organizations,
)
from connectors.linkedin.tasks import export_rep_tasks, task_key
from core.settings import Settings

__all__ = [
    "LinkedInAuthError",
    "LinkedInConnector",
    "export_rep_tasks",
    "get_connector",
    "hash_email",
    "simulated_organizations",
    "task_key",
]


def get_connector(settings: Settings) -> LinkedInConnector:
    """The LinkedIn connector `ABM_LINKEDIN_MODE` names (sandbox by default: files, no network)."""
    return LinkedInConnector(
        settings.linkedin_mode,  # type: ignore[arg-type]
        sandbox_dir=settings.state_dir / "linkedin" / "sandbox",
        access_token=settings.linkedin_access_token,
        ad_account=settings.linkedin_ad_account,
        base_url=settings.linkedin_base_url,
    )

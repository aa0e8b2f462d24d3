"""LinkedIn channel: matched audiences, ad analytics by company, lead forms, rep tasks."""

from pathlib import Path

from connectors.linkedin.client import (
    LinkedInAuthError,
    LinkedInConfigError,
    LinkedInConnector,
    account_urn,
    hash_email,
)
from connectors.linkedin.sandbox import ANALYTICS_FILE, LEADS_FILE, SANDBOX_FILES, present_files
from connectors.linkedin.tasks import export_rep_tasks, task_key
from core.settings import Settings

__all__ = [
    "ANALYTICS_FILE",
    "LEADS_FILE",
    "SANDBOX_FILES",
    "LinkedInAuthError",
    "LinkedInConfigError",
    "LinkedInConnector",
    "account_urn",
    "export_rep_tasks",
    "get_connector",
    "hash_email",
    "present_files",
    "sandbox_files_dir",
    "task_key",
]


def sandbox_files_dir(settings: Settings) -> Path:
    """Where sandbox mode reads analytics and lead forms: `ABM_LINKEDIN_SANDBOX_DIR`, else
    `<state dir>/sandbox/linkedin`."""
    return settings.linkedin_sandbox_dir or settings.state_dir / "sandbox" / "linkedin"


def get_connector(settings: Settings) -> LinkedInConnector:
    """The LinkedIn connector `ABM_LINKEDIN_MODE` names (sandbox by default: no network; it
    records its requests and reads only the user's sandbox files)."""
    return LinkedInConnector(
        settings.linkedin_mode,  # type: ignore[arg-type]
        sandbox_dir=settings.state_dir / "linkedin" / "sandbox",
        sandbox_files=sandbox_files_dir(settings),
        access_token=settings.linkedin_access_token,
        ad_account=settings.linkedin_ad_account,
        base_url=settings.linkedin_base_url,
        version=settings.linkedin_version,
        source_platform=settings.linkedin_source_platform or None,
    )

"""The CRM backends (`base.CrmBackend`): HubSpot, Salesforce and the sandbox's files, chosen
by ABM_CRM through `get_crm`."""

from __future__ import annotations

from pathlib import Path

from connectors.crm.base import (
    PULL_KINDS,
    CrmAccount,
    CrmAuthError,
    CrmBackend,
    CrmDeal,
    CrmMeeting,
    CrmOwner,
    PullKind,
    PullPage,
    WriteBackResult,
)
from connectors.crm.hubspot import HubSpotAuthError, HubSpotCrm
from connectors.crm.sandbox import SandboxCrm
from core.errors import ConfigError
from core.settings import Settings

__all__ = [
    "PULL_KINDS",
    "CrmAccount",
    "CrmAuthError",
    "CrmBackend",
    "CrmDeal",
    "CrmMeeting",
    "CrmOwner",
    "HubSpotAuthError",
    "HubSpotCrm",
    "PullKind",
    "PullPage",
    "SandboxCrm",
    "WriteBackResult",
    "crm_choice",
    "crm_sandbox_dir",
    "get_crm",
]


def crm_choice(settings: Settings) -> str:
    """The CRM ABM_CRM names, `auto` resolved (hubspot when ABM_HUBSPOT_ACCESS_TOKEN is set,
    else none), without building a client: for callers that only ask whether there is one."""
    if settings.crm == "auto":
        return "hubspot" if settings.hubspot_access_token else "none"
    return settings.crm


def crm_sandbox_dir(settings: Settings) -> Path:
    """Where the sandbox CRM reads and writes: ABM_CRM_SANDBOX_DIR, else
    <state dir>/sandbox/crm."""
    return settings.crm_sandbox_dir or settings.state_dir / "sandbox" / "crm"


def get_crm(settings: Settings) -> CrmBackend | None:
    """The CRM backend ABM_CRM names, or None for `none` (and `auto` without a HubSpot
    token). A chosen CRM whose credentials are missing is a ConfigError naming the setting."""
    choice = crm_choice(settings)
    if choice == "none":
        return None
    if choice == "hubspot":
        if not settings.hubspot_access_token:
            raise ConfigError(
                "ABM_CRM=hubspot needs ABM_HUBSPOT_ACCESS_TOKEN: the access token of a HubSpot "
                "private app (see connectors/crm/README.md)"
            )
        return HubSpotCrm(
            settings.hubspot_access_token,
            settings.hubspot_base_url,
            property_prefix=settings.hubspot_property_prefix,
        )
    if choice == "salesforce":
        # imported here: its client (and its OAuth) loads only when Salesforce is the CRM
        from connectors.crm.salesforce import SalesforceCrm

        return SalesforceCrm.from_settings(settings)
    if choice == "sandbox":
        return SandboxCrm(crm_sandbox_dir(settings))
    raise ConfigError(f"ABM_CRM: {choice!r} is not a CRM this version knows")

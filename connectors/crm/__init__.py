"""CRM write-back: ABM scores, stages and tiers onto the CRM's company records."""

from __future__ import annotations

from connectors.crm.hubspot import HubSpotAuthError, HubSpotCrm, WriteBackResult
from core.settings import Settings

__all__ = ["HubSpotAuthError", "HubSpotCrm", "WriteBackResult", "get_crm"]


def get_crm(settings: Settings) -> HubSpotCrm | None:
    """The CRM the configuration names, or None when none is configured."""
    if not settings.hubspot_access_token:
        return None
    return HubSpotCrm(
        settings.hubspot_access_token,
        settings.hubspot_base_url,
        property_prefix=settings.hubspot_property_prefix,
    )

"""CRM write-back: ABM scores, stages and tiers onto the CRM's company records."""

from connectors.crm.hubspot import HubSpotAuthError, HubSpotCrm, WriteBackResult, normalise_domain

__all__ = ["HubSpotAuthError", "HubSpotCrm", "WriteBackResult", "normalise_domain"]

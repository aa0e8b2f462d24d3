"""LinkedIn channel: matched audiences, ad analytics by company, lead forms, rep tasks."""

from connectors.linkedin.client import (
    LinkedInAuthError,
    LinkedInConnector,
    hash_email,
    simulated_organizations,
)
from connectors.linkedin.tasks import export_rep_tasks, task_key

__all__ = [
    "LinkedInAuthError",
    "LinkedInConnector",
    "export_rep_tasks",
    "hash_email",
    "simulated_organizations",
    "task_key",
]

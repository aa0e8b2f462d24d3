"""CRM write-back by change: accounts whose ABM results differ from what the CRM last got."""

from stages.crm.push import PUSH_BATCH, Crm, PushReport, push_changed

__all__ = ["PUSH_BATCH", "Crm", "PushReport", "push_changed"]

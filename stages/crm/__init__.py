"""CRM write-back by change: accounts whose ABM results differ from what the CRM last got."""

from stages.crm.push import PushReport, push_changed

__all__ = ["PushReport", "push_changed"]

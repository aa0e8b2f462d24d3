"""The shape every email backend has: the channel backend's, for email messages."""

from __future__ import annotations

from email.message import Message

from connectors.backend import Backend, Outcome, SendResult

__all__ = ["EmailBackend", "Outcome", "SendResult"]


class EmailBackend(Backend[Message]):
    """A backend that sends `email.message.Message`s (outbox, console, SMTP, SendGrid)."""

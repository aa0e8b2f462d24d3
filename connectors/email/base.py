"""The shape every email backend has, after Django's email backends: open lazily, send a
batch, say what happened to each message, close what you opened."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from types import TracebackType
from typing import Literal

Outcome = Literal["accepted", "retryable", "permanent"]


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one message."""

    message_id: str
    outcome: Outcome
    provider_id: str | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


class EmailBackend(ABC):
    """Base class. Subclasses implement `send_messages`; `open`/`close` are optional.

    `idempotent` is True when sending the same Message-ID twice cannot deliver twice (the
    outbox): a message whose fate a crash left unknown can then simply be sent again.
    `batch_size` bounds how many messages go out between two ledger commits, which is the
    most a crash can leave uncertain.
    """

    name: str = "base"
    idempotent: bool = False
    batch_size: int = 1

    def open(self) -> None:
        """Open connections; a no-op by default. Calling it twice must be harmless."""

    def close(self) -> None:
        """Close what `open` opened; a no-op by default."""

    @abstractmethod
    def send_messages(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send a batch and return one result per message, in order (empty batch: [])."""

    def __enter__(self) -> EmailBackend:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

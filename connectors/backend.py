"""The one shape every channel has, after Django's email backends: open lazily, send a batch,
say what happened to each item, close what you opened. Email messages, rep tasks and matched
audiences all go out through it, so the send loop has one path."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Self, TypeVar

from connectors.http import Closing

# accepted: the provider took it. retryable: try this item again later (rate limit, outage).
# permanent: this recipient can never get it (bad address). blocked: nothing can be sent
# until a person fixes something on our side (a wrong key, an unverified sender, a setting):
# the run stops, the campaign pauses with the reason, the item stays retryable.
# uncertain: the request may have been processed (a timeout or a 5xx after it was sent) and
# sending again could deliver twice: the item waits for a provider event to settle it.
Outcome = Literal["accepted", "retryable", "permanent", "blocked", "uncertain"]
Item = TypeVar("Item")


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one item."""

    message_id: str
    outcome: Outcome
    provider_id: str | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


class Backend(Closing, ABC, Generic[Item]):
    """Base class. Subclasses implement `send_messages`; `open`/`close` are optional.

    `idempotent` is True when sending the same item twice cannot reach a person twice (the
    outbox, a rep-task file keyed per task): an item whose fate a crash left unknown can
    then simply be sent again. `batch_size` bounds how many items go out between two ledger
    commits, which is the most a crash can leave uncertain.
    """

    name: str = "base"
    idempotent: bool = False
    batch_size: int = 1

    def open(self) -> None:
        """Open connections; a no-op by default. Calling it twice must be harmless."""

    def close(self) -> None:
        """Close what `open` opened; a no-op by default."""

    @abstractmethod
    def send_messages(self, messages: Sequence[Item]) -> list[SendResult]:
        """Send a batch and return one result per item, in order (empty batch: [])."""

    def __enter__(self) -> Self:
        self.open()
        return self

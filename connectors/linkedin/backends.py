"""LinkedIn as channel backends: rep tasks appended to a CSV (LinkedIn's API cannot message
people) and matched audiences uploaded for ads, each sending a batch and answering per item
like the email backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from connectors.backend import Backend, Outcome, SendResult
from connectors.linkedin.client import LinkedInConnector
from connectors.linkedin.tasks import export_rep_tasks
from core.errors import ConfigError


class RepTaskBackend(Backend[Mapping[str, object]]):
    """Each item is one rep task; the file never holds a task twice, so a replay is harmless."""

    name = "linkedin-tasks"
    idempotent = True
    batch_size = 10_000

    def __init__(self, path: Path) -> None:
        self.path = path

    def send_messages(self, messages: Sequence[Mapping[str, object]]) -> list[SendResult]:
        if not messages:
            return []
        export_rep_tasks(self.path, list(messages))
        return [SendResult("", "accepted", provider_id=self.path.name) for _ in messages]


class MatchedAudienceBackend(Backend[str]):
    """Each item is a contact's email or an account's domain, added to one named segment.
    LinkedIn answers 201 for a member already there, so a replayed batch is harmless. A
    failure applies to the whole batch, since the segment either took it or it did not: a
    configuration error (a missing setting, a refused token, a sunset API version, a
    sourcePlatform LinkedIn does not know) blocks it until a person fixes the setting;
    anything else leaves it retryable."""

    name = "linkedin-audience"
    idempotent = True
    batch_size = 10_000

    def __init__(
        self,
        connect: Callable[[], LinkedInConnector],
        audience: str,
        members: Literal["contacts", "companies"],
    ) -> None:
        self.connect, self.audience, self.members = connect, audience, members

    def send_messages(self, messages: Sequence[str]) -> list[SendResult]:
        if not messages:
            return []
        try:
            with self.connect() as connector:
                if self.members == "companies":
                    segment = connector.upload_company_audience(
                        self.audience, sorted(set(messages))
                    )
                else:
                    segment = connector.upload_contact_audience(self.audience, list(messages))
        except Exception as exc:
            error = f"linkedin: {type(exc).__name__}: {exc}"[:1000]
            outcome: Outcome = "blocked" if isinstance(exc, ConfigError) else "retryable"
            return [SendResult("", outcome, error=error) for _ in messages]
        return [SendResult("", "accepted", provider_id=str(segment)) for _ in messages]

"""The outbox backend: every message becomes a real RFC 5322 `.eml` file, named after its
Message-ID, so writing the same message twice leaves one file (exactly once by construction)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from email.message import Message
from email.policy import compat32
from pathlib import Path

from connectors.email.base import EmailBackend, SendResult

_CRLF = compat32.clone(linesep="\r\n")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def eml_name(message_id: str) -> str:
    """A file name derived from the Message-ID (angle brackets and odd characters removed)."""
    return _UNSAFE.sub("_", message_id.strip().strip("<>")) + ".eml"


class OutboxBackend(EmailBackend):
    name = "outbox"
    idempotent = True
    batch_size = 500

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def send_messages(self, messages: Sequence[Message]) -> list[SendResult]:
        self.open()
        results = []
        for message in messages:
            message_id = message["Message-ID"]
            if not message_id:
                results.append(SendResult("", "permanent", error="message has no Message-ID"))
                continue
            path = self.directory / eml_name(message_id)
            if not path.exists():
                temporary = path.with_suffix(f".tmp{os.getpid()}")
                temporary.write_bytes(message.as_bytes(policy=_CRLF))
                os.replace(temporary, path)
            results.append(SendResult(message_id, "accepted", provider_id=path.name))
        return results

"""The console backend: prints each message to a stream, for trying templates by eye."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from email.message import Message
from typing import TextIO

from connectors.email.base import EmailBackend, SendResult


class ConsoleBackend(EmailBackend):
    name = "console"
    batch_size = 100

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send_messages(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for message in messages:
            self.stream.write(message.as_string())
            self.stream.write("\n" + "-" * 79 + "\n")
            results.append(SendResult(message["Message-ID"], "accepted"))
        self.stream.flush()
        return results

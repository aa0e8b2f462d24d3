"""The outbox backend: every message becomes a real RFC 5322 `.eml` file, named after its
Message-ID, so writing the same message twice leaves one file (exactly once by construction).
With a DKIM signer each file is signed as SMTP would send it, so it can be checked or relayed
as it is."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from email.message import Message
from email.policy import compat32
from pathlib import Path

from connectors.email.base import EmailBackend, SendResult
from connectors.email.dkim import DkimSigner

_CRLF = compat32.clone(linesep="\r\n")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def eml_name(message_id: str) -> str:
    """A file name derived from the Message-ID (angle brackets and odd characters removed)."""
    return _UNSAFE.sub("_", message_id.strip().strip("<>")) + ".eml"


class OutboxBackend(EmailBackend):
    name = "outbox"
    idempotent = True
    batch_size = 500

    def __init__(self, directory: Path, signer: DkimSigner | None = None) -> None:
        self.directory = Path(directory)
        self.signer = signer

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
            data = message.as_bytes(policy=_CRLF)
            if self.signer is not None:
                data = self.signer.sign(data)
            _write_once(path, data)
            results.append(SendResult(message_id, "accepted", provider_id=path.name))
        return results


def _write_once(path: Path, data: bytes) -> None:
    """Write `path` unless it exists, never leaving a partial file under its name: write a
    temporary file, then hard-link it into place (which fails when the message is already
    there, so a repeat is a no-op without a check-then-write race). Where hard links are
    not supported, a rename does the same job."""
    temporary = f"{path}.tmp{os.getpid()}-{threading.get_ident()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    except OSError:
        if not path.exists():
            os.replace(temporary, path)
            return
    os.unlink(temporary)

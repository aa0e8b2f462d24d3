"""The loopback SMTP server the benchmark sends to: the test suite's aiosmtpd server
(`tests/smtp_server.py`, started the same way) with a handler that only counts, so that
100,000 messages cost the server no memory. `python -m bench` runs it in its own process,
apart from the processes it measures."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from bench.common import REPO_ROOT


def _test_smtp_server() -> ModuleType:
    """`tests/smtp_server.py`, loaded from its file (the tests folder is not a package)."""
    name = "smtp_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / "smtp_server.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being created
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class CountingHandler:
    """Accepts every message; keeps counts, not contents."""

    messages: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages += 1
            self.bytes += len(envelope.original_content or b"")
        return "250 OK"


@contextmanager
def smtp_sink() -> Iterator[tuple[str, CountingHandler]]:
    """`(smtp://127.0.0.1:PORT, handler)` while an aiosmtpd server runs in this process."""
    handler = CountingHandler()
    with _test_smtp_server().smtp_server(handler) as controller:
        yield f"smtp://{controller.hostname}:{controller.port}", handler

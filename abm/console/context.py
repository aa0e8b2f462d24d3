"""What every console page is built with: the configuration and the database, bound once
when the app is made (tests pass their own)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from core.settings import Settings


@dataclass(frozen=True)
class ConsoleContext:
    settings: Settings
    engine: Engine

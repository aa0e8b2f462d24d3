"""Placeholder until this page is built: no routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

from abm.console.context import ConsoleContext


def routes(context: ConsoleContext) -> list[BaseRoute]:
    return []

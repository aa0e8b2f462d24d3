"""Placeholder: refuses every request until the sign-in is built."""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from abm.console.context import ConsoleContext


class ConsoleAccess:
    def __init__(self, app: ASGIApp, context: ConsoleContext) -> None:
        self.app, self.context = app, context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await PlainTextResponse("sign in first", status_code=401)(scope, receive, send)

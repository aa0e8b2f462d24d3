"""The audit log: every operator action, newest first, 50 a page, for any signed-in user
(seeing who paused what is no operator's privilege)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from abm.console.context import ConsoleContext
from abm.console.render import page, whole_number
from models.audit import audit_page


def page_number(text: str | None) -> int:
    """?page=N as a page number; anything else is the first page."""
    return whole_number(text or "", digits=8) or 1


def routes(context: ConsoleContext) -> list[BaseRoute]:
    async def audit(request: Request) -> Response:
        found = await run_in_threadpool(
            audit_page, context.engine, page_number(request.query_params.get("page"))
        )
        return page(
            request,
            "audit.html",
            active="audit",
            notice=None,
            problem=None,
            log=found,
        )

    return [Route("/audit", audit, methods=["GET"])]

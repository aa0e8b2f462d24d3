"""The console as one sub-application mounted at /console: its pages, its static files and
the sign-in in front of all of them (abm/console/access.py). Nothing under /console answers
without a session but the sign-in page and the static files; the webhooks, tracking and
unsubscribe routes of the outer app keep their own signatures and never see it."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from abm.console.access import ConsoleAccess, http_error_page
from abm.console.context import ConsoleContext
from abm.console.pages import accounts, audit, campaigns, report, signin, suppressions

STATIC = Path(__file__).parent / "static"


def console_app(context: ConsoleContext) -> Starlette:
    """The console's own app, to mount at /console: every route behind ConsoleAccess."""

    async def home(_request: object) -> RedirectResponse:
        return RedirectResponse("/console/accounts", status_code=303)

    return Starlette(
        middleware=[Middleware(ConsoleAccess, context=context)],
        exception_handlers={HTTPException: http_error_page},
        routes=[
            Route("/", home),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            *signin.routes(context),
            *accounts.routes(context),
            *campaigns.routes(context),
            *suppressions.routes(context),
            *report.routes(context),
            *audit.routes(context),
        ],
    )


def console_mount(context: ConsoleContext) -> Mount:
    """The console for the outer app's routes."""
    return Mount("/console", app=console_app(context))

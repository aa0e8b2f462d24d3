"""The report `abm report --html` writes, shown in the console to signed-in users, read
fresh on every request, under the console's own bar (the way back to the other pages)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from abm.console.context import ConsoleContext
from abm.console.render import NAV, PAGE_HEADERS, environment
from stages.report import render_html, report_data
from stages.targeting.scoring import load_icp_rules

# The report is one self-contained document: its CSS in a <style> element and colour
# swatches in style attributes, and no script at all. So this response alone allows inline
# styles, and still no script of any kind (not even the console's own file); everything
# else is as strict as every console page.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
REPORT_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": REPORT_CSP}


def report_page(context: ConsoleContext, bar: str) -> str:
    """The report as `abm report --html` builds it, with the console's bar at the top."""
    required = load_icp_rules(context.settings.icp_rules).committee.required_roles
    html = render_html(report_data(context.engine, list(required)))
    if "<body>" not in html:  # the report's template changed shape: say so, do not guess
        raise RuntimeError("the report has no <body> to put the console's bar in")
    return html.replace("<body>", "<body>" + bar, 1)


def routes(context: ConsoleContext) -> list[BaseRoute]:
    async def report(request: Request) -> Response:
        bar = environment.get_template("report_bar.html").render(
            user=request.state.user, csrf_token=request.state.csrf_token, nav=NAV
        )
        html = await run_in_threadpool(report_page, context, bar)
        return HTMLResponse(html, headers=REPORT_HEADERS)

    return [Route("/report", report, methods=["GET", "HEAD"])]

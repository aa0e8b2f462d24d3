"""The campaigns and one campaign: its funnel per step and A/B result as the report counts
them, every person with step, state, next due time and why, and (for operators) pause,
resume and the release of an account a reply holds back. Every action is a POST with the
session's CSRF token, kept in the audit log, and answered by a redirect carrying a notice
code, never personal data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from abm.console.access import checked_form, require_operator
from abm.console.context import ConsoleContext
from abm.console.render import page, whole_number
from core.domains import domain_or_none
from core.errors import AbmError
from core.vocabulary import PERSON_STATES
from models.audit import record_action
from stages.delivery.campaigns import (
    campaign_row,
    campaign_rows,
    held_accounts,
    progress_in_words,
    progress_share,
    with_unplanned,
)
from stages.delivery.ledger import set_campaign_status
from stages.delivery.people import campaign_people, count_people
from stages.delivery.send_rules import release_account
from stages.report.data import MIN_SENT_PER_VARIANT, campaign_results
from stages.report.text import skip_reason_text

PAGE_SIZE = 50
HELD_SHOWN = 20  # accounts held back by a reply listed with a button; People lists them all
# What a redirect's `notice` code says on the page: codes only, so no URL carries a name.
NOTICES = {
    "paused": "Paused: nothing more is sent until someone resumes it (a run in progress "
    "stops before its next batch).",
    "resumed": "Resumed: the next run or schedule sends what is due.",
    "already-paused": "It was already paused: nothing changed.",
    "already-active": "It was already active: nothing changed.",
    "released": "Released: the account's held messages are due again and go out at the next run.",
    "nothing-held": "Released, though none of the account's messages were held back by a "
    "reply: a later reply there holds them again.",
}
AB_RESULTS = {
    "significant": "a real difference (p < 0.05)",
    "not_significant": "no real difference yet (p ≥ 0.05)",
    "not_enough_data": "not enough data yet to tell: it needs at least "
    f"{MIN_SENT_PER_VARIANT} sends of each variant, and a few clicks",
}


class BadParameter(ValueError):
    """A query parameter the people list cannot use: the page says which, with status 400."""


@dataclass(frozen=True)
class PeopleQuery:
    """Which people of a campaign a request asks for, checked."""

    state: str | None = None
    domain: str | None = None
    after: int | None = None
    before: int | None = None
    start: int = 1  # the position of the page's first row, for "rows 51-100"

    def params(self) -> dict[str, str]:
        """The filters, for links (never the bookmarks)."""
        found = {"state": self.state, "account": self.domain}
        return {name: value for name, value in found.items() if value}


def _whole(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    number = whole_number(raw)
    if number is None:
        raise BadParameter(f"{name}: a whole number")
    return number


def parse_people(params: Mapping[str, str]) -> PeopleQuery:
    """The filters and bookmark of a query string (an empty value means "any");
    BadParameter naming the first one the list cannot use."""
    state = params.get("state", "").strip() or None
    if state is not None and state not in PERSON_STATES:
        raise BadParameter(f"state: use one of {', '.join(PERSON_STATES)}")
    raw = params.get("account", "").strip()
    domain = None
    if raw:
        domain = domain_or_none(raw)
        if domain is None:
            raise BadParameter("account: an account's domain, like acme.com")
    after, before = _whole(params, "after"), _whole(params, "before")
    if after is not None and before is not None:
        raise BadParameter("after and before: one of them")
    start = _whole(params, "start") or 1
    return PeopleQuery(state, domain, after, before, max(1, start))


def people_page(
    context: ConsoleContext, campaign_id: int, steps: list[str], query: PeopleQuery
) -> dict[str, Any]:
    """A page of the campaign's people and the bookmarks of the pages around it: a page
    asks for one row more than it shows to know whether there is another."""
    engine = context.engine
    moved = None
    try:
        rows = list(
            campaign_people(
                engine,
                campaign_id,
                steps,
                query.state,
                query.domain,
                limit=PAGE_SIZE + 1,
                after=query.after,
                before=query.before,
            )
        )
    except LookupError:  # the row the link started from is gone (a rehearsal's, say)
        query = PeopleQuery(query.state, query.domain)
        moved = (
            "The page you asked for started at a row no longer in this campaign: here is "
            "the first page."
        )
        rows = list(
            campaign_people(
                engine, campaign_id, steps, query.state, query.domain, limit=PAGE_SIZE + 1
            )
        )
    backwards = query.before is not None
    more = len(rows) > PAGE_SIZE
    rows = rows[-PAGE_SIZE:] if backwards else rows[:PAGE_SIZE]
    start = 1 if query.after is None and query.before is None else query.start
    if backwards and not more:  # back at the beginning, whatever `start` claimed
        start = 1
    links: dict[str, str | None] = {"first": None, "previous": None, "next": None}
    base = query.params()
    if query.after is not None or query.before is not None:
        links["first"] = urlencode(base)
    if rows and (more if backwards else query.after is not None):
        previous = {**base, "before": str(rows[0]["delivery_id"])}
        links["previous"] = urlencode({**previous, "start": max(1, start - PAGE_SIZE)})
    if rows and (backwards or more):
        following = {**base, "after": str(rows[-1]["delivery_id"]), "start": start + len(rows)}
        links["next"] = urlencode(following)
    for row in rows:
        row["step_label"] = f"{row['step']} ({row['variant']})" if row["variant"] else row["step"]
    total = count_people(engine, campaign_id, query.state, query.domain)
    return {"people": rows, "total": total, "start": start, "links": links, "moved": moved}


def _details(context: ConsoleContext, key: str, query: PeopleQuery) -> dict[str, Any] | None:
    engine = context.engine
    campaign = campaign_row(engine, key, progress=False)  # the results count it
    if campaign is None:
        return None
    results = campaign_results(engine, campaign["id"])
    if results is None:  # deleted since the line above
        return None
    totals = results["totals"]
    campaign["progress"] = {"sent": totals["sent"], "planned": totals["planned"]}
    if campaign["steps"]:
        steps = [step["id"] for step in campaign["steps"]]
    else:  # the file is gone or invalid: the order the ledger planned them in
        steps = [step["step"] for step in results["steps"]]
    for step in results["steps"]:
        step["skipped_in_words"] = [
            (skip_reason_text(reason), n) for reason, n in step["skipped_by_reason"].items()
        ]
    # every step of the file, those the ledger has no row for yet too: after a first run
    # the funnel shows the later steps waiting to be planned, not a finished campaign
    funnel = with_unplanned(campaign["steps"], results["steps"])
    campaign["progress"]["words"] = progress_in_words(funnel)
    campaign["progress"]["share"] = progress_share(funnel)
    for test in results["ab_tests"]:
        for comparison in test["comparisons"]:
            comparison["in_words"] = AB_RESULTS.get(comparison["result"], comparison["result"])
    return {
        "campaign": campaign,
        "results": results,
        "funnel": funnel,
        "held": held_accounts(engine, campaign["id"], HELD_SHOWN + 1),
        "held_shown": HELD_SHOWN,
        **people_page(context, campaign["id"], steps, query),
    }


def _back(key: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"/console/campaigns/{quote(key, safe='')}?notice={notice}", 303)


def _missing(request: Request, what: str) -> Response:
    """404: no campaign with this key (`what` names it and says what follows)."""
    return page(
        request,
        "campaign.html",
        status_code=404,
        active="campaigns",
        campaign=None,
        problem=f"There is no campaign with the key {what}",
    )


def routes(context: ConsoleContext) -> list[BaseRoute]:
    engine = context.engine

    async def campaigns(request: Request) -> Response:
        rows = await run_in_threadpool(campaign_rows, engine)
        return page(
            request, "campaigns.html", active="campaigns", rows=rows, notice=None, problem=None
        )

    async def campaign(request: Request) -> Response:
        key = request.path_params["key"]
        notice = NOTICES.get(request.query_params.get("notice", ""))
        try:
            query = parse_people(request.query_params)
        except BadParameter as bad:
            query, problem, status = PeopleQuery(), f"The list cannot use {bad}.", 400
        else:
            problem, status = None, 200
        details = await run_in_threadpool(_details, context, key, query)
        if details is not None and details["moved"]:
            problem = details["moved"]
        if details is None:
            return _missing(request, f"{key}: `abm campaign run FILE` starts one.")
        return page(
            request,
            "campaign.html",
            status_code=status,
            active="campaigns",
            query=query,
            states=PERSON_STATES,
            notice=notice,
            problem=problem,
            **details,
        )

    async def change(request: Request, status: str) -> Response:
        await checked_form(request)
        require_operator(request)
        key = request.path_params["key"]
        user = request.state.user
        found = await run_in_threadpool(campaign_row, engine, key, False)
        if found is None:
            return _missing(request, f"{key}: nothing changed.")
        if found["status"] == status:
            return _back(key, f"already-{status}")
        # a person's pause keeps no reason in the campaign row (a reason there means a
        # rule paused it, and `abm campaign run` exits 3); the audit log says who and when
        await run_in_threadpool(set_campaign_status, engine, found["id"], status)
        action = "campaign.pause" if status == "paused" else "campaign.resume"
        was = f"was {found['status']}"
        if found["paused_because"] and status == "active":
            was += f": {found['paused_because']}"
        await run_in_threadpool(
            lambda: record_action(engine, user.name, action, key, was, role=user.role)
        )
        return _back(key, "paused" if status == "paused" else "resumed")

    async def pause(request: Request) -> Response:
        return await change(request, "paused")

    async def resume(request: Request) -> Response:
        return await change(request, "active")

    async def release(request: Request) -> Response:
        form = await checked_form(request)
        require_operator(request)
        key = request.path_params["key"]
        user = request.state.user
        domain = domain_or_none(str(form.get("account", "")))
        found = await run_in_threadpool(campaign_row, engine, key, False)
        if found is None or domain is None:
            what = f"the campaign {key}" if found is None else "the account to release"
            return page(
                request,
                "campaign.html",
                status_code=404 if found is None else 400,
                active="campaigns",
                campaign=None,
                notice=None,
                problem=f"Nothing changed: {what} was not found.",
            )
        try:
            due = await run_in_threadpool(release_account, engine, found["id"], domain)
        except AbmError as exc:
            return page(
                request,
                "campaign.html",
                status_code=404,
                active="campaigns",
                campaign=None,
                notice=None,
                problem=f"Nothing changed: {exc}.",
            )
        detail = f"account {domain}: {due} held messages due again"
        await run_in_threadpool(
            lambda: record_action(
                engine, user.name, "campaign.release-account", key, detail, role=user.role
            )
        )
        return _back(key, "released" if due else "nothing-held")

    return [
        Route("/campaigns", campaigns, methods=["GET", "HEAD"]),
        Route("/campaigns/{key}", campaign, methods=["GET", "HEAD"]),
        Route("/campaigns/{key}/pause", pause, methods=["POST"]),
        Route("/campaigns/{key}/resume", resume, methods=["POST"]),
        Route("/campaigns/{key}/release", release, methods=["POST"]),
    ]

"""Suppressions in the browser: the list in force (or the lifted history) by kind and
channel a page at a time, a search, and for operators adding one and lifting one with a
reason. A search may be an email address, so it is posted and answered on the response,
never put in a URL; an unsubscribe is never lifted here (only the person can take it back,
`abm suppressions remove VALUE --person-asked`). Every change is kept in the audit log."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from abm.console.access import checked_form, require_operator
from abm.console.context import ConsoleContext
from abm.console.render import page, whole_number
from core.errors import AbmError
from models.audit import record_action
from models.store import (
    SuppressionNotFound,
    UnsubscribeNotLifted,
    add_suppressions,
    count_suppressions,
    lift_suppressions,
    lifted_suppression_rows,
    suppression_rows,
)
from stages.importing.suppressions import CHANNELS, KINDS, suppression_key

PAGE_SIZE = 50
SEARCH_LENGTH = 320
REASON_LENGTH = 200  # the suppression table's reason column
LIFT_REASON_LENGTH = 1000
NOTICES = {
    "added": "Added: nobody it names is contacted on that channel from the next send on.",
    "exists": "That suppression was already there: nothing changed.",
    "lifted": "Lifted, and kept in the lifted history with your name and reason: the people "
    "it alone held can be contacted again.",
}
UNSUBSCRIBE_TEXT = (
    "An unsubscribe is the person's own withdrawal of consent: privacy and anti-spam law "
    "(GDPR, PECR, CAN-SPAM) lets only that person take it back, so it cannot be lifted here. "
    "If they asked to hear from you again, run on the server: abm suppressions remove VALUE "
    '--person-asked --reason "when and how they asked"'
)


class BadParameter(ValueError):
    """A filter the list cannot use: the page says which, with status 400."""


@dataclass(frozen=True)
class Listing:
    """Which suppressions a request asks for, checked."""

    kind: str | None = None
    channel: str | None = None
    lifted: bool = False
    search: str | None = None
    page: int = 1

    def params(self) -> dict[str, str]:
        """The filters for links: never the search, which may be an email address."""
        found = {"kind": self.kind, "channel": self.channel, "view": "lifted" * self.lifted}
        return {name: value for name, value in found.items() if value}


def parse_listing(values: Mapping[str, Any], search: bool = False) -> Listing:
    """The filters and page of a query string (or, `search`, of the search form too); an
    empty value means any; BadParameter naming the first one the list cannot use."""
    kind = str(values.get("kind", "")).strip() or None
    if kind is not None and kind not in KINDS:
        raise BadParameter(f"kind: use one of {', '.join(KINDS)}")
    channel = str(values.get("channel", "")).strip() or None
    if channel is not None and channel not in CHANNELS:
        raise BadParameter(f"channel: use one of {', '.join(CHANNELS)}")
    view = str(values.get("view", "")).strip()
    if view not in ("", "lifted"):
        raise BadParameter("view: lifted, or nothing for the suppressions in force")
    number = whole_number(str(values.get("page", "")).strip() or "1", digits=9)
    if not number:
        raise BadParameter("page: a whole number from 1")
    text = str(values.get("q", "")).strip() if search else ""
    if len(text) > SEARCH_LENGTH:
        raise BadParameter(f"search: at most {SEARCH_LENGTH} characters")
    return Listing(kind, channel, view == "lifted", text or None, number)


def listing_data(context: ConsoleContext, listing: Listing) -> dict[str, Any]:
    """The page of suppressions asked for (the last one if it asked past the end)."""
    engine = context.engine
    filters = (listing.kind, listing.channel, listing.search)
    total = count_suppressions(engine, *filters, lifted=listing.lifted)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    number = min(listing.page, pages)
    read = lifted_suppression_rows if listing.lifted else suppression_rows
    rows = read(engine, *filters, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    anything = total or count_suppressions(engine, lifted=listing.lifted)
    return {"rows": rows, "total": total, "page": number, "pages": pages, "anything": anything}


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def routes(context: ConsoleContext) -> list[BaseRoute]:
    engine = context.engine

    async def show(
        request: Request,
        listing: Listing,
        status: int = 200,
        problem: str | None = None,
        added: Mapping[str, str] | None = None,
    ) -> Response:
        data = await run_in_threadpool(listing_data, context, listing)
        return page(
            request,
            "suppressions.html",
            status_code=status,
            active="suppressions",
            listing=listing,
            params=listing.params(),
            kinds=KINDS,
            channels=CHANNELS,
            unsubscribe_text=UNSUBSCRIBE_TEXT,
            added=added or {},
            notice=NOTICES.get(request.query_params.get("notice", "")),
            problem=problem,
            **data,
        )

    async def suppressions(request: Request) -> Response:
        try:
            listing = parse_listing(request.query_params)
        except BadParameter as bad:
            return await show(request, Listing(), 400, f"The list cannot use {bad}.")
        return await show(request, listing)

    async def search(request: Request) -> Response:
        form = await checked_form(request)  # reading is for viewers too; the token still
        try:
            listing = parse_listing(form, search=True)
        except BadParameter as bad:
            return await show(request, Listing(), 400, f"The search cannot use {bad}.")
        return await show(request, listing)

    async def add(request: Request) -> Response:
        form = await checked_form(request)
        require_operator(request)
        user = request.state.user
        typed = {name: _text(form, name) for name in ("value", "channel", "reason")}
        channel = typed["channel"] or "all"
        problem = None
        try:
            kind, value = suppression_key(typed["value"])
        except AbmError as exc:
            problem = f"Nothing was added: {exc}."
        if problem is None and channel not in CHANNELS:
            problem = f"Nothing was added: the channel is one of {', '.join(CHANNELS)}."
        if problem is None and not typed["reason"]:
            problem = "Nothing was added: say why (the reason is kept with the suppression)."
        if problem is None and len(typed["reason"]) > REASON_LENGTH:
            problem = f"Nothing was added: a reason is at most {REASON_LENGTH} characters."
        if problem is not None:
            return await show(request, Listing(), 400, problem, typed)
        record = {"kind": kind, "value": value, "channel": channel, "reason": typed["reason"]}
        added = await run_in_threadpool(add_suppressions, engine, [record], "console")
        if not added:
            return RedirectResponse("/console/suppressions?notice=exists", 303)
        target = f"{kind} {value} on {channel}"
        await run_in_threadpool(
            lambda: record_action(
                engine, user.name, "suppression.add", target, typed["reason"], role=user.role
            )
        )
        return RedirectResponse("/console/suppressions?notice=added", 303)

    async def lift(request: Request) -> Response:
        form = await checked_form(request)
        require_operator(request)
        user = request.state.user
        typed = {name: _text(form, name) for name in ("value", "channel", "reason")}
        try:
            kind, value = suppression_key(typed["value"])
        except AbmError as exc:
            return await show(request, Listing(), 400, f"Nothing was lifted: {exc}.")
        if typed["channel"] not in CHANNELS:
            return await show(request, Listing(), 400, "Nothing was lifted: which channel?")
        reason = typed["reason"]
        if not reason or len(reason) > LIFT_REASON_LENGTH:
            return await show(
                request,
                Listing(),
                400,
                f"Nothing was lifted: say why, in at most {LIFT_REASON_LENGTH} characters "
                "(the reason is kept in the lifted history).",
            )
        try:
            await run_in_threadpool(
                lambda: lift_suppressions(
                    engine,
                    kind,
                    value,
                    typed["channel"],
                    user.name,
                    reason,
                    person_asked=False,  # never here: see UNSUBSCRIBE_TEXT
                )
            )
        except UnsubscribeNotLifted:
            return await show(
                request,
                Listing(),
                409,
                f"Nothing was lifted: {value} unsubscribed. "
                + UNSUBSCRIBE_TEXT.replace("VALUE", value),
            )
        except SuppressionNotFound as exc:
            return await show(request, Listing(), 404, f"Nothing was lifted: {exc}.")
        target = f"{kind} {value} on {typed['channel']}"
        await run_in_threadpool(
            lambda: record_action(
                engine, user.name, "suppression.lift", target, reason, role=user.role
            )
        )
        return RedirectResponse("/console/suppressions?notice=lifted", 303)

    return [
        Route("/suppressions", suppressions, methods=["GET", "HEAD"]),
        Route("/suppressions/search", search, methods=["POST"]),
        Route("/suppressions/add", add, methods=["POST"]),
        Route("/suppressions/lift", lift, methods=["POST"]),
    ]

"""The accounts list and an account's page: which accounts to look at (filtered by tier,
stage, committee coverage and engagement source, sorted and paged on the server, so 30,000
accounts answer as fast as 30) and everything about one of them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from abm.console.context import ConsoleContext
from abm.console.render import page, whole_number
from core.vocabulary import SOURCE_LABELS, STAGES, TIERS
from models.queries import (
    ACCOUNT_SORTS,
    AccountFilters,
    AccountSort,
    account_page,
    count_accounts,
)
from stages.accounts.details import account_details, committee_by_role, top_source
from stages.committee.coverage import coverage
from stages.engagement.sources import SOURCES
from stages.targeting.scoring import load_icp_rules

PAGE_SIZE = 50
TIMELINE_SHOWN = 100
SEARCH_LENGTH = 200
# Which way a column sorts when first clicked: the most interesting accounts first.
FIRST_DIRECTION = {
    "score": "desc",
    "engagement": "desc",
    "name": "asc",
    "stage": "desc",
    "tier": "asc",
    "changed": "desc",
}
SORT_LABELS = {
    "score": "ICP score",
    "engagement": "engagement",
    "name": "name",
    "stage": "stage",
    "tier": "tier",
    "changed": "last change",
}


class BadParameter(ValueError):
    """A query parameter the list cannot use: the page says which, with status 400."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


@dataclass(frozen=True)
class Listing:
    """The accounts list a request asks for, checked."""

    filters: AccountFilters
    sort: AccountSort
    page: int
    params: dict[str, str]  # the non-default parameters but the page, for links


def coverage_options(required: Sequence[str]) -> list[tuple[str, str]]:
    """(value, label) of the coverage filter: full, each required role missing, nobody."""
    return [
        ("full", "every required role covered"),
        *((f"missing:{role}", f"missing {role.replace('_', ' ')}") for role in required),
        ("unreachable", "no reachable contacts"),
    ]


def parse_listing(params: Mapping[str, str], required: Sequence[str]) -> Listing:
    """The filters, order and page of a query string; BadParameter naming the first
    parameter the list cannot use (an empty value means "any")."""
    values = {name: params.get(name, "").strip() for name in PARAMETERS}
    tier: int | Literal["none"] | None = None
    if values["tier"]:
        allowed = [str(t) for t in TIERS]
        if values["tier"] not in (*allowed, "none"):
            raise BadParameter("tier", f"use one of {', '.join(allowed)} or none")
        tier = "none" if values["tier"] == "none" else int(values["tier"])
    stage = values["stage"] or None
    if stage is not None and stage not in STAGES:
        raise BadParameter("stage", f"use one of {', '.join(STAGES)}")
    cover = values["coverage"] or None
    if cover is not None and cover not in dict(coverage_options(required)):
        raise BadParameter(
            "coverage",
            "use full, unreachable or missing:ROLE for a required role "
            f"({', '.join(required) or 'the ICP rules require none'})",
        )
    source = values["source"] or None
    if source is not None and source not in SOURCES:
        raise BadParameter("source", f"use one of {', '.join(SOURCES)}")
    if len(values["q"]) > SEARCH_LENGTH:
        raise BadParameter("q", f"a search is at most {SEARCH_LENGTH} characters")
    key = values["sort"] or "score"
    if key not in ACCOUNT_SORTS:
        raise BadParameter("sort", f"use one of {', '.join(ACCOUNT_SORTS)}")
    direction = values["dir"] or FIRST_DIRECTION[key]
    if direction not in ("asc", "desc"):
        raise BadParameter("dir", "use asc or desc")
    number = whole_number(values["page"] or "1", digits=9)
    if not number:
        raise BadParameter("page", "a page is a whole number from 1")
    return Listing(
        filters=AccountFilters(
            tier=tier,
            stage=stage,
            coverage=cover,
            source=source,
            search=values["q"] or None,
            required_roles=tuple(required),
        ),
        sort=AccountSort(key=key, descending=direction == "desc", stages=STAGES),
        page=number,
        params={
            name: value
            for name, value in values.items()
            if value and name != "page" and not (name == "dir" and value == FIRST_DIRECTION[key])
        },
    )


PARAMETERS = ("tier", "stage", "coverage", "source", "q", "sort", "dir", "page")


def filters_in_words(filters: AccountFilters) -> list[str]:
    """The filters in force, as a person would say them (why a list is empty)."""
    words = []
    if filters.tier is not None:
        words.append("not targeted" if filters.tier == "none" else f"tier {filters.tier}")
    if filters.stage:
        words.append(f"stage {filters.stage}")
    if filters.coverage:
        words.append(dict(coverage_options(filters.required_roles))[filters.coverage])
    if filters.source:
        words.append(f"engagement from {SOURCE_LABELS.get(filters.source, filters.source)}")
    if filters.search:
        words.append(f"name or domain containing “{filters.search}”")
    return words


def sort_links(listing: Listing) -> dict[str, dict[str, str]]:
    """Per sortable column: the URL sorting by it (the other way when it is the current
    order) and the arrow showing the current order."""
    links = {}
    for key in ACCOUNT_SORTS:
        params = {k: v for k, v in listing.params.items() if k not in ("sort", "dir")}
        current = listing.sort.key == key
        direction = FIRST_DIRECTION[key]
        if current:
            direction = "asc" if listing.sort.descending else "desc"
        params["sort"] = key
        if direction != FIRST_DIRECTION[key]:
            params["dir"] = direction
        arrow = ("↓" if listing.sort.descending else "↑") if current else ""
        links[key] = {"href": f"/console/accounts?{urlencode(params)}", "arrow": arrow}
    return links


def _listing_data(context: ConsoleContext, listing: Listing) -> dict[str, Any]:
    """The rows of the page asked for (the last page if it asked past the end), with each
    row's coverage and top source, and why the list is empty when it is."""
    engine = context.engine
    rows, total = account_page(engine, listing.filters, listing.sort, listing.page, PAGE_SIZE)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    number, problem = listing.page, None
    if number > pages:
        problem = f"There is no page {number}: the list has {pages}. This is the last page."
        number = pages
        rows, total = account_page(engine, listing.filters, listing.sort, number, PAGE_SIZE)
    required = listing.filters.required_roles
    for row in rows:
        row["coverage"] = coverage(row["reachable_roles"], required)
        row["top_source"] = top_source(row["engagement_sources"])
    # an empty list says why: nothing imported yet, or nothing matches the filters
    empty = None
    if not rows:
        empty = "imported" if count_accounts(engine) == 0 else "filtered"
    return {
        "rows": rows,
        "total": total,
        "page": number,
        "pages": pages,
        "problem": problem,
        "empty": empty,
    }


def routes(context: ConsoleContext) -> list[BaseRoute]:
    def required_roles() -> list[str]:
        return list(load_icp_rules(context.settings.icp_rules).committee.required_roles)

    async def accounts(request: Request) -> Response:
        required = await run_in_threadpool(required_roles)
        form = {
            "tiers": [str(t) for t in TIERS],
            "stages": STAGES,
            "coverages": coverage_options(required),
            "sources": [(s, SOURCE_LABELS.get(s, s)) for s in SOURCES],
            "sorts": SORT_LABELS,
        }
        try:
            listing = parse_listing(request.query_params, required)
        except BadParameter as bad:
            return page(
                request,
                "accounts.html",
                status_code=400,
                active="accounts",
                form=form,
                values=dict.fromkeys(PARAMETERS, ""),
                problem=f"The list cannot use {bad.name}={request.query_params.get(bad.name)!r}: "
                f"{bad.message}.",
                bad_parameter=bad.name,
                notice=None,
            )
        data = await run_in_threadpool(_listing_data, context, listing)
        return page(
            request,
            "accounts.html",
            active="accounts",
            form=form,
            values={name: request.query_params.get(name, "").strip() for name in PARAMETERS},
            listing=listing,
            params=listing.params,
            sorting=sort_links(listing),
            in_words=filters_in_words(listing.filters),
            bad_parameter=None,
            source_labels=SOURCE_LABELS,
            notice=None,
            **data,
        )

    async def account(request: Request) -> Response:
        domain = request.path_params["domain"]
        details = await run_in_threadpool(account_details, context.engine, context.settings, domain)
        if details is None:
            return page(
                request,
                "account.html",
                status_code=404,
                active="accounts",
                account=None,
                problem=f"There is no account with the domain {domain}.",
                notice=None,
            )
        timeline = details["timeline"]
        return page(
            request,
            "account.html",
            active="accounts",
            account=details,
            committee=committee_by_role(details["contacts"], details["committee"]["required"]),
            timeline=list(reversed(timeline[-TIMELINE_SHOWN:])),
            earlier=max(0, len(timeline) - TIMELINE_SHOWN),
            source_labels=SOURCE_LABELS,
            notice=None,
            problem=None,
        )

    return [
        Route("/accounts", accounts, methods=["GET"]),
        Route("/accounts/{domain}", account, methods=["GET"]),
    ]

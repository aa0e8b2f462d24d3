"""First-party tracking on the web server of `abm webhooks serve`:

- `GET`/`HEAD /c/{token}`: a tracked link. The click is stored (once per message and link;
  a scanner's apart, never counted), then answered 302 to the URL the signed token holds;
  a link to the user's own site also gets `abm_vid`, the visitor id the site script keeps.
  A token we did not sign, or signed with a key no longer held, gets 404 and no redirect:
  nothing but a URL we signed is ever redirected to.
- `GET /o/{token}.gif`: the open pixel (only in campaigns that ask for it), a 1x1 GIF.
- `GET /t.js`: the site script for the user's own website (a few lines of plain JS).
- `POST`/`GET /v`: a page view from that script: the visitor id and the page's path.

Hits are stored before the answer goes out, in batches (`HitWriter`): whatever arrived
meanwhile is one transaction, so a busy server commits once for many clicks rather than
once each, and rolls up the accounts touched once for the batch. The log names no person:
a refusal is logged with its reason, never the token or visitor id; no IP address or user
agent is stored."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from abm.request_limits import RouteLimit, Slots
from core.settings import Settings
from core.tracking_tokens import (
    MAX_TOKEN_LENGTH,
    BadTrackingToken,
    SigningKeys,
    make_visitor_token,
    read_click_token,
    read_open_token,
    read_visitor_token,
)
from models.tables import utcnow
from stages.engagement.first_party import Hit, Recorded, record_hits, scanner_agent
from stages.engagement.rollup import EngagementRules, counted_types, rollup_accounts

log = logging.getLogger(__name__)
TRAILING_PUNCTUATION = ".,;:!?)]}>'\""

VISITOR_PARAMETER = "abm_vid"  # the query parameter a site link gets, and the cookie's name
LINK_MAX_BODY = 1024  # a click, a pixel, the script: GET requests, no body
VISIT_MAX_BODY = 8 * 1024  # a page view: a visitor id and a path
VISIT_SLOTS = 64  # page views at once (a public endpoint any page can call); more get 503
VISIT_BODY_TIMEOUT = 10.0
MAX_PATH = 1024  # characters of a page path
SCRIPT_MAX_AGE = 3600  # seconds browsers may cache the site script
WRITER_BATCH = 1000  # hits in one transaction at most
ROLLUP_DELAY = 0.25  # seconds a burst of hits may leave their accounts' scores behind
# The smallest transparent GIF: 1x1, one colour.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
SITE_SCRIPT = Path(__file__).resolve().parent / "site_script.js"
NOT_VALID = """<!doctype html><html><head><meta charset="utf-8"><title>Link not valid</title>
<style>body{font-family:Arial,sans-serif;max-width:32rem;margin:4rem auto;color:#222}</style>
</head><body><h1>This link is not valid</h1><p>It was altered, cut short, or it has
expired. Open it again from the email, or reply to the email and ask for it.</p></body></html>"""


class HitWriter:
    """Stores the hits of every request in batches: `record` returns once its hit is
    committed. No thread: the first request that finds no batch under way starts one on the
    event loop, which then takes everything that arrived meanwhile (up to `batch`), stores it
    in one transaction, and answers those requests, until nothing is left. While it writes,
    requests wait in the socket buffers; a busy server so commits once for many clicks.

    Roll-ups (account engagement scores and stages) are batched too. When no more hits are
    waiting, the accounts touched are rolled up before the requests are answered, so that
    an answered click is already counted; under a burst, requests are answered once their
    hits are stored, and their accounts rolled up when the burst pauses or `delay` seconds
    later at most. A batch that fails is tried again hit by hit, so that one bad hit (or a
    passing database error) does not lose the others."""

    def __init__(
        self,
        store: Callable[[Sequence[Hit]], list[Recorded]],
        rollup: Callable[[set[int]], object],
        counted: frozenset[str],
        *,
        batch: int = WRITER_BATCH,
        delay: float = ROLLUP_DELAY,
    ) -> None:
        self._store_hits = store
        self._rollup = rollup
        self._counted = counted
        self._batch = batch
        self._delay = delay
        self._pending: list[tuple[Hit, asyncio.Future[Recorded]]] = []
        self._dirty: set[int] = set()
        self._dirty_since = 0.0
        self._task: asyncio.Task[None] | None = None

    async def record(self, hit: Hit) -> Recorded:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Recorded] = loop.create_future()
        self._pending.append((hit, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._pending or self._dirty:
            await asyncio.sleep(0)  # requests already read add their hits first
            batch = self._pending[: self._batch]
            del self._pending[: self._batch]
            stored = self._store(batch)
            try:
                self._roll_up(stored)
            finally:  # every request is answered, whatever happened
                for done, outcome in stored:
                    if done.done():  # the client went away
                        continue
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)

    def _roll_up(self, stored: list[tuple[asyncio.Future[Recorded], Recorded | Exception]]) -> None:
        """Note the accounts the stored hits count for; roll up those noted when no more
        hits wait, or when the oldest was noted `delay` seconds ago."""
        for _, outcome in stored:
            counted = isinstance(outcome, Recorded) and outcome.type in self._counted
            if counted and outcome.account_id:  # type: ignore[union-attr]
                if not self._dirty:
                    self._dirty_since = time.monotonic()
                self._dirty.add(outcome.account_id)  # type: ignore[union-attr]
        if not self._dirty:
            return
        if self._pending and time.monotonic() - self._dirty_since <= self._delay:
            return
        accounts, self._dirty = self._dirty, set()
        try:
            self._rollup(accounts)
        except Exception as exc:  # stored all the same; counted at the next roll-up
            log.error("rolling up %d accounts after clicks failed: %s", len(accounts), exc)

    def _store(
        self, batch: list[tuple[Hit, asyncio.Future[Recorded]]]
    ) -> list[tuple[asyncio.Future[Recorded], Recorded | Exception]]:
        if not batch:
            return []
        try:
            outcomes: list[Recorded | Exception] = list(self._store_hits([hit for hit, _ in batch]))
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                return [found for one in batch for found in self._store([one])]
        return [(done, outcome) for (_, done), outcome in zip(batch, outcomes, strict=True)]


def opted_out(request: Request) -> bool:
    """The browser asks not to be tracked: Do-Not-Track or Global Privacy Control."""
    return request.headers.get("dnt") == "1" or request.headers.get("sec-gpc") == "1"


def with_visitor(url: str, visitor: str) -> str:
    """`url` with the visitor id as one more query parameter (before any #fragment)."""
    address, hash_mark, fragment = url.partition("#")
    joiner = "&" if "?" in address else "?"
    return f"{address}{joiner}{VISITOR_PARAMETER}={visitor}{hash_mark}{fragment}"


def page_path(raw: str | None) -> str:
    """The path of a page view as stored: the path alone (any query or fragment dropped,
    as they can hold personal data), ASCII as browsers send it; ValueError naming what is
    wrong otherwise."""
    if not raw:
        raise ValueError("no page path (p)")
    if len(raw) > MAX_PATH:
        raise ValueError(f"page path over {MAX_PATH} characters")
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.isascii() or not path.isprintable():
        raise ValueError("page path is not ASCII (browsers send it %-encoded)")
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("page path must start with a single /")
    return path


def site_script(settings: Settings) -> str:
    return (
        SITE_SCRIPT.read_text(encoding="utf-8")
        .replace("__ENDPOINT__", settings.public_url.rstrip("/") + "/v")
        .replace("__NAME__", VISITOR_PARAMETER)
        .replace("__MAX_AGE__", str(settings.visitor_days * 86400))
    )


def tracking_routes(
    settings: Settings,
    engine: Engine,
    rules: EngagementRules,
    *,
    simulated: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> tuple[list[Route], list[RouteLimit]]:
    """The routes of first-party tracking and their limits, for `abm.webhooks.create_app`.
    `simulated` (the demo's own database only) marks every event it stores as simulated."""
    keys = SigningKeys.from_settings(settings)
    script = site_script(settings)
    visit_window = settings.visitor_days * 86400
    writer = HitWriter(
        lambda hits: record_hits(
            engine,
            hits,
            scanner_seconds=settings.click_scanner_seconds,
            simulated=simulated,
        ),
        lambda accounts: rollup_accounts(engine, sorted(accounts), rules),
        counted_types(rules),
    )

    async def store(hit: Hit, what: str) -> Recorded | None:
        try:
            outcome = await writer.record(hit)
        except Exception as exc:
            log.error("a %s on ledger row %d was not stored: %s", what, hit.delivery_id, exc)
            return None
        if outcome.type is None:
            log.warning(
                "a %s on ledger row %d: no such message, nothing stored", what, hit.delivery_id
            )
        elif outcome.scanner:
            log.info(
                "a click on ledger row %d recorded as a mail scanner's, not counted: %s",
                hit.delivery_id,
                outcome.scanner,
            )
        return outcome

    async def click(request: Request) -> Response:
        # a mail client that makes a link of plain text may take the sentence's closing
        # punctuation with it ("...(https://x/c/TOKEN)."): never a token's last character
        token = request.path_params["token"].rstrip(TRAILING_PUNCTUATION)
        if len(token) > MAX_TOKEN_LENGTH:
            log.warning("refused a click: the link is over %d characters", MAX_TOKEN_LENGTH)
            return HTMLResponse(NOT_VALID, status_code=414)
        try:
            target = read_click_token(keys, token)
        except BadTrackingToken as exc:
            log.warning("refused a click: the link is not valid: %s", exc)
            return HTMLResponse(NOT_VALID, status_code=404)
        location = target.url
        if target.delivery_id:  # 0: a preview's link, which goes where it points, unrecorded
            now = clock()
            scanner = "HEAD request" if request.method == "HEAD" else None
            scanner = scanner or scanner_agent(request.headers.get("user-agent", ""))
            hit = Hit("click", target.delivery_id, now, url=target.url, scanner=scanner)
            outcome = await store(hit, "click")
            if target.site and outcome and outcome.type == "click" and not opted_out(request):
                visitor = make_visitor_token(keys, target.delivery_id, int(now.timestamp()))
                location = with_visitor(location, visitor)
        return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})

    def gif(status: int) -> Response:
        return Response(
            PIXEL, status_code=status, media_type="image/gif", headers={"Cache-Control": "no-store"}
        )

    async def pixel(request: Request) -> Response:
        try:
            delivery_id = read_open_token(keys, request.path_params["token"])
        except BadTrackingToken as exc:
            log.warning("refused an open pixel: %s", exc)
            return gif(404)
        if delivery_id:
            await store(Hit("open", delivery_id, clock()), "open")
        return gif(200)

    async def site(_: Request) -> Response:
        return Response(
            script,
            media_type="text/javascript",
            headers={
                "Cache-Control": f"public, max-age={SCRIPT_MAX_AGE}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    def refuse(status: int, reason: str) -> Response:
        log.warning("refused a page view: %s", reason)
        return JSONResponse({"error": reason}, status_code=status)

    async def visit(request: Request) -> Response:
        if opted_out(request):
            log.debug("page view not recorded: the browser sent Do-Not-Track or GPC")
            return Response(status_code=204)
        if request.method == "POST":
            body = await request.body()  # at most VISIT_MAX_BODY: RequestLimits stops it there
            try:
                fields = parse_qs(body.decode("ascii"), max_num_fields=10)
            except UnicodeDecodeError:
                return refuse(400, "the body is not ASCII form data (vid=...&p=...)")
            except ValueError:
                return refuse(400, "the body holds too many fields")
            given = {name: values[0] for name, values in fields.items()}
        else:
            given = dict(request.query_params)
        if not given.get("vid"):
            return refuse(400, "no visitor id (vid)")
        try:
            path = page_path(given.get("p"))
        except ValueError as exc:
            return refuse(400, str(exc))
        try:
            delivery_id, clicked_at = read_visitor_token(keys, given["vid"])
        except BadTrackingToken as exc:
            return refuse(400, f"the visitor id is not valid: {exc}")
        now = clock()
        if now.timestamp() - clicked_at > visit_window:
            log.info(
                "page view not recorded: its visitor id is older than ABM_VISITOR_DAYS (%d)",
                settings.visitor_days,
            )
            return Response(status_code=204)
        await store(Hit("visit", delivery_id, now, path=path), "page view")
        return Response(status_code=204)

    routes = [
        Route("/c/{token}", click, methods=["GET"]),  # HEAD too: Starlette adds it
        Route("/o/{token}.gif", pixel, methods=["GET"]),
        Route("/t.js", site, methods=["GET"]),
        Route("/v", visit, methods=["GET", "POST"]),
    ]
    limits = [
        RouteLimit("/c/{token}", LINK_MAX_BODY),
        RouteLimit("/o/{token}.gif", LINK_MAX_BODY),
        RouteLimit("/t.js", LINK_MAX_BODY),
        RouteLimit("/v", VISIT_MAX_BODY, Slots(VISIT_SLOTS), VISIT_BODY_TIMEOUT),
    ]
    return routes, limits

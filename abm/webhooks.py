"""`abm webhooks serve`: the HTTP receiver for provider events and one-click unsubscribe.

Events are stored before the response is sent, and the accounts they touch rolled up in the
same transaction: a 2xx means they are durable and counted in the accounts' engagement
scores and stages. A bad signature gets 401/403 and nothing is stored; a malformed body 400
with the reason; a replayed event 200 and it is stored once. Every route that changes data
fails closed: without its key (or token) configured it refuses every post.

Every input is bounded (see abm/request_limits.py): each route has a body limit checked on the
declared Content-Length before reading and counted while the body streams in, the inbound form
has limits on its parts, the body-heavy posts have a few slots each and a time for their body
to arrive, and the server itself (SERVER_LIMITS, passed to uvicorn by the command line) limits
header size, connections and keep-alive. Unsubscribes take no slot: no flood of posts to the
other routes can keep one from being answered.

The same server answers first-party tracking (abm/tracking.py): tracked links, the open pixel,
the site script and its page views. Links and unsubscribe tokens signed with a key in
ABM_PREVIOUS_SECRET_KEYS keep working after ABM_SECRET_KEY is rotated.

Under load (README "Under load"): a batch is stored in a worker thread, in one transaction
committed before the 2xx; a busy database (lock or statement timeout, no pooled connection,
refused connection, serialization failure) gets 503 with Retry-After and nothing stored,
never a 500; `abm webhooks serve --workers N` runs N processes, on PostgreSQL only."""

from __future__ import annotations

import html
import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from abm.console.app import console_mount
from abm.console.context import ConsoleContext
from abm.request_limits import RETRY_AFTER, BodyRefused, RequestLimits, RouteLimit, Slots
from abm.tracking import tracking_routes
from connectors.email.mailgun_events import mailgun_as_sendgrid, verify_mailgun_signature
from connectors.email.sendgrid_events import (
    check_events,
    load_public_keys,
    parse_sendgrid,
    storable,
    verify_sendgrid_signature,
)
from connectors.email.webhook_events import BadEvents, BadSignature, split_keys, token_matches
from core.errors import ConfigError
from core.settings import Settings, get_settings
from core.tracking_tokens import SigningKeys
from core.unsubscribe import BadToken, read_token
from models.db import get_engine
from models.tables import utcnow
from stages.engagement.ingest import (
    contact_display,
    contact_unsubscribed,
    ingest_sendgrid,
    reply_event,
    unsubscribe,
)
from stages.engagement.rollup import (
    engagement_rules_from,
    refuse_simulation_on_real_data,
    store_events,
)

log = logging.getLogger(__name__)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY = 5_000_000  # an events post: a SendGrid batch, a Mailgun event
UNSUBSCRIBE_MAX_BODY = 16 * 1024  # `List-Unsubscribe=One-Click`; also any path not listed
# SendGrid refuses inbound messages over 30 MB itself; a parsed post is about that at most
INBOUND_MAX_BODY = 32 * 1024 * 1024
INBOUND_MAX_FILES = 100  # attachments, which are not read, but must fit
INBOUND_MAX_FIELDS = 100  # SendGrid posts about 20
INBOUND_MAX_FIELD = MAX_BODY  # one field (headers, text, html), held in memory
EVENT_SLOTS = 8  # events posts at once (SendGrid and Mailgun together); more get 503
INBOUND_SLOTS = 2  # inbound posts at once
BODY_TIMEOUT = 60.0  # seconds for a body-heavy post's body to arrive, or 408
# For uvicorn.run: the h11 implementation, whose header limit this sets (a request whose
# header block passes it gets 400), at most this many connections at once (the rest get 503),
# and idle keep-alive connections closed after a few seconds. X-Forwarded-For is not
# rewritten into the client address by uvicorn (which trusts it from 127.0.0.1 by default):
# the console needs the real peer to decide whether it is a trusted proxy
# (ABM_CONSOLE_TRUSTED_PROXIES), and reads the header itself only from those peers.
SERVER_LIMITS = {
    "http": "h11",
    "proxy_headers": False,
    "h11_max_incomplete_event_size": 16 * 1024,
    "limit_concurrency": 200,
    "timeout_keep_alive": 5,
}

# The receiver's database sessions (PostgreSQL): a busy database answers 503 in seconds, not
# a request hung until the provider gives up. A lock held longer than LOCK_TIMEOUT_MS, a
# statement running past STATEMENT_TIMEOUT_MS, no pooled connection free within
# POOL_TIMEOUT_S or no connection made within CONNECT_TIMEOUT_S: the transaction is rolled
# back, nothing of the batch is stored, and the provider is told to retry.
LOCK_TIMEOUT_MS = 2_000
STATEMENT_TIMEOUT_MS = 20_000
POOL_TIMEOUT_S = 2
CONNECT_TIMEOUT_S = 5

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:Arial,sans-serif;max-width:32rem;margin:4rem auto;color:#222}}
button{{font-size:1rem;padding:.6rem 1.2rem}}</style></head><body>{body}</body></html>"""


def _refused(exc: BadSignature) -> Response:
    """401 for a stale (possibly replayed) request, 403 for a wrong signature."""
    return JSONResponse({"error": str(exc)}, status_code=401 if "stale" in str(exc) else 403)


def _closed(route: str, reason: str) -> Response:
    """403 for a post this receiver is not set up to trust; logged with the route and the
    reason only, never what the post held (it may name a person)."""
    log.warning("refused a post to %s: %s", route, reason)
    return JSONResponse({"error": reason}, status_code=403)


def check_workers(engine: Engine, workers: int) -> None:
    """More than one server process needs PostgreSQL: SQLite takes one writer at a time, so a
    second process would only wait on the first one's lock (and hold a request meanwhile)."""
    if workers > 1 and engine.dialect.name == "sqlite":
        raise ConfigError(
            f"--workers {workers} needs PostgreSQL (ABM_DATABASE_URL): SQLite writes one "
            "transaction at a time, so more server processes would only queue on its lock. "
            "Use --workers 1 with SQLite"
        )


def check_port(host: str, port: int) -> None:
    """Refuse, naming the option, when this host and port cannot be listened on (taken by
    another server, or an address not this machine's), before the server says it listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                "another server (an `abm serve` already running?) may hold the port: stop it "
                "or choose another --port"
            ) from None


@lru_cache(maxsize=8)
def receiver_engine(url: str) -> Engine:
    """The receiver's own pool on PostgreSQL (one per process and URL), whose sessions give
    up quickly on a busy database (the timeouts above); on SQLite the shared engine (its
    busy timeout applies)."""
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine(url)
    options = f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(
        url,
        pool_pre_ping=True,
        hide_parameters=True,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": options},
    )


def database_busy(exc: Exception) -> bool:
    """True when the database could not take the work now but may in a moment: a lock or
    statement timeout, a serialization failure or deadlock, a refused or dropped connection,
    too many connections (the driver's OperationalError, PostgreSQL or SQLite), or no pooled
    connection free in time. The transaction was rolled back, so nothing of it is stored."""
    if isinstance(exc, PoolTimeout | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _busy(request: Request, exc: Exception) -> Response:
    """503 with Retry-After, never 500, when the database is busy: nothing was acknowledged
    and nothing stored, so the provider's retry stores it. Logged with the error's class,
    never the path (an unsubscribe token) or what the request held."""
    if not database_busy(exc):
        raise exc
    cause = type(getattr(exc, "orig", None) or exc).__name__
    log.warning("database busy (%s): answered %s with 503", cause, request.method)
    return JSONResponse(
        {"error": f"the database is busy ({cause}): nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def create_app(
    settings: Settings | None = None,
    *,
    simulated: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> Starlette:
    """The receiver, bound to one configuration (tests pass their own). `simulated` and
    `clock` are for `abm demo` alone: in its own database of demo accounts it follows its
    messages' links through this app, and every event stored is marked simulated."""
    settings = settings or get_settings()
    engine = receiver_engine(settings.database_url)
    if simulated:
        refuse_simulation_on_real_data(engine)
    keys = SigningKeys.from_settings(settings)
    rules = engagement_rules_from(settings)
    sendgrid_keys, key_problems = load_public_keys(settings.sendgrid_webhook_public_key)
    for problem in key_problems:
        log.error("ABM_SENDGRID_WEBHOOK_PUBLIC_KEY: %s; it is ignored", problem)
    mailgun_keys = split_keys(settings.mailgun_webhook_signing_key)
    inbound_token = settings.sendgrid_inbound_token or ""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def sendgrid(request: Request) -> Response:
        body = await request.body()  # at most MAX_BODY: RequestLimits stops it there
        if not sendgrid_keys:
            return _closed(
                "/webhooks/sendgrid",
                "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY holds no valid public key"
                if key_problems
                else "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY is not configured",
            )
        signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            return JSONResponse({"error": "unsigned request"}, status_code=401)
        return await run_in_threadpool(receive_sendgrid, signature, timestamp, body)

    def receive_sendgrid(signature: str, timestamp: str, body: bytes) -> Response:
        """One batch: the signature checked once over it (with the keys loaded at start),
        parsed, then stored in one transaction that commits before this returns, so a 2xx
        is never sent for an event that is not stored. In a worker thread: the event loop
        keeps answering unsubscribes and health checks while a batch is stored."""
        try:
            verify_sendgrid_signature(sendgrid_keys, signature, timestamp, body, time.time())
        except BadSignature as exc:
            return _refused(exc)
        try:
            events = parse_sendgrid(body)
        except BadEvents as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        report = ingest_sendgrid(engine, events, rules)
        return JSONResponse(report.__dict__)

    async def mailgun(request: Request) -> Response:
        if not mailgun_keys:
            return _closed("/webhooks/mailgun", "ABM_MAILGUN_WEBHOOK_SIGNING_KEY is not configured")
        body = await request.body()  # at most MAX_BODY: RequestLimits stops it there
        try:
            payload = json.loads(body)
            signature, event = payload["signature"], payload["event-data"]
            if not isinstance(signature, dict) or not isinstance(event, dict):
                raise TypeError("signature and event-data must be objects")
        except RecursionError:
            return JSONResponse(
                {"error": "malformed Mailgun webhook: nested too deeply"}, status_code=400
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"malformed Mailgun webhook: {exc}"}, status_code=400)
        try:
            verify_mailgun_signature(mailgun_keys, signature, time.time())
        except BadSignature as exc:
            return _refused(exc)
        try:
            shaped = mailgun_as_sendgrid(event)
            check_events([shaped])
        except BadEvents as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(ingest_sendgrid(engine, [shaped], rules).__dict__)

    async def inbound(request: Request) -> Response:
        """SendGrid Inbound Parse: a reply to one of our messages stops its sequence. Inbound
        Parse does not sign its posts, so the URL's `?token=` is the only proof a post came
        from SendGrid: without a token configured, a fake reply could pause anyone's
        sequence, so every post is refused."""
        route = "/webhooks/sendgrid/inbound"
        if not inbound_token:
            return _closed(
                route,
                "inbound replies are turned off: set ABM_SENDGRID_INBOUND_TOKEN and add "
                "?token=<that value> to the Inbound Parse URL",
            )
        if not token_matches(request.query_params.get("token", ""), inbound_token):
            return _closed(route, "unknown token: the ?token= does not match")
        try:  # at most INBOUND_MAX_BODY is read; attachments past 1 MB spool to disk
            form = await request.form(
                max_files=INBOUND_MAX_FILES,
                max_fields=INBOUND_MAX_FIELDS,
                max_part_size=INBOUND_MAX_FIELD,
            )
        except BodyRefused:
            raise  # over the body limit or its time: RequestLimits has answered
        except HTTPException as exc:  # Starlette's word for the multipart parser's errors
            if "maximum" in str(exc.detail).lower():  # "Maximum number of files is 100", ...
                log.warning("refused a post to %s: %s", route, exc.detail)
                return JSONResponse(
                    {"error": f"inbound form over a limit: {exc.detail}"}, status_code=413
                )
            return JSONResponse({"error": f"not a form post: {exc.detail}"}, status_code=400)
        except Exception as exc:  # the multipart parser's own errors
            return JSONResponse({"error": f"not a form post: {exc}"}, status_code=400)
        await form.close()  # attachments are not used: their spool files go now
        headers, sender = form.get("headers"), form.get("from")
        if not isinstance(headers, str) or not isinstance(sender, str):
            return JSONResponse({"error": "fields headers and from are required"}, status_code=400)
        if not (storable(headers) and storable(sender)):
            return JSONResponse(
                {"error": "fields headers and from hold a NUL or invalid character"},
                status_code=400,
            )
        event = reply_event(engine, headers, sender)
        if event is None:
            return JSONResponse({"stored": 0, "unmatched": 1})
        return JSONResponse({"stored": store_events(engine, [event], rules), "unmatched": 0})

    def _token(request: Request) -> tuple[int, int] | None:
        """(contact, campaign) of an unsubscribe token signed with the current key or, after
        a rotation, a previous one: an unsubscribe link must never stop working."""
        for key in keys.all():
            try:
                return read_token(request.path_params["token"], key)
            except BadToken:
                continue
        return None

    async def unsubscribe_page(request: Request) -> Response:
        found = _token(request)
        if found is None:
            return HTMLResponse(
                PAGE.format(
                    title="Link not valid",
                    body="<p>This unsubscribe link is not valid."
                    " Reply to the email and we will remove you by hand.</p>",
                ),
                status_code=404,
            )
        who = html.escape(contact_display(engine, found[0]) or "this address")
        if contact_unsubscribed(engine, found[0]):
            return HTMLResponse(
                PAGE.format(
                    title="Unsubscribed",
                    body=f"<h1>You are unsubscribed</h1><p>{who} gets no marketing email from "
                    "us. Nothing more to do here.</p>",
                )
            )
        body = (
            f"<h1>Unsubscribe</h1><p>Stop all marketing email to {who}?</p>"
            '<form method="post"><button type="submit">Unsubscribe</button></form>'
        )
        return HTMLResponse(PAGE.format(title="Unsubscribe", body=body))

    async def unsubscribe_post(request: Request) -> Response:
        """RFC 8058 one-click (body `List-Unsubscribe=One-Click`) or the page's button."""
        found = _token(request)
        if found is None:
            return PlainTextResponse("unsubscribe link is not valid", status_code=404)
        unsubscribe(engine, *found, rules)
        return HTMLResponse(
            PAGE.format(
                title="Unsubscribed",
                body="<h1>You are unsubscribed</h1><p>You will get no more marketing email "
                "from us. It took effect immediately.</p>",
            )
        )

    tracking, tracking_limits = tracking_routes(
        settings, engine, rules, simulated=simulated, clock=clock
    )
    events = Slots(EVENT_SLOTS)
    limits = [
        *tracking_limits,
        RouteLimit("/webhooks/sendgrid", MAX_BODY, events, BODY_TIMEOUT),
        RouteLimit("/webhooks/mailgun", MAX_BODY, events, BODY_TIMEOUT),
        RouteLimit(
            "/webhooks/sendgrid/inbound", INBOUND_MAX_BODY, Slots(INBOUND_SLOTS), BODY_TIMEOUT
        ),
        RouteLimit("/unsubscribe/{token}", UNSUBSCRIBE_MAX_BODY),
    ]
    return Starlette(
        exception_handlers={DBAPIError: _busy, PoolTimeout: _busy},
        middleware=[
            Middleware(
                RequestLimits,
                routes=limits,
                default=RouteLimit("any other path", UNSUBSCRIBE_MAX_BODY),
            )
        ],
        routes=[
            Route("/healthz", healthz),
            Route("/webhooks/sendgrid", sendgrid, methods=["POST"]),
            Route("/webhooks/sendgrid/inbound", inbound, methods=["POST"]),
            Route("/webhooks/mailgun", mailgun, methods=["POST"]),
            Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", unsubscribe_post, methods=["POST"]),
            *tracking,
            console_mount(ConsoleContext(settings, engine)),
        ],
    )

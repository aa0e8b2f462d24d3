"""Who may see the console, and do what: nothing under /console answers without a session
but the sign-in page and the static files, since the console shows personal data.

- Users and roles come from the users file (abm/console/users.py), re-read when it changes;
  or, with ABM_CONSOLE_AUTH=proxy, from a reverse proxy's header, believed only from the
  peers in ABM_CONSOLE_TRUSTED_PROXIES (the role still from the users file).
- A session is a row in `console_session` keyed by the SHA-256 of a random id; the cookie
  carries the id and an HMAC of it under a key derived from the secret key, so a cookie made
  with another secret, or a guessed id, is refused before the database is asked. Idle for
  8 hours or 12 hours old, it is over; each sign-in makes a new id.
- Every form carries a CSRF token (an HMAC of the session id; on the sign-in form, of a
  signed nonce cookie: double submit) that `checked_form` compares in constant time; a post
  whose Origin header names another site is refused too.
- Failed sign-ins are rows, so the rate limit holds across server processes: more than 5
  failures for one name or 20 from one address within 15 minutes get 429 before the
  password is even checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address
from math import ceil
from urllib.parse import urlsplit

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from abm.console.context import ConsoleContext
from abm.console.render import page
from abm.console.users import (
    ConsoleUser,
    UserDirectory,
    credential_of,
    password_matches,
    users_path,
)
from core.errors import ConfigError
from core.settings import Settings, parse_networks
from models import console_store
from models.tables import utcnow

__all__ = [
    "ConsoleAccess",
    "ConsoleGate",
    "ConsoleUser",
    "checked_form",
    "http_error_page",
    "require_operator",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = "abm_console"
# a signed random nonce per browser, before (and besides) a session: the sign-in form's
# CSRF token is made from it (double submit), and so is every form's in proxy mode
BROWSER_COOKIE = "abm_console_browser"
COOKIE_PATH = "/console"
IDLE_TIMEOUT = timedelta(hours=8)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
LIMIT_WINDOW = timedelta(minutes=15)
NAME_LIMIT = 5  # failed sign-ins for one name within the window; the next one gets 429
ADDRESS_LIMIT = 20  # ... from one client address
LOGIN_PATH = "/login"
OPEN_PREFIXES = ("/static/",)  # served to anyone: CSS and JS, no data


def cookie_options() -> dict[str, object]:
    """Every console cookie: sent back only over HTTPS (browsers treat http://127.0.0.1 and
    http://localhost as secure too), never readable by scripts, and only under /console.
    SameSite=Lax rather than Strict: a console link followed from an email or a chat
    message must arrive signed in (a top-level GET); cross-site posts still come without the
    cookie, and every form is protected by its CSRF token besides."""
    return {"path": COOKIE_PATH, "secure": True, "httponly": True, "samesite": "lax"}


class Keys:
    """HMACs under a key derived from the secret key (ABM_SECRET_KEY or .abm/secret), one
    purpose each, so no value signed for one use passes for another."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"abm console v1", hashlib.sha256).digest()

    def sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def seal(self, purpose: str, value: str) -> str:
        """`value.mac`, for a cookie."""
        return f"{value}.{self.sign(purpose, value)}"

    def unseal(self, purpose: str, sealed: str | None) -> str | None:
        """The value of a sealed cookie, or None when its MAC is not ours."""
        value, dot, mac = (sealed or "").partition(".")
        if not dot or not value or len(sealed or "") > 200:
            return None
        if not hmac.compare_digest(mac.encode(), self.sign(purpose, value).encode()):
            return None
        return value


def session_csrf_token(settings: Settings, session_cookie: str) -> str:
    """The CSRF token of the session whose cookie this is ("" for a cookie not ours)."""
    keys = Keys(settings.signing_key())
    session_id = keys.unseal("session", session_cookie)
    return keys.sign("csrf", session_id) if session_id else ""


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a session id, or a refusal (status, message, and for
    429 the seconds to wait)."""

    session_id: str | None = None
    status: int = 200
    problem: str = ""
    retry_after: int = 0


class ConsoleGate:
    """The rules, bound to one configuration: sessions, sign-in, the proxy header."""

    def __init__(self, context: ConsoleContext) -> None:
        self.settings: Settings = context.settings
        self.engine: Engine = context.engine
        self.keys = Keys(context.settings.signing_key())
        self.directory = UserDirectory(users_path(context.settings))
        self.proxy_mode = context.settings.console_auth == "proxy"
        self.proxy_header = (context.settings.console_proxy_header or "").lower()
        self.trusted = parse_networks(context.settings.console_trusted_proxies)
        if self.proxy_mode and not self.proxy_header:  # Settings refuses this already
            raise ConfigError("ABM_CONSOLE_AUTH=proxy needs ABM_CONSOLE_PROXY_HEADER")

    # sessions
    def session_user(self, sealed: str | None) -> tuple[ConsoleUser, str] | None:
        """The user and session id of a session cookie that is ours, current and whose user
        is still in the users file; a stale session's row is deleted."""
        session_id = self.keys.unseal("session", sealed)
        if session_id is None:
            return None  # forged or from another secret: the database is never asked
        row = console_store.find_session(self.engine, session_id)
        if row is None:
            return None
        now = utcnow()
        if now - row.last_seen_at > IDLE_TIMEOUT or now - row.created_at > ABSOLUTE_TIMEOUT:
            console_store.delete_session(self.engine, session_id)
            return None
        user = self.directory.user(row.user_name)
        entry = self.directory.users().get(row.user_name)
        if user is None or not hmac.compare_digest(row.credential, credential_of(entry)):
            # removed from the users file since, or given a new password: sign in again
            console_store.delete_session(self.engine, session_id)
            return None
        if now - row.last_seen_at > TOUCH_EVERY:
            console_store.touch_session(self.engine, session_id, now)
        return user, session_id

    def sign_in(self, name: str, password: str, address: str) -> SignIn:
        """Check the rate limit, then the password (always one argon2 verification); a
        match makes a new session, a failure is recorded (name and address, never the
        password) and logged."""
        now = utcnow()
        wait = self.retry_after(name, address, now)
        if wait:
            log.warning("console sign-in refused (rate limit) for %r from %s", name, address)
            minutes = max(1, ceil(wait / 60))
            return SignIn(
                status=429,
                retry_after=wait,
                problem="Too many failed sign-ins for this name or from this address in the "
                f"last {LIMIT_WINDOW.seconds // 60} minutes. Try again in {minutes} "
                f"minute{'s' if minutes > 1 else ''}.",
            )
        entry = self.directory.users().get(name)
        if not password_matches(entry, password):
            console_store.record_failure(self.engine, name, address, now)
            log.warning("console sign-in failed for %r from %s", name, address)
            return SignIn(status=401, problem="The name or the password is wrong.")
        console_store.clear_failures(self.engine, name)
        console_store.delete_stale_sessions(self.engine, now - IDLE_TIMEOUT, now - ABSOLUTE_TIMEOUT)
        session_id = secrets.token_urlsafe(32)
        console_store.create_session(self.engine, session_id, name, credential_of(entry), now)
        log.info("console sign-in: %r from %s", name, address)
        return SignIn(session_id=session_id)

    def retry_after(self, name: str, address: str, now: datetime) -> int:
        """Seconds until another attempt is allowed (0: now): until enough of the failures
        in the window age out of it."""
        since = now - LIMIT_WINDOW
        waits = []
        for failures, limit in (
            (console_store.failures_since(self.engine, since, name=name), NAME_LIMIT),
            (console_store.failures_since(self.engine, since, address=address), ADDRESS_LIMIT),
        ):
            if len(failures) >= limit:
                waits.append(ceil((failures[limit - 1] + LIMIT_WINDOW - now).total_seconds()))
        return max(1, *waits) if waits else 0

    def sign_out(self, session_id: str) -> None:
        console_store.delete_session(self.engine, session_id)

    # proxy mode
    def proxy_user(self, request: Request) -> tuple[ConsoleUser | None, str]:
        """The user the trusted proxy names, or (None, why not)."""
        peer = request.client.host if request.client else ""
        if not self._trusted(peer):
            return None, (
                f"This console takes its users from a reverse proxy, and {peer or 'this peer'} "
                "is not one it trusts: connect through the proxy, or add its address to "
                "ABM_CONSOLE_TRUSTED_PROXIES."
            )
        name = request.headers.get(self.proxy_header, "").strip()
        if not name:
            return None, (
                f"The proxy sent no {self.settings.console_proxy_header} header: it must "
                "authenticate you and name you in it."
            )
        user = self.directory.user(name)
        if user is None:
            return None, (
                f"{name!r} is not a console user: add them to the users file "
                "(abm console add-user) with a role."
            )
        return user, ""

    def client_address(self, request: Request) -> str:
        """The address a sign-in is counted against: the connection's peer, or, when that
        peer is a trusted proxy, the last address the proxy put in X-Forwarded-For (the one
        it saw connect; entries before it were written by the client and prove nothing)."""
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if not forwarded or not self._trusted(peer):
            return peer
        try:
            return str(ip_address(forwarded))
        except ValueError:
            return peer

    def _trusted(self, peer: str) -> bool:
        try:
            return any(ip_address(peer) in network for network in self.trusted)
        except ValueError:
            return False

    # CSRF
    def csrf_for_session(self, session_id: str) -> str:
        return self.keys.sign("csrf", session_id)

    def csrf_for_browser(self, purpose: str, nonce: str) -> str:
        return self.keys.sign(purpose, nonce)


NUL_REFUSED = (
    "The address or form holds a NUL character (%00), which no name, domain or search "
    "contains: it was refused."
)


def _has_nul(*texts: object) -> bool:
    """Whether any text holds a NUL, which PostgreSQL refuses in any string (a 500 had it
    reached a query): refused at the door instead, for every page at once."""
    return any(isinstance(text, str) and "\x00" in text for text in texts)


def _relative(scope: Scope) -> str:
    """The path under the console's mount (/console/accounts -> /accounts)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def same_origin(request: Request, settings: Settings) -> bool:
    """No Origin header (an old browser, a command-line client: the CSRF token decides), or
    the request's own origin, or that of ABM_PUBLIC_URL (behind a TLS-terminating proxy)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    public = urlsplit(settings.public_url)
    return origin in (own, f"{public.scheme}://{public.netloc}")


def refusal(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The console's error page: the status and, in plain words, why."""
    titles = {
        401: "Sign in first",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        429: "Too many attempts",
        503: "Console unavailable",
    }
    response = page(
        request,
        "error.html",
        status_code=status,
        active=None,
        notice=None,
        problem=None,
        title=titles.get(status, "Refused"),
        status=status,
        message=message,
    )
    response.headers.update(headers or {})
    return response


async def http_error_page(request: Request, exc: Exception) -> Response:
    """HTTPException raised by a page (require_operator, checked_form, 404) as the console's
    error page."""
    assert isinstance(exc, HTTPException)
    return refusal(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))


class ConsoleAccess:
    """The middleware in front of every console route (see the module docstring)."""

    def __init__(self, app: ASGIApp, context: ConsoleContext) -> None:
        self.app = app
        self.gate = ConsoleGate(context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _relative(scope)
        if path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        gate = request.state.console_gate = self.gate  # the sign-in pages use this one
        if _has_nul(path, *(text for item in request.query_params.multi_items() for text in item)):
            response = refusal(request, 400, NUL_REFUSED)
            await response(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD") and not same_origin(request, gate.settings):
            response = refusal(
                request,
                403,
                "This form was sent from another site (its Origin header is not this "
                "console's), so it was refused: a page elsewhere cannot act in your name.",
            )
            await response(scope, receive, send)
            return
        try:
            await run_in_threadpool(gate.directory.users)
        except ConfigError as exc:
            log.error("console refused every request: %s", exc)
            response = refusal(  # the path and the problem stay out of anonymous eyes
                request,
                503,
                "The console's users file is not valid, so nobody can sign in. The server's "
                "log and `abm doctor` say what is wrong with it.",
            )
            await response(scope, receive, send)
            return
        nonce = gate.keys.unseal("browser", request.cookies.get(BROWSER_COOKIE))
        new_nonce = nonce is None
        nonce = nonce or secrets.token_urlsafe(24)
        if new_nonce:
            send = _with_cookie(send, BROWSER_COOKIE, gate.keys.seal("browser", nonce))
        if gate.proxy_mode:
            request.state.proxied = True  # no sign-in or sign-out links: the proxy's
            user, problem = await run_in_threadpool(gate.proxy_user, request)
            if user is None:
                log.warning("console refused a proxied request: %s", problem)
                await refusal(request, 403, problem)(scope, receive, send)
                return
            if path == LOGIN_PATH:  # the proxy signs people in
                await RedirectResponse("/console/", status_code=303)(scope, receive, send)
                return
            request.state.user = user
            request.state.csrf_token = gate.csrf_for_browser("proxy", f"{user.name}\0{nonce}")
            await self.app(scope, receive, send)
            return
        found = await run_in_threadpool(gate.session_user, request.cookies.get(SESSION_COOKIE))
        if found is not None:
            request.state.user, request.state.console_session = found
            request.state.csrf_token = gate.csrf_for_session(found[1])
        elif path == LOGIN_PATH:
            request.state.user = None
            request.state.csrf_token = gate.csrf_for_browser("login", nonce)
        elif request.method in ("GET", "HEAD"):
            await RedirectResponse("/console/login", status_code=303)(scope, receive, send)
            return
        else:
            response = refusal(request, 401, "You are not signed in (or your session ended).")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _with_cookie(send: Send, name: str, value: str) -> Send:
    """`send`, adding a Set-Cookie for this console cookie to the response's headers."""
    carrier = Response()
    carrier.set_cookie(name, value, **cookie_options())  # type: ignore[arg-type]
    cookie = carrier.headers["set-cookie"]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).append("set-cookie", cookie)
        await send(message)

    return sending


def require_operator(request: Request) -> None:
    """403 unless the signed-in user is an operator (the role read from the users file on
    this very request)."""
    user = getattr(request.state, "user", None)
    if user is None or not user.can_operate:
        raise HTTPException(
            403,
            "Your role is viewer: only an operator can do this. Ask an operator to do it, or "
            "whoever keeps the console users file to change your role.",
        )


async def checked_form(request: Request) -> FormData:
    """The posted form, once its csrf_token is this session's (compared in constant time);
    403 when it is missing or forged. Every POST handler reads its form through this."""
    form = await request.form()
    if _has_nul(*(text for item in form.multi_items() for text in item)):
        raise HTTPException(400, NUL_REFUSED)
    expected = getattr(request.state, "csrf_token", "") or ""
    given = form.get("csrf_token")
    if not isinstance(given, str) or not given:
        raise HTTPException(
            403,
            "This form came without its security token (csrf_token), so it was refused. "
            "Reload the page and send it again.",
        )
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            403,
            "This form's security token (csrf_token) is not this session's: the page may be "
            "from before you last signed in, or from another site. Reload and send it again.",
        )
    return form

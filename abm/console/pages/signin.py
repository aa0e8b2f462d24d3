"""Sign-in and sign-out. The sign-in form carries a CSRF token made from a signed nonce
cookie (double submit), so no other site can sign a browser in as someone else; the rate
limit is checked before the password (abm/console/access.py), and the answer never says
whether it was the name or the password that was wrong."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from abm.console.access import (
    SESSION_COOKIE,
    ConsoleGate,
    checked_form,
    cookie_options,
    refusal,
)
from abm.console.context import ConsoleContext
from abm.console.render import page
from abm.console.users import MIN_PASSWORD, users_path

HOME = "/console/accounts"
MAX_FIELD = 1024  # a name or password longer than this is no one's


def _gate(request: Request) -> ConsoleGate:
    """The middleware's gate (abm/console/access.py): one users file cache and one set of
    keys for the whole console."""
    return request.state.console_gate


def routes(context: ConsoleContext) -> list[BaseRoute]:
    def form_page(
        request: Request, status: int = 200, problem: str = "", name: str = ""
    ) -> Response:
        users = _gate(request).directory.users()
        return page(
            request,
            "signin.html",
            status_code=status,
            active=None,
            notice=None,
            problem=problem or None,
            name=name,
            no_users=not any(entry.password_hash for entry in users.values()),
            users_file=str(users_path(context.settings)),
            min_password=MIN_PASSWORD,
        )

    async def signin_page(request: Request) -> Response:
        if getattr(request.state, "user", None) is not None:
            return RedirectResponse(HOME, status_code=303)
        return await run_in_threadpool(form_page, request)

    async def signin(request: Request) -> Response:
        form = await checked_form(request)
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name:
            return await run_in_threadpool(
                form_page, request, 400, "Give both your name and your password."
            )
        name, password = name.strip()[:MAX_FIELD], password[:MAX_FIELD]
        gate = _gate(request)
        address = gate.client_address(request)
        earlier = getattr(request.state, "console_session", None)
        if earlier is not None:  # signing in again ends the session this browser had
            await run_in_threadpool(gate.sign_out, earlier)
        result = await run_in_threadpool(gate.sign_in, name, password, address)
        if result.status == 429:
            return refusal(
                request, 429, result.problem, headers={"Retry-After": str(result.retry_after)}
            )
        if result.session_id is None:
            return await run_in_threadpool(form_page, request, result.status, result.problem, name)
        response = RedirectResponse(HOME, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            gate.keys.seal("session", result.session_id),
            **cookie_options(),  # type: ignore[arg-type]
        )
        return response

    async def signout(request: Request) -> Response:
        await checked_form(request)
        session_id = getattr(request.state, "console_session", None)
        if session_id is None:  # proxy mode: the proxy holds the sign-in
            return refusal(
                request,
                400,
                "You are signed in by the reverse proxy in front of the console: sign out there.",
            )
        await run_in_threadpool(_gate(request).sign_out, session_id)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, **cookie_options())  # type: ignore[arg-type]
        return response

    return [
        Route("/login", signin_page, methods=["GET"]),
        Route("/login", signin, methods=["POST"]),
        Route("/logout", signout, methods=["POST"]),
    ]

"""Bounded request bodies for the web server, enforced while they stream in.

A pure ASGI middleware in front of every route. Per route it knows a body limit, optionally a
pool of slots shared with other body-heavy routes, and a time by which the whole body must
have arrived. In that order it:

1. answers 400 to a Content-Length that is not one non-negative decimal number, and 413 to
   one over the limit, before reading a byte;
2. answers 503 with Retry-After when the route's slots are all taken (never queued: a queue
   would hold the connections and their bodies all the same);
3. counts the body as the route reads it, and answers 413 the moment the count passes the
   limit (a chunked body declares no length), or 408 when the time is up: the route's read
   raises `BodyRefused`, which this middleware swallows, and nothing more is read.

Every refusal is JSON `{"error": ...}` naming the limit, sent with `Connection: close` when
the body was not read to its end (so the server does not drain the rest of it), and logged
with the method, the route template and the reason: never the body, the path's parameters
(an unsubscribe token) or the query string (the inbound token)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

RETRY_AFTER = 5  # seconds, in a 503's Retry-After


class BodyRefused(Exception):
    """Raised by receive() once the body passed its limit or its time; the middleware has
    already answered. A route must let it pass (it is not a malformed request)."""


class Slots:
    """At most `size` requests at once; take() says False at once when all are taken. No lock
    is needed: the event loop runs one step at a time and take() never awaits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.size:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


@dataclass(frozen=True)
class RouteLimit:
    """The limits of one route: `route` is a Starlette path ("/unsubscribe/{token}")."""

    route: str
    max_body: int
    slots: Slots | None = None
    body_timeout: float | None = None  # seconds for the whole body to arrive


def declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request declares, None without one; ValueError when it is not one
    decimal number (repeated values must agree: RFC 9110 8.6)."""
    values = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(value.isdigit() for value in values):
        raise ValueError("invalid Content-Length header: it must be one decimal number of bytes")
    return int(values.pop())


def _expects_body(headers: Sequence[tuple[bytes, bytes]], declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name.lower() == b"transfer-encoding" for name, _ in headers)


async def _answer(
    send: Send, status: int, reason: str, where: str, *, close: bool, retry_after: int = 0
) -> None:
    log.warning("refused %s: %s", where, reason)
    headers = [(b"content-type", b"application/json")]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    body = json.dumps({"error": reason}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: RouteLimit) -> str:
    return f"request body over {limit.max_body} bytes, the limit for {limit.route}"


class _Exchange:
    """One request's receive and send as the route sees them: the body counted and timed."""

    def __init__(
        self, limit: RouteLimit, where: str, receive: Receive, send: Send, body_expected: bool
    ) -> None:
        self.limit, self.where = limit, where
        self._receive, self._send = receive, send
        self.body_expected = body_expected  # by its headers; counted all the same
        self.body_done = False
        self.received = 0
        self.started = False  # the response has started
        self.refused = False  # we answered; the route's own answer is dropped
        self.deadline = (
            time.monotonic() + limit.body_timeout if limit.body_timeout is not None else None
        )

    async def _refuse(self, status: int, reason: str) -> NoReturn:
        if not self.started:
            self.refused = True
            await _answer(self._send, status, reason, self.where, close=True)
        raise BodyRefused(reason)

    async def receive(self) -> Message:
        if self.refused:
            raise BodyRefused("the body was refused")
        if self.body_done:  # after the body: a disconnect, passed through untouched
            return await self._receive()
        message: Message | None
        if self.deadline is None:
            message = await self._receive()
        else:
            try:
                message = await asyncio.wait_for(
                    self._receive(), max(0.0, self.deadline - time.monotonic())
                )
            except TimeoutError:
                message = None
        if message is None:
            await self._refuse(
                408,
                f"request body not received within {self.limit.body_timeout:g} s, "
                f"the limit for {self.limit.route}",
            )
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_body:
                await self._refuse(413, _too_large(self.limit))
            if not message.get("more_body", False):
                self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
            if self.body_expected and not self.body_done:  # do not drain the rest of it
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"connection", b"close")],
                }
        await self._send(message)


class RequestLimits:
    """The middleware: `routes` are tried in order, `default` covers every other path."""

    def __init__(self, app: ASGIApp, routes: Sequence[RouteLimit], default: RouteLimit) -> None:
        self.app = app
        self.routes = [(compile_path(limit.route)[0], limit) for limit in routes]
        self.default = default

    def limit_for(self, path: str) -> RouteLimit:
        for pattern, limit in self.routes:
            if pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        where = f"{scope['method']} {limit.route}"
        headers = scope["headers"]
        try:
            declared = declared_length(headers)
        except ValueError as exc:
            await _answer(send, 400, str(exc), where, close=True)
            return
        body_expected = _expects_body(headers, declared)
        if declared is not None and declared > limit.max_body:
            await _answer(send, 413, _too_large(limit), where, close=True)
            return
        if limit.slots is not None and not limit.slots.take():
            await _answer(
                send,
                503,
                f"{limit.slots.size} requests to {limit.route} are in progress, the most it "
                f"takes at once: retry after {RETRY_AFTER} s",
                where,
                close=body_expected,
                retry_after=RETRY_AFTER,
            )
            return
        exchange = _Exchange(limit, where, receive, send, body_expected)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BodyRefused:
            if not exchange.refused:
                raise  # the response had started: nothing to answer with, drop the connection
        finally:
            if limit.slots is not None:
                limit.slots.give_back()

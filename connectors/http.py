"""One HTTP client for every provider: retries with backoff, a client-side rate limit and
secrets kept out of logs and errors, written once instead of once per connector.

httpx itself retries nothing but connection set-up; 429 and 5xx handling lives here."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import httpx

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Of those, the answers that say the request was not processed: retried even for a POST.
# A 500, 502 or 504 may come after the server (or the one behind a gateway) acted on it.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
# Failures before the request reached the server: safe to retry even for a POST.
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after it may have been processed: retried only for idempotent methods.
UNANSWERED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
SENSITIVE_HEADER_WORDS = ("authorization", "key", "token", "secret", "cookie", "password")
REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret replaced by `***`, longest first so that a secret
    containing another one is hidden whole."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The values of headers that carry credentials, and the token after `Bearer `/`Basic `."""
    found = []
    for name, value in headers.items():
        if any(word in name.lower() for word in SENSITIVE_HEADER_WORDS):
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.isalpha():
                found.append(token.strip())
    return found


class ApiError(Exception):
    """A request that failed for good: a non-retryable status, or retries exhausted.

    `errors` holds the provider's own `(field, message)` pairs when the body had the common
    `{"errors": [{"field": ..., "message": ...}]}` shape, already redacted. The keyword
    arguments have defaults so that the error survives pickling (Prefect task states)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        retryable: bool = False,
        errors: tuple[tuple[str | None, str], ...] = (),
        maybe_processed: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retryable = retryable
        self.errors = errors
        self.maybe_processed = maybe_processed


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, the backoff curve, and the total sleep allowed."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^(attempt-1))], so clients that
        failed together do not retry together."""
        return rand() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds the server asked us to wait: `Retry-After` (seconds or HTTP date), else the
    `X-RateLimit-Reset` epoch some providers (SendGrid, GitHub) send with a 429."""
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            pass
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if response.status_code == 429 and reset.isdigit():
        return max(0.0, int(reset) - now)
    return None


class TokenBucket:
    """A thread-safe limiter: `rate` requests a second on average, bursts of `burst`.

    A caller reserves its token under the lock and sleeps outside it, so waiting threads
    queue up one interval apart instead of all waking at once."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def _provider_errors(response: httpx.Response) -> tuple[tuple[str | None, str], ...]:
    try:
        body = response.json()
    except ValueError:
        return ()
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        # an OAuth 2.0 token endpoint's error (RFC 6749 section 5.2)
        described = body.get("error_description")
        return ((None, f"{body['error']}: {described}" if described else body["error"]),)
    # Salesforce answers a bare list: [{"errorCode": ..., "message": ..., "fields": [...]}]
    items = body.get("errors") if isinstance(body, dict) else body
    if not isinstance(items, list):
        return ()
    pairs = []
    for item in items:
        if isinstance(item, dict) and item.get("message"):
            field = item.get("field")
            field = None if field in (None, "null") else str(field)
            code = item.get("errorCode")
            message = str(item["message"])
            pairs.append((field, f"{code}: {message}" if isinstance(code, str) else message))
    return tuple(pairs)


class Closing:
    """`with` support for anything that has `close()` (clients and connectors alike)."""

    def close(self) -> None:
        """Release what the object holds; subclasses override."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ApiClient(Closing):
    """One long-lived `httpx.Client` per provider (connection pooling) with the retry, rate
    and redaction rules every connector needs. `transport`, `sleep`, `clock` and `rand`
    are the test seams: tests never touch the network and never really sleep.

    `clock` is wall-clock seconds, because an HTTP-date `Retry-After` needs it."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "api",
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        rate_per_second: float | None = None,
        burst: int = 1,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        headers = dict(headers or {})
        self.name = name
        self.retry = retry or RetryPolicy()
        self._secrets = [*secrets, *header_secrets(headers)]
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._limiter = (
            TokenBucket(rate_per_second, burst, clock=clock, sleep=sleep)
            if rate_per_second
            else None
        )
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def redact(self, text: str) -> str:
        """`text` with this client's secrets hidden."""
        return redact(text, self._secrets)

    def request(
        self, method: str, path: str, *, repeatable: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request and return its 2xx response, retrying what is worth retrying.

        Raises `ApiError` at once for a non-retryable status, and after the last attempt
        (or when the next wait would exceed `max_total_wait`) for retryable failures.
        `repeatable`: doing the request twice has the effect of doing it once (default: by
        method; a POST is not, unless its caller knows better, e.g. an upsert by key). A
        request that is not repeatable is retried only when the answer says it was not
        processed (connection refused, 429, 503); a timeout or a 500/502/504 after it was
        sent raises at once with `maybe_processed`, so the caller can record the doubt
        instead of sending twice."""
        method = method.upper()
        if repeatable is None:
            repeatable = method in IDEMPOTENT_METHODS
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            if self._limiter:
                self._limiter.acquire()
            outcome = self._attempt(method, path, kwargs, repeatable)
            if isinstance(outcome, httpx.Response):
                return outcome
            error, delay = outcome
            if not error.retryable or attempt >= self.retry.max_attempts:
                raise error
            if delay is None:
                delay = self.retry.backoff(attempt, self._rand)
            if waited + delay > self.retry.max_total_wait:
                raise error
            log.warning(
                self.redact(
                    f"{self.name}: {method} {path} failed ({error.reason}); "
                    f"attempt {attempt}/{self.retry.max_attempts}, retrying in {delay:.2f}s"
                )
            )
            self._sleep(delay)
            waited += delay

    def _attempt(
        self, method: str, path: str, kwargs: dict[str, Any], repeatable: bool
    ) -> httpx.Response | tuple[ApiError, float | None]:
        """One try: the 2xx response, or the error and the wait the server asked for."""
        try:
            response = self._client.request(method, path, **kwargs)
        except UNSENT_ERRORS as exc:
            return self._error(method, path, None, f"{type(exc).__name__}: {exc}", True), None
        except UNANSWERED_ERRORS as exc:
            reason = f"no response ({type(exc).__name__}: {exc})"
            if not repeatable:
                reason += "; not retried, the server may have processed it"
            error = self._error(method, path, None, reason, repeatable)
            error.maybe_processed = not repeatable
            return error, None
        except httpx.HTTPError as exc:
            return self._error(method, path, None, f"{type(exc).__name__}: {exc}", False), None
        if response.is_success:
            return response
        errors = _provider_errors(response)
        detail = "; ".join(message for _, message in errors) or response.reason_phrase
        status = response.status_code
        if status in (401, 403):
            detail = f"credentials rejected ({detail})"
        retryable = status in RETRYABLE_STATUSES
        doubt = retryable and not repeatable and status not in NOT_PROCESSED_STATUSES
        if doubt:
            detail += "; not retried, the server may have processed it"
            retryable = False
        error = self._error(method, path, status, detail, retryable, errors)
        error.maybe_processed = doubt
        return error, retry_after(response, self._clock()) if retryable else None

    def _error(
        self,
        method: str,
        path: str,
        status: int | None,
        reason: str,
        retryable: bool,
        errors: tuple[tuple[str | None, str], ...] = (),
    ) -> ApiError:
        reason = self.redact(reason)[:500]
        where = f"HTTP {status}" if status else "request failed"
        return ApiError(
            self.redact(f"{self.name}: {method} {path}: {where}: {reason}"),
            status=status,
            reason=reason,
            retryable=retryable,
            errors=tuple(
                (field and self.redact(field), self.redact(message)) for field, message in errors
            ),
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

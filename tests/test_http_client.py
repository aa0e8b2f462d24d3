"""The shared HTTP client: retries, backoff, Retry-After, rate limit and redaction, against
respx routes with a fake clock, so nothing touches the network or really sleeps."""

from __future__ import annotations

import logging
import pickle
import threading
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from connectors.http import ApiClient, ApiError, RetryPolicy, TokenBucket, redact, retry_after

BASE = "https://api.example.test"
KEY = "sk_live_0123456789abcdefSECRET"
OTHER = "other-configured-secret"
START = 1_700_000_000.0


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(fake: FakeTime, **options) -> ApiClient:
    options.setdefault("rand", lambda: 1.0)
    return ApiClient(
        BASE,
        name="example",
        headers={"Authorization": f"Bearer {KEY}"},
        sleep=fake.sleep,
        clock=fake.clock,
        **options,
    )


@pytest.fixture
def router():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def test_redact_hides_every_secret_longest_first():
    text = f"key={KEY} prefix={KEY[:6]} again {KEY}"
    assert redact(text, [KEY[:6], KEY, ""]) == "key=*** prefix=*** again ***"
    assert redact("nothing here", []) == "nothing here"


def test_backoff_grows_exponentially_and_is_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    delays = [policy.backoff(attempt, lambda: 1.0) for attempt in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


@given(attempt=st.integers(1, 40), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_full_jitter_stays_between_zero_and_the_cap(attempt, fraction):
    policy = RetryPolicy(base_delay=0.25, max_delay=10.0)
    ceiling = min(10.0, 0.25 * 2 ** (attempt - 1))
    assert 0.0 <= policy.backoff(attempt, lambda: fraction) <= ceiling


def test_retry_after_seconds_wins_over_backoff(router):
    fake = FakeTime()
    route = router.get("/items").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)]
    )
    with client(fake) as api:
        assert api.request("GET", "/items").status_code == 200
    assert route.call_count == 2
    assert fake.sleeps == [7.0]


def test_retry_after_http_date(router):
    fake = FakeTime()
    when = datetime.fromtimestamp(START, UTC) + timedelta(seconds=30)
    router.get("/items").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            httpx.Response(200),
        ]
    )
    with client(fake) as api:
        api.request("GET", "/items")
    assert fake.sleeps == [30.0]


def test_rate_limit_reset_header_is_used_for_429_without_retry_after():
    response = httpx.Response(429, headers={"X-RateLimit-Reset": str(int(START) + 12)})
    assert retry_after(response, START) == 12.0
    assert retry_after(httpx.Response(503), START) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_back_off_then_succeed(router, status):
    fake = FakeTime()
    route = router.post("/items").mock(
        side_effect=[httpx.Response(status), httpx.Response(status), httpx.Response(201)]
    )
    with client(fake, retry=RetryPolicy(base_delay=0.5)) as api:
        assert api.request("POST", "/items", json={}, repeatable=True).status_code == 201
    assert route.call_count == 3
    assert fake.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [429, 503])
def test_a_post_is_retried_when_the_answer_says_it_was_not_processed(router, status):
    fake = FakeTime()
    route = router.post("/items").mock(side_effect=[httpx.Response(status), httpx.Response(201)])
    with client(fake, retry=RetryPolicy(base_delay=0.5)) as api:
        assert api.request("POST", "/items", json={}).status_code == 201
    assert route.call_count == 2


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_post_that_may_have_been_processed_is_not_sent_again(router, status):
    fake = FakeTime()
    route = router.post("/items").mock(side_effect=[httpx.Response(status), httpx.Response(201)])
    with client(fake) as api, pytest.raises(ApiError) as caught:
        api.request("POST", "/items", json={})
    assert route.call_count == 1
    assert caught.value.maybe_processed and not caught.value.retryable
    assert "may have processed" in str(caught.value)


def test_gives_up_after_max_attempts_with_a_retryable_error(router):
    fake = FakeTime()
    route = router.get("/items").mock(return_value=httpx.Response(503))
    with (
        client(fake, retry=RetryPolicy(max_attempts=4, base_delay=1.0)) as api,
        pytest.raises(ApiError) as caught,
    ):
        api.request("GET", "/items")
    assert route.call_count == 4
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert caught.value.retryable and caught.value.status == 503


def test_stops_before_the_total_wait_budget_is_exceeded(router):
    fake = FakeTime()
    route = router.get("/items").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "600"})
    )
    with (
        client(fake, retry=RetryPolicy(max_total_wait=60.0)) as api,
        pytest.raises(ApiError) as caught,
    ):
        api.request("GET", "/items")
    assert route.call_count == 1 and fake.sleeps == []
    assert caught.value.retryable and caught.value.status == 429


def test_non_retryable_4xx_raises_at_once_with_the_provider_reason(router):
    fake = FakeTime()
    body = {"errors": [{"field": "name", "message": "name is required"}]}
    route = router.post("/items").mock(return_value=httpx.Response(422, json=body))
    with client(fake) as api, pytest.raises(ApiError) as caught:
        api.request("POST", "/items", json={})
    assert route.call_count == 1 and fake.sleeps == []
    error = caught.value
    assert not error.retryable and error.status == 422
    assert error.errors == (("name", "name is required"),)
    assert "name is required" in str(error)


def test_api_error_survives_pickling():
    error = ApiError(
        "x: HTTP 400: bad", status=400, reason="bad", retryable=False, errors=((None, "bad"),)
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.status, copy.reason, copy.retryable, copy.errors) == (
        "x: HTTP 400: bad",
        400,
        "bad",
        False,
        ((None, "bad"),),
    )


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_say_so(router, status):
    router.get("/items").mock(return_value=httpx.Response(status))
    with client(FakeTime()) as api, pytest.raises(ApiError, match="credentials rejected") as caught:
        api.request("GET", "/items")
    assert not caught.value.retryable


def test_connection_errors_are_retried_even_for_post(router):
    fake = FakeTime()
    route = router.post("/items").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ConnectTimeout("slow"),
            httpx.Response(200),
        ]
    )
    with client(fake) as api:
        api.request("POST", "/items")
    assert route.call_count == 3 and len(fake.sleeps) == 2


def test_a_post_that_may_have_been_processed_is_not_retried(router):
    route = router.post("/items").mock(side_effect=[httpx.ReadTimeout("late"), httpx.Response(200)])
    with (
        client(FakeTime()) as api,
        pytest.raises(ApiError, match="may have processed it") as caught,
    ):
        api.request("POST", "/items")
    assert route.call_count == 1 and not caught.value.retryable


def test_a_get_that_timed_out_is_retried(router):
    route = router.get("/items").mock(side_effect=[httpx.ReadTimeout("late"), httpx.Response(200)])
    with client(FakeTime()) as api:
        api.request("GET", "/items")
    assert route.call_count == 2


def test_token_bucket_spaces_requests_by_the_rate():
    fake = FakeTime(now=0.0)
    bucket = TokenBucket(rate=4.0, burst=2, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(6):
        bucket.acquire()
        starts.append(fake.now)
    assert starts == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_token_bucket_is_thread_safe():
    """Time stands still, so each thread's wait shows which slot it reserved: all distinct."""
    waits: list[float] = []
    bucket = TokenBucket(rate=10.0, clock=lambda: 0.0, sleep=waits.append)
    threads = [
        threading.Thread(target=lambda: [bucket.acquire() for _ in range(25)]) for _ in "abcd"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(w * 10) for w in waits) == list(range(1, 100))


def test_client_rate_limit_spaces_calls(router):
    fake = FakeTime(now=0.0)
    seen = []
    router.get("/items").mock(
        side_effect=lambda request: seen.append(fake.now) or httpx.Response(200)
    )
    with client(fake, rate_per_second=2.0) as api:
        for _ in range(4):
            api.request("GET", "/items")
    assert seen == [0.0, 0.5, 1.0, 1.5]


def test_the_key_never_reaches_logs_or_exceptions(router, caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeTime()
    echo = {"errors": [{"message": f"bad token Bearer {KEY}"}]}
    router.get("/items").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}, json=echo),
            httpx.ConnectError(f"could not connect with {KEY} {OTHER}"),
            httpx.Response(401, json=echo),
        ]
    )
    with client(fake, secrets=[OTHER]) as api, pytest.raises(ApiError) as caught:
        api.request("GET", "/items", headers={"X-Trace": OTHER})
    error = caught.value
    rendered = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), rendered, error.reason, str(error.errors), caplog.text):
        assert KEY not in text
        assert OTHER not in text
    assert "***" in str(error)
    assert any("retrying" in record.getMessage() for record in caplog.records)

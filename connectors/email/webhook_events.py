"""What every provider's event webhook shares: the two ways a post is refused and how far a
signed timestamp may be from now."""

from __future__ import annotations

MAX_CLOCK_SKEW_SECONDS = 300


class BadEvents(ValueError):
    """The body is not a list of provider events; the message says why (HTTP 400)."""


class BadSignature(ValueError):
    """The request was not signed by the provider (HTTP 403), or too long ago (HTTP 401)."""

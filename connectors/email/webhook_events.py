"""What every provider's event webhook shares: the two ways a post is refused, how far a
signed timestamp may be from now, settings that hold several keys, and the comparison of a
shared-secret token."""

from __future__ import annotations

import hashlib
import hmac
import re

MAX_CLOCK_SKEW_SECONDS = 300
_KEY_SEPARATORS = re.compile(r"[\s,]+")


class BadEvents(ValueError):
    """The body is not a list of provider events; the message says why (HTTP 400)."""


class BadSignature(ValueError):
    """The request was not signed by the provider (HTTP 403), or too long ago (HTTP 401)."""


def split_keys(value: str | None) -> list[str]:
    """The keys a setting holds, comma or whitespace separated. Several keys let a key be
    rotated without refusing a single event: add the new key, switch the provider over,
    then remove the old one. Empty or unset: no key, and the route refuses every post."""
    return [key for key in _KEY_SEPARATORS.split(value or "") if key]


def token_matches(given: str, expected: str) -> bool:
    """Whether `given` is the configured token, in time that depends on neither value:
    both are hashed first, so even the expected length does not leak. Any text is fine
    (lone surrogates included), since a forged request may carry anything."""

    def digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    return bool(expected) and hmac.compare_digest(digest(given), digest(expected))

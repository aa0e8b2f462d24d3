"""Signed one-click unsubscribe tokens: the link names the contact, and only we can make one."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache


class BadToken(ValueError):
    """The token was not made by us (forged, truncated or signed with another key)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _keyed(key: str) -> hmac.HMAC:
    """The HMAC state after the key and the prefix, set up once: each token copies it."""
    return hmac.new(key.encode(), b"unsubscribe:", hashlib.sha256)


def _signature(payload: str, key: str) -> str:
    signer = _keyed(key).copy()
    signer.update(payload.encode())
    return _b64(signer.digest()[:16])


MAX_ID = 2**31 - 1


def make_token(contact_id: int, campaign_id: int, key: str) -> str:
    payload = _b64(f"{contact_id}.{campaign_id}".encode())
    return f"{payload}.{_signature(payload, key)}"


def read_token(token: str, key: str) -> tuple[int, int]:
    """(contact_id, campaign_id) from a token we signed; BadToken otherwise."""
    payload, _, signature = token.partition(".")
    # Our tokens are ASCII; anything else in a link (é, a lone surrogate) is simply not ours,
    # and compare_digest refuses non-ASCII str, so it must not get that far.
    if not payload or not (payload + signature).isascii():
        raise BadToken("unsubscribe link is not valid")
    if not hmac.compare_digest(signature, _signature(payload, key)):
        raise BadToken("unsubscribe link is not valid")
    try:
        contact, campaign = (int(part) for part in _unb64(payload).decode().split("."))
    except ValueError:
        raise BadToken("unsubscribe link is not valid") from None
    # ids are positive 32-bit integers in every database we support; anything else was never
    # a row of ours, and must not reach a query that would overflow on it
    if not (0 < contact <= MAX_ID and 0 < campaign <= MAX_ID):
        raise BadToken("unsubscribe link is not valid")
    return contact, campaign

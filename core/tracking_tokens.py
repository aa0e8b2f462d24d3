"""Signed tokens of first-party tracking: a click link, an open pixel, a site visitor id.

Every token is `KEY.PAYLOAD.SIGNATURE`, all base64url (no padding) so it fits a URL path or
query as it is:

- `KEY`: four characters naming the signing key (from a SHA-256 of it, so it says nothing
  about the key), which picks the key to check with among ABM_SECRET_KEY and the retired
  keys in ABM_PREVIOUS_SECRET_KEYS;
- `PAYLOAD`: what the token stands for, never personal data: a ledger row id (the
  `delivery` row a message was sent from), and for a click the URL it leads to (the link as
  the template wrote it, UTM parameters added) and whether the site gets a visitor id; for a
  visitor id, the time of the click;
- `SIGNATURE`: HMAC-SHA256 over purpose, key id and payload, cut to 128 bits. The purpose
  (`click`, `open`, `visitor`) is signed in, so no token serves as another kind.

A link can only redirect to the URL its payload holds, and only when we signed it: changing
one character anywhere makes it refuse (no open redirect). Rotation: set ABM_SECRET_KEY to
the new key and move the old one to ABM_PREVIOUS_SECRET_KEYS; links it signed work for as
long as it stays there (README: at least 180 days), and answer 404 once it is removed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from core.settings import Settings

MAX_ID = 2**31 - 1  # ids are positive 32-bit integers in every database we support
MAX_TOKEN_LENGTH = 4096  # characters; a longer link is not one of ours (a URL is ~2,000 at most)
_KEY_SEPARATORS = re.compile(r"[\s,]+")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_VISITOR_FLAG = 1  # the click's destination is the user's own site: hand it a visitor id


class BadTrackingToken(ValueError):
    """Not a token we made: forged, altered, cut, oversize, or signed with a key we no
    longer hold. The message is safe to log (it never repeats the token)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=32)
def key_id(key: str) -> str:
    """Four characters naming a key without revealing anything about it."""
    return _b64(hashlib.sha256(b"abm-key-id:" + key.encode()).digest()[:3])


@lru_cache(maxsize=32)
def _keyed(key: str, purpose: str) -> hmac.HMAC:
    """The HMAC state after the key and the purpose, set up once: each token copies it."""
    return hmac.new(key.encode(), f"abm-{purpose}:{key_id(key)}.".encode(), hashlib.sha256)


def _signature(key: str, purpose: str, payload: str) -> str:
    signer = _keyed(key, purpose).copy()
    signer.update(payload.encode("ascii"))
    return _b64(signer.digest()[:16])


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs new tokens and the retired ones that still verify old ones."""

    current: str
    previous: tuple[str, ...] = ()
    _by_id: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, tuple[str, ...]] = {}
        for key in (self.current, *self.previous):
            if key:
                by_id[key_id(key)] = (*by_id.get(key_id(key), ()), key)
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        previous = _KEY_SEPARATORS.split(settings.previous_secret_keys or "")
        return cls(settings.signing_key(), tuple(key for key in previous if key))

    def all(self) -> tuple[str, ...]:
        """Every key that verifies, the current one first."""
        return (self.current, *(key for key in self.previous if key != self.current))

    def sign(self, purpose: str, payload: bytes) -> str:
        text = _b64(payload)
        return f"{key_id(self.current)}.{text}.{_signature(self.current, purpose, text)}"

    def verify(self, purpose: str, token: str) -> bytes:
        """The payload of a token we signed for `purpose` with one of these keys."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise BadTrackingToken(f"over {MAX_TOKEN_LENGTH} characters")
        parts = token.split(".")
        # Our tokens are ASCII base64url; anything else (é, a lone surrogate) is not ours,
        # and compare_digest refuses non-ASCII str, so it must not get that far.
        if len(parts) != 3 or not all(_TOKEN_CHARS.fullmatch(part) for part in parts):
            raise BadTrackingToken("not in the form of our tokens")
        kid, payload, signature = parts
        keys = self._by_id.get(kid)
        if keys is None:
            raise BadTrackingToken(
                "signed with a key that is neither ABM_SECRET_KEY nor one of "
                "ABM_PREVIOUS_SECRET_KEYS (forged, or its key was retired)"
            )
        if not any(
            hmac.compare_digest(signature, _signature(key, purpose, payload)) for key in keys
        ):
            raise BadTrackingToken("the signature does not match (forged or altered)")
        try:
            return _unb64(payload)
        except (binascii.Error, ValueError):
            raise BadTrackingToken("the payload is not base64url") from None


def _check_id(value: int, *, zero: bool = False) -> int:
    if not ((0 if zero else 1) <= value <= MAX_ID):
        raise BadTrackingToken("names no ledger row")
    return value


@dataclass(frozen=True)
class ClickTarget:
    """What a click link stands for: its ledger row (0 in a preview), where it leads, and
    whether that is the user's own site (which then gets a visitor id)."""

    delivery_id: int
    url: str
    site: bool = False


def make_click_token(keys: SigningKeys, delivery_id: int, url: str, *, site: bool = False) -> str:
    """A click link's token: ledger row 0 (a preview) redirects and counts nothing."""
    flags = _VISITOR_FLAG if site else 0
    return keys.sign("click", struct.pack(">IB", delivery_id, flags) + url.encode("utf-8"))


def read_click_token(keys: SigningKeys, token: str) -> ClickTarget:
    payload = keys.verify("click", token)
    if len(payload) < 6:
        raise BadTrackingToken("too short")
    delivery_id, flags = struct.unpack(">IB", payload[:5])
    try:
        url = payload[5:].decode("utf-8")
    except UnicodeDecodeError:
        raise BadTrackingToken("the URL is not UTF-8") from None
    # signed by us, so made by us; checked all the same, as it becomes a Location header
    if not url.startswith(("https://", "http://")) or not url.isprintable():
        raise BadTrackingToken("not an http(s) URL")
    return ClickTarget(_check_id(delivery_id, zero=True), url, bool(flags & _VISITOR_FLAG))


def make_open_token(keys: SigningKeys, delivery_id: int) -> str:
    return keys.sign("open", struct.pack(">I", delivery_id))


def read_open_token(keys: SigningKeys, token: str) -> int:
    payload = keys.verify("open", token)
    if len(payload) != 4:
        raise BadTrackingToken("not an open token")
    return _check_id(struct.unpack(">I", payload)[0], zero=True)


def make_visitor_token(keys: SigningKeys, delivery_id: int, clicked_at: int) -> str:
    """The visitor id the user's site keeps after a click: the ledger row and the click's
    time (Unix seconds), so that it stops counting after ABM_VISITOR_DAYS."""
    return keys.sign("visitor", struct.pack(">IQ", delivery_id, max(0, clicked_at)))


def read_visitor_token(keys: SigningKeys, token: str) -> tuple[int, int]:
    """(ledger row id, click time in Unix seconds) of a visitor id we made."""
    payload = keys.verify("visitor", token)
    if len(payload) != 12:
        raise BadTrackingToken("not a visitor id")
    delivery_id, clicked_at = struct.unpack(">IQ", payload)
    return _check_id(delivery_id), clicked_at

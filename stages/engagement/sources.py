"""Where engagement comes from: email, LinkedIn, the user's own website or intent data.

`source_of` decides it for one event, once for the whole code: the rollup splits each
account's engagement score by it (kept with the account, `Account.engagement_sources`),
`abm accounts show` lists the top events of each source and the report adds the sources up
over the accounts, so a marketer can see why an account moved."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from core.vocabulary import ENGAGEMENT_SOURCES

__all__ = ["SOURCES", "source_of", "source_totals", "split_exactly", "stored_sources"]

SOURCES = ENGAGEMENT_SOURCES
_LINKEDIN_TYPES = frozenset({"ad_impression", "ad_click", "lead_form"})
_EMAIL_CHANNELS = frozenset({"", "email"})


def source_of(event_type: str, channel: str | None = None) -> str:
    """The source of an event of this type that came in on this channel.

    Intent data is `intent`; a page view on the user's site (`web_visit`, channel `web`) is
    `web`; LinkedIn ads and lead forms (channel `linkedin`) are `linkedin`; everything that
    came with an email is `email`, whoever reported it: SendGrid or Mailgun webhooks, our own
    click redirect and pixel, Inbound Parse or the monitored mailbox (replies, bounces,
    complaints). A channel none of these names is `other`."""
    if event_type == "intent" or channel == "intent":
        return "intent"
    if event_type == "web_visit" or channel == "web":
        return "web"
    if channel == "linkedin" or event_type in _LINKEDIN_TYPES:
        return "linkedin"
    if channel is None or channel in _EMAIL_CHANNELS:
        return "email"
    return "other"


def split_exactly(parts: Mapping[str, float], total: float) -> dict[str, float]:
    """`parts` rounded to one decimal so that they add up to `total` (itself rounded to one
    decimal) exactly: each part is rounded, then the tenths still missing go to the parts
    that rounding moved furthest the other way. Used when the parts add up to `total`
    before rounding."""
    tenths = {name: value * 10 for name, value in parts.items()}
    rounded = {name: math.floor(value + 0.5) for name, value in tenths.items()}
    missing = round(total * 10) - sum(rounded.values())
    if missing:
        step = 1 if missing > 0 else -1
        # the parts whose rounding lost most in the direction still missing go first
        order = sorted(tenths, key=lambda name: step * (rounded[name] - tenths[name]))
        for name in order[: abs(missing)]:
            rounded[name] += step
    return {name: value / 10 for name, value in rounded.items()}


def source_totals(values: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The per-source part of a stored breakdown (`Account.engagement_sources`), every
    source present; None when the account has none yet."""
    if not values:
        return None
    return {source: float(values.get(source) or 0.0) for source in SOURCES}


def stored_sources(engagement: Any) -> dict[str, Any]:
    """What the rollup keeps with the account beside its score (`AccountEngagement`): the
    score by source, the breadth bonus and when it was worked out (`as_of`: decay runs on,
    so a later look at the same events gives smaller numbers)."""
    as_of = engagement.as_of
    return {
        **{source: engagement.sources.get(source, 0.0) for source in SOURCES},
        "breadth": engagement.breadth,
        "as_of": as_of.isoformat() if as_of is not None else None,
    }

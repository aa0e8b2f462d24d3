"""`abm demo`: first-party tracking end to end, on simulated people.

The demo's messages went to the outbox with their links rewritten to our signed redirect.
Here a few of the people the simulation says opened the email (and did not click) "click"
the tracked link in their own `.eml` file, through the very web server `abm webhooks serve`
runs (in process, no port), and then "visit" the demo company's site, as the site script
would report it: the redirect stores the click and hands the site a visitor id, the page
view counts for that person and account. A mail scanner also follows a few links first (a
HEAD request): recorded, not counted. It is all SIMULATED, in the demo's own database only
(the app refuses a database with real accounts), and every event says so (`provider`
`simulated`, `data.simulated`)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import Engine, or_, select

from abm.webhooks import create_app
from connectors.email.outbox import eml_name
from core.settings import Settings
from models.tables import EngagementEvent, utcnow
from stages.engagement.rollup import refuse_simulation_on_real_data

PEOPLE = 20  # simulated people who follow their tracked link
SCANNED = 3  # of them, whose mail a security scanner checks first
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 (abm demo)"
# when the simulated clicks happen: hours after sending, as people read mail (a click within
# ABM_CLICK_SCANNER_SECONDS of sending would count as a scanner's)
LATER = timedelta(hours=3)


@dataclass
class TrackedDemo:
    """What the simulated clicks and visits did, for the demo's summary."""

    clicks: int = 0
    scanner_clicks: int = 0
    visits: int = 0
    example_link: str | None = None
    example_target: str | None = None
    stored: Counter[str] = field(default_factory=Counter)


def _readers(engine: Engine, limit: int) -> list[str]:
    """Message-IDs of people the simulation made open the email but not click (so that no
    one has two clicks), the same ones every run."""
    clicked = select(EngagementEvent.message_id).where(
        EngagementEvent.provider == "simulated", EngagementEvent.type == "click"
    )
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(EngagementEvent.message_id)
                .where(
                    EngagementEvent.provider == "simulated",
                    EngagementEvent.type == "open",
                    EngagementEvent.message_id.is_not(None),
                    EngagementEvent.message_id.not_in(clicked),
                )
                .order_by(EngagementEvent.message_id)
                .limit(limit)
            ).scalars()
        )


def _tracked_link(outbox: Path, message_id: str, base: str) -> str | None:
    """The first tracked link in the HTML part of the message's `.eml` file."""
    path = outbox / eml_name(message_id)
    if not path.exists():
        return None
    message = message_from_bytes(path.read_bytes(), policy=default)
    body = message.get_body(("html",))
    if body is None:
        return None
    found = re.search(re.escape(base) + r"/c/[A-Za-z0-9_.-]+", body.get_content())
    return found.group(0) if found else None


async def _follow(settings: Settings, links: list[str], result: TrackedDemo) -> None:
    app = create_app(settings, simulated=True, clock=lambda: utcnow() + LATER)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as client:
        for number, link in enumerate(links):
            path = urlsplit(link).path
            if number < SCANNED:  # a gateway checks the link before the person sees it
                await client.head(path, headers={"User-Agent": "Mimecast URL Protect"})
                result.scanner_clicks += 1
            answer = await client.get(path, headers={"User-Agent": BROWSER})
            if answer.status_code != 302:
                continue
            result.clicks += 1
            target = answer.headers["location"]
            if result.example_link is None:
                result.example_link, result.example_target = link, target
            vid = parse_qs(urlsplit(target).query).get("abm_vid")
            if not vid:
                continue
            pages = [urlsplit(target).path] + (["/pricing"] if number % 2 == 0 else [])
            for page in pages:  # what the site script would send from the demo's site
                seen = await client.post(
                    "/v", data={"vid": vid[0], "p": page}, headers={"User-Agent": BROWSER}
                )
                result.visits += seen.status_code == 204


def simulate_tracked_engagement(engine: Engine, settings: Settings) -> TrackedDemo:
    """Demo only: follow a few simulated people's tracked links and site visits through the
    web server; returns what happened. Nothing when no message has tracked links (a
    provider that tracks itself, or clicks off in the campaign file)."""
    refuse_simulation_on_real_data(engine)
    result = TrackedDemo()
    base = settings.public_url.rstrip("/")
    links = [
        link
        for message_id in _readers(engine, PEOPLE)
        if (link := _tracked_link(settings.outbox_dir, message_id, base))
    ]
    if links:
        asyncio.run(_follow(settings, links, result))
    with engine.connect() as connection:
        rows = connection.execute(
            select(EngagementEvent.type).where(
                EngagementEvent.provider == "simulated",
                or_(  # the keys the redirect and the page views store under
                    EngagementEvent.provider_event_id.like("click:%"),
                    EngagementEvent.type.in_(("click_scanner", "web_visit")),
                ),
            )
        ).scalars()
        result.stored = Counter(rows)
    return result

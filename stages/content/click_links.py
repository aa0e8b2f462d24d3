"""First-party click and open tracking, written into the message itself.

Where no provider tracks (the outbox, console and a plain SMTP server: see
`connectors.email.attribution.provider_tracks`), each link of both parts is rewritten, after
its UTM parameters were added, to `ABM_PUBLIC_URL/c/<token>`: a redirect the web server
answers (abm/tracking.py) once it stored the click. The token is signed
(`core.tracking_tokens`), names the message's ledger row and holds the URL, so the server
redirects only to URLs we put in a message. Never rewritten: the unsubscribe link, links
already on ABM_PUBLIC_URL, `mailto:` and `tel:` links (only http(s) links are), and a link so
long that its token would pass the server's limit (it stays as it was, uncounted).

With `tracking: {opens: true}` in the campaign file an open pixel (`/o/<token>.gif`, 1x1) is
added at the end of the HTML part. Opens are weak evidence: mail privacy protection and
image proxies fetch images without a person, and many clients block them."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from connectors.email.attribution import provider_tracks
from core.campaign_file import CampaignFile
from core.domains import normalise_domain
from core.errors import ConfigError
from core.settings import Settings
from core.tracking_tokens import (
    MAX_TOKEN_LENGTH,
    SigningKeys,
    make_click_token,
    make_open_token,
)
from stages.content.rendering import EmailParts

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>()\"']+")
_TRAILING = ".,;:!?"  # sentence punctuation after a URL in text belongs to the sentence
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def site_domains(settings: Settings) -> tuple[str, ...]:
    """ABM_SITE_DOMAINS, normalised; a value that is not a domain is a ConfigError."""
    found = []
    for raw in filter(None, (part.strip() for part in (settings.site_domains or "").split(","))):
        try:
            found.append(normalise_domain(raw))
        except ValueError as exc:
            raise ConfigError(f"ABM_SITE_DOMAINS: {exc}") from None
    return tuple(found)


@lru_cache(maxsize=4096)
def _on_site(url: str, domains: tuple[str, ...]) -> bool | None:
    """Whether the link goes to one of `domains` (the user's own site); None when it is not
    a link a browser would follow. A campaign has few links, each worked out once."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # an unbalanced [ in the host
        return None
    return any(host == domain or host.endswith("." + domain) for domain in domains)


@dataclass(frozen=True)
class LinkTracker:
    """What one campaign's messages get: tracked links, an open pixel, or both."""

    keys: SigningKeys
    base: str  # ABM_PUBLIC_URL without a trailing slash
    site_domains: tuple[str, ...] = ()
    clicks: bool = True
    opens: bool = False

    def link(self, url: str, delivery_id: int, skip: str) -> str | None:
        """The tracked form of one link, or None to leave it as it is."""
        if url == skip or url.startswith(self.base + "/"):
            return None
        site = _on_site(url, self.site_domains)
        if site is None:
            return None
        token = make_click_token(self.keys, delivery_id, url, site=site)
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        return f"{self.base}/c/{token}"

    def pixel(self, delivery_id: int) -> str:
        src = f"{self.base}/o/{make_open_token(self.keys, delivery_id)}.gif"
        return (
            f'<img src="{src}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )

    def apply(self, parts: EmailParts, delivery_id: int, skip: str) -> EmailParts:
        """The message's parts with its links tracked and the pixel added; `skip` is the
        unsubscribe link. The same link gets the same token in both parts, so it is one
        link to count, whichever part was clicked."""
        html, text = parts.html, parts.text
        if self.clicks:
            made: dict[str, str | None] = {}

            def tracked(url: str) -> str | None:
                if url not in made:
                    made[url] = self.link(url, delivery_id, skip)
                return made[url]

            def in_html(found: re.Match[str]) -> str:
                url = tracked(html_lib.unescape(found.group(2)))
                return found.group(0) if url is None else found.group(1) + url + found.group(3)

            def in_text(found: re.Match[str]) -> str:
                whole = found.group(0)
                url = whole.rstrip(_TRAILING)
                new = tracked(url)
                return whole if new is None else new + whole[len(url) :]

            html = _HREF.sub(in_html, html)
            text = _TEXT_URL.sub(in_text, text)
        if self.opens:
            pixel = self.pixel(delivery_id)
            ends = list(_BODY_END.finditer(html))
            if ends:
                at = ends[-1].start()
                html = html[:at] + pixel + html[at:]
            else:
                html += pixel
        return EmailParts(parts.subject, text, html)


def tracker_for(settings: Settings, campaign: CampaignFile) -> LinkTracker | None:
    """The first-party tracking a campaign's messages get with these settings: None when
    the provider tracks itself or the campaign tracks nothing."""
    if provider_tracks(settings.email_backend, settings.smtp_relay):
        return None
    tracking = campaign.tracking
    if not (tracking.clicks or tracking.first_party_opens):
        return None
    return LinkTracker(
        keys=SigningKeys.from_settings(settings),
        base=settings.public_url.rstrip("/"),
        site_domains=tuple(tracking.site_domains) or site_domains(settings),
        clicks=tracking.clicks,
        opens=tracking.first_party_opens,
    )

"""What must hold before email goes out for real. Every message carries an unsubscribe link
built on `ABM_PUBLIC_URL`; with a real backend (smtp, sendgrid) that link must reach our
receiver from anywhere, over HTTPS, or people cannot unsubscribe. The default points at this
machine, which is right for the local backends and wrong for real mail, so a real backend
refuses it before anything is claimed or sent."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from core.errors import ConfigError
from core.settings import Settings

# Backends that hand mail to someone else; outbox and console stay on this machine.
REAL_EMAIL_BACKENDS = frozenset({"smtp", "sendgrid"})
# Names that never resolve on the public internet: RFC 6761 special-use names, mDNS's
# .local (RFC 6762), .home.arpa (RFC 8375), ICANN's private-use .internal, and the
# never-delegated .lan and .localdomain that routers and distributions hand out.
PRIVATE_SUFFIXES = (
    "localhost",
    "local",
    "test",
    "example",
    "invalid",
    "internal",
    "home.arpa",
    "lan",
    "localdomain",
)


def public_url_problem(url: str) -> str | None:
    """Why recipients could not use unsubscribe links on `url`, or None when they can: it
    must be https:// and name a host reachable from the internet (not loopback, a private
    or link-local network, a single-label or special-use name)."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "is not https://: links with a personal unsubscribe token must be encrypted"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "names no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return f"points at {host}, a loopback, private or reserved address"
        return None
    labels = host.split(".")
    if len(labels) == 1:
        return f"points at {host}, a name only this network can resolve"
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return f"points at {host}, an IP address in an unusual notation"
    if any(host == suffix or host.endswith(f".{suffix}") for suffix in PRIVATE_SUFFIXES):
        return f"points at {host}, a name that never resolves on the internet"
    return None


def _shown(url: str) -> str:
    """The URL without any user:password part, fit for a message."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def public_url_refusal(settings: Settings) -> str | None:
    """The message a real backend refuses to send with, naming the setting and what to set;
    None when the backend is local or the URL is fine."""
    if settings.email_backend not in REAL_EMAIL_BACKENDS:
        return None
    problem = public_url_problem(settings.public_url)
    if problem is None:
        return None
    return (
        f"ABM_PUBLIC_URL={_shown(settings.public_url)} {problem}. "
        f"ABM_EMAIL_BACKEND={settings.email_backend} sends real email and every message's "
        "unsubscribe link points there, so nothing is sent: set ABM_PUBLIC_URL to the "
        "public https:// address where `abm webhooks serve` is reachable (for example "
        "https://abm.yourcompany.com), or use ABM_EMAIL_BACKEND=outbox to try things locally"
    )


def require_public_url(settings: Settings) -> None:
    """ConfigError unless real email would carry unsubscribe links recipients can use."""
    refusal = public_url_refusal(settings)
    if refusal:
        raise ConfigError(refusal)

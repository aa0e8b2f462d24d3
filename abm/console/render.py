"""One way to turn a template into a page: every page gets the signed-in user, the CSRF
token its forms carry and the navigation, so no page can forget them."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"

NAV = [
    ("accounts", "Accounts", "/console/accounts"),
    ("campaigns", "Campaigns", "/console/campaigns"),
    ("suppressions", "Suppressions", "/console/suppressions"),
    ("report", "Report", "/console/report"),
    ("audit", "Audit log", "/console/audit"),
]


def _when(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time for people: UTC, to the minute; blank for none."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:16].replace("T", " ")
    return f"{value:{fmt}}" if isinstance(value, datetime) else str(value)


def _number(value: Any) -> str:
    """1234567 -> 1,234,567; 0.5 -> 0.5; None -> blank."""
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def whole_number(text: str, digits: int = 18) -> int | None:
    """A number from a query string: ASCII digits only (str.isdigit takes "²", which int()
    refuses) and at most `digits` of them (a longer one fits no database integer, and the
    database would refuse it with a 500); None for anything else."""
    text = text.strip()
    if not text or len(text) > digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


_ACE_LABEL = re.compile(r"(?<![a-z0-9-])xn--[a-z0-9-]+", re.IGNORECASE)


def _domain(value: Any) -> str:
    """A stored (ASCII) domain, or text holding one like an email address, as people write
    it: each xn-- label decoded (xn--bergstrm-ab-xfb.se -> bergström-ab.se). On any label
    that does not decode, the stored text unchanged. For display only: URLs and form values
    keep the stored form."""
    if value is None:
        return ""
    text = str(value)
    try:
        # the standard library's idna codec, the one core.domains encodes them with
        return _ACE_LABEL.sub(lambda label: label.group(0).lower().encode().decode("idna"), text)
    except UnicodeError:
        return text


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(when=_when, number=_number, percent=_percent, domain=_domain)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page, with `user` (None before sign-in), `csrf_token` and `nav` in its context,
    and headers that keep it out of caches and frames."""
    state = request.state
    body = environment.get_template(template).render(
        {
            "request": request,
            "user": getattr(state, "user", None),
            "csrf_token": getattr(state, "csrf_token", ""),
            "nav": NAV,
            # a session of ours to end: not in proxy mode, where signing out is the proxy's
            "can_sign_out": getattr(state, "console_session", None) is not None,
            "proxied": getattr(state, "proxied", False),
            "active": None,
            "notice": None,
            "problem": None,
            **context,
        }
    )
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


# Pages hold personal data: never cached, never framed, no inline script, no referrer
# carrying a console URL to another site.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}

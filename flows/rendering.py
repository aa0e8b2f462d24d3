"""Step 3 of the pipeline, render: Jinja2 templates in a sandbox become real messages.

Pure functions: preview and the real send call the same `compose_email`, so what a marketer
previews is what leaves. Templates are resolved most-specific first:
`templates/<channel>/<template>/<tier>/<industry>/<role>/<file>`, where any level may be `_`
(any) and trailing `_` levels are left out, down to the template's default folder."""

from __future__ import annotations

import hashlib
import hmac
import html as html_lib
import re
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from abm.errors import ConfigError
from connectors.email.message import OutgoingEmail
from models.tables import utcnow

FUNCTION_LABELS = {
    "engineering": "engineering",
    "it": "IT",
    "security": "security",
    "data": "data and analytics",
    "product": "product",
    "finance": "finance",
    "procurement": "procurement",
    "legal": "legal and compliance",
    "operations": "operations",
    "marketing": "marketing",
    "sales": "sales",
    "hr": "people operations",
    "customer_success": "customer success",
    "executive": "running the business",
}
# LinkedIn's limits (connectors/README.md has the sources): a connection request note holds
# 300 characters (200 on free accounts), a message to a first-degree connection 8,000.
LINKEDIN_LIMITS = {"connect": 300, "message": 8000}
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x00]+")
_COMPANY_SUFFIX = re.compile(
    r"[,\s]+(inc\.?|incorporated|llc|l\.l\.c\.|ltd\.?|limited|gmbh|ag|sa|s\.a\.|sas|bv|b\.v\.|"
    r"nv|plc|corp\.?|corporation|co\.?|kg|oy|ab|as|srl|spa|pty|pte)$",
    re.IGNORECASE,
)
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>()\"']+")
_INLINER = css_inline.CSSInliner(keep_style_tags=False)


class TemplateMissing(ConfigError):
    """No template file matches, not even the template's default."""


@dataclass(frozen=True)
class Sender:
    name: str
    email: str
    company: str

    @classmethod
    def parse(cls, value: str) -> Sender:
        """`Demo Co <m@demo.example>` (a team) or `"Alex Rivera, Demo Co" <a@demo.example>`
        (a person, then their company after the comma) -> Sender."""
        display, email = parseaddr(value)
        if "@" not in email or any(c in value for c in "\r\n"):
            raise ConfigError(f"sender {value!r} is not an address like 'Name <a@b.com>'")
        name, _, company = display.partition(", ")
        name = name or email
        return cls(name=name, email=email, company=company or name)


def header_text(value: str) -> str:
    """Collapse anything that could start a new header line into one space."""
    return " ".join(_LINE_BREAKS.sub(" ", value).split())


def company(name: str | None) -> str:
    """`Acme Robotics GmbH` -> `Acme Robotics`: how people write a company in a sentence."""
    if not name:
        return ""
    short = _COMPANY_SUFFIX.sub("", name.strip())
    return short or name.strip()


def possessive(name: str | None) -> str:
    """`Acme` -> `Acme's`, `Siemens` -> `Siemens'`."""
    if not name:
        return ""
    return f"{name}'" if name.endswith(("s", "S")) else f"{name}'s"


FILTERS = {"company": company, "possessive": possessive}


@lru_cache(maxsize=8)
def template_environment(templates_dir: Path) -> SandboxedEnvironment:
    """A sandbox: contact data is data, a missing field is an error, HTML is escaped."""
    if not templates_dir.is_dir():
        raise ConfigError(f"templates folder {templates_dir} does not exist (ABM_TEMPLATES_DIR)")
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(FILTERS)
    return env


@lru_cache(maxsize=8)
def template_names(templates_dir: Path) -> frozenset[str]:
    """Every template file, listed once: resolution then costs a set lookup."""
    return frozenset(template_environment(templates_dir).list_templates())


def slug(value: str | None) -> str | None:
    """`Financial Services` -> `financial-services` (industry folder names)."""
    if not value:
        return None
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or None


@lru_cache(maxsize=4096)
def candidates(
    channel: str, template: str, tier: int | None, industry: str | None, role: str | None
) -> tuple[str, ...]:
    """Folders to look in, most specific first: tier, then industry, then role."""
    levels = [f"tier-{tier}" if tier else None, slug(industry), role]
    options = [(value, None) if value else (None,) for value in levels]
    combos = sorted(
        set(product(*options)),
        key=lambda combo: (-sum(v is not None for v in combo), [v is None for v in combo]),
    )
    folders: list[str] = []
    for combo in combos:
        parts = [v or "_" for v in combo]
        while parts and parts[-1] == "_":
            parts.pop()
        folders.append("/".join([channel, template, *parts]))
    return tuple(folders)


@lru_cache(maxsize=16384)
def resolve(
    names: frozenset[str],
    channel: str,
    template: str,
    filename: str,
    *,
    tier: int | None = None,
    industry: str | None = None,
    role: str | None = None,
    required: bool = True,
) -> str | None:
    """The most specific template file for this audience, or the template's default."""
    for folder in candidates(channel, template, tier, industry, role):
        name = f"{folder}/{filename}"
        if name in names:
            return name
    if required:
        raise TemplateMissing(f"no template {channel}/{template}/{filename} (templates folder)")
    return None


def add_utm(url: str, params: dict[str, str], domains: tuple[str, ...] = ()) -> str:
    """The URL with UTM parameters it does not already carry, for links to `domains`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if domains and not any(host == d or host.endswith("." + d) for d in domains):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    query += [(key, value) for key, value in params.items() if key not in present and value]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _utm_html(html: str, params: dict[str, str], domains: tuple[str, ...], skip: str) -> str:
    def replace(found: re.Match[str]) -> str:
        url = html_lib.unescape(found.group(2))
        if url == skip:
            return found.group(0)
        return found.group(1) + html_lib.escape(add_utm(url, params, domains)) + found.group(3)

    return _HREF.sub(replace, html)


def _utm_text(text: str, params: dict[str, str], domains: tuple[str, ...], skip: str) -> str:
    return _TEXT_URL.sub(
        lambda m: m.group(0) if m.group(0) == skip else add_utm(m.group(0), params, domains), text
    )


_INVISIBLE = re.compile(r"<(head|style|script|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<a\b[^>]*?\bhref=\"([^\"]*)\"[^>]*>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ITEM = re.compile(r"<li\b[^>]*>", re.IGNORECASE)
_BLOCK = re.compile(r"</?(p|div|h[1-6]|tr|table|ul|ol|hr|blockquote)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _link_text(found: re.Match[str]) -> str:
    href, text = html_lib.unescape(found.group(1)), _TAG.sub("", found.group(2)).strip()
    return text if not href or href == html_lib.unescape(text) else f"{text} ({href})"


def html_to_text(html: str) -> str:
    """The plain-text part when a template has none: readable, links spelled out.

    Regular expressions over our own templates' HTML, not a general parser: ten times
    faster than `html.parser`, and the input is ours."""
    text = _SPACE.sub(" ", _INVISIBLE.sub("", html))
    text = _LINK.sub(_link_text, text)
    text = _BLOCK.sub("\n\n", _ITEM.sub("\n- ", _BREAK.sub("\n", text)))
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def message_id(delivery_id: int, ledger_key: str, sender_domain: str, secret: str) -> str:
    """A Message-ID stable for one ledger row: resends of the row carry the same id."""
    tag = hmac.new(secret.encode(), ledger_key.encode(), hashlib.sha256).hexdigest()[:12]
    return f"<abm.{delivery_id}.{tag}@{sender_domain}>"


def choose_variant(weights: list[tuple[str, int]], key: str) -> str:
    """A/B arm for one person, from a stable hash: the same on every run and machine."""
    total = sum(weight for _, weight in weights)
    point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % total
    for variant, weight in weights:
        if point < weight:
            return variant
        point -= weight
    raise AssertionError("weights must be positive")


@dataclass(frozen=True)
class EmailParts:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Audience:
    """What template resolution looks at."""

    tier: int | None
    industry: str | None
    role: str | None


def render_email_parts(
    env: SandboxedEnvironment,
    names: frozenset[str],
    template: str,
    audience: Audience,
    context: dict[str, Any],
    utm: dict[str, str] | None = None,
    utm_domains: tuple[str, ...] = (),
) -> EmailParts:
    """Subject, HTML (CSS inlined, UTM added) and text (written, or derived from the HTML)."""
    where = {"tier": audience.tier, "industry": audience.industry, "role": audience.role}
    subject_name = resolve(names, "email", template, "subject.j2", **where)
    html_name = resolve(names, "email", template, "body.html.j2", **where)
    text_name = resolve(names, "email", template, "body.txt.j2", required=False, **where)
    subject = header_text(env.get_template(subject_name).render(context))
    html = _INLINER.inline(env.get_template(html_name).render(context))
    unsubscribe = context["footer"]["unsubscribe_url"]
    if utm:
        html = _utm_html(html, utm, utm_domains, unsubscribe)
    if text_name:
        text = env.get_template(text_name).render(context)
        if utm:
            text = _utm_text(text, utm, utm_domains, unsubscribe)
    else:
        text = html_to_text(html)
    return EmailParts(subject=subject, text=text, html=html)


def render_linkedin_text(
    env: SandboxedEnvironment,
    names: frozenset[str],
    template: str,
    action: str,
    audience: Audience,
    context: dict[str, Any],
) -> str:
    """The note or message a rep sends; too long for LinkedIn is an error, never cut."""
    where = {"tier": audience.tier, "industry": audience.industry, "role": audience.role}
    name = resolve(names, "linkedin_task", template, f"{action}.j2", **where)
    text = env.get_template(name).render(context).strip()
    limit = LINKEDIN_LIMITS[action]
    if len(text) > limit:
        raise ValueError(
            f"{name}: {len(text)} characters; LinkedIn allows {limit} in a {action} text"
        )
    return text


def _address(name: str, email: str) -> str:
    """`Name <a@b>` with the name RFC 2047-encoded when it is not plain ASCII."""
    return formataddr((header_text(name), email), charset="utf-8")


def _subject(text: str) -> str:
    return text if text.isascii() else Header(text, "utf-8").encode()


def build_message(
    parts: EmailParts,
    *,
    sender: Sender,
    to_email: str,
    to_name: str,
    message_id: str,
    unsubscribe_url: str,
    campaign_key: str,
) -> OutgoingEmail:
    """An RFC 5322 message with text and HTML parts and RFC 8058 one-click unsubscribe.

    Every header value passes through `header_text`, so no line break from data or
    configuration can start a header of its own."""
    # A boundary derived from the Message-ID: stable output that no body can contain.
    boundary = "=_abm_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    headers = [
        ("From", _address(sender.name, sender.email)),
        ("To", _address(to_name, to_email)),
        ("Subject", _subject(header_text(parts.subject))),
        ("Date", format_datetime(utcnow())),
        ("Message-ID", header_text(message_id)),
        ("List-Unsubscribe", f"<{header_text(unsubscribe_url)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("X-ABM-Campaign", header_text(campaign_key)),
    ]
    return OutgoingEmail(headers, parts.text, parts.html, boundary)


def render_context(
    contact: dict[str, Any],
    account: dict[str, Any],
    sender: Sender,
    links: dict[str, str],
    footer: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a template can see; only plain data, never ORM objects."""
    contact = {**contact, "function_label": FUNCTION_LABELS.get(contact.get("function") or "")}
    return {
        "contact": contact,
        "account": account,
        "sender": {"name": sender.name, "email": sender.email, "company": sender.company},
        "links": links,
        "footer": footer,
        **(extra or {}),
    }

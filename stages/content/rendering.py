"""Step 3 of the pipeline, render: Jinja2 templates in a sandbox become real messages.

Pure functions: preview and the real send call the same `compose_email`, so what a marketer
previews is what leaves. Templates are resolved most-specific first:
`templates/<channel>/<template>/<tier>/<industry>/<role>/<file>`, where any level may be `_`
(any) and trailing `_` levels are left out, down to the template's default folder."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from connectors.email.message import OutgoingEmail, encoded_words
from core.errors import ConfigError
from models.tables import utcnow
from stages.content.email_html import html_to_text, inline_css, tag_html_links, tag_text_links
from stages.content.prepared_templates import (
    UTM_KEY,
    LinkTags,
    PreparedEmail,
    prepared_email,
    render_quick,
    tracked,
)

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
        if "@" not in email or not email.isascii() or any(c in value for c in "\r\n"):
            raise ConfigError(f"sender {value!r} is not an address like 'Name <a@b.com>'")
        name, _, company = display.partition(", ")
        name = name or email
        return cls(name=name, email=email, company=company or name)


def header_text(value: str) -> str:
    """Collapse anything that could start a new header line into one space."""
    if value.isprintable():  # no line break of any kind: only spaces to tidy
        return " ".join(value.split())
    return " ".join(_LINE_BREAKS.sub(" ", value).split())


def company(name: str | None) -> str:
    """`Acme Robotics GmbH` -> `Acme Robotics`: how people write a company in a sentence."""
    if not name:
        return ""
    # a campaign has few account names, each in many messages: each is worked out once
    return _company(name) if type(name) is str else _company.__wrapped__(name)


@lru_cache(maxsize=4096)
def _company(name: Any) -> str:
    short = _COMPANY_SUFFIX.sub("", name.strip())
    return short or name.strip()


def possessive(name: str | None) -> str:
    """`Acme` -> `Acme's`, `Siemens` -> `Siemens'`."""
    if not name:
        return ""
    return f"{name}'" if name.endswith(("s", "S")) else f"{name}'s"


FILTERS = {"company": company, "possessive": possessive, "tracked": tracked}


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, reading `contact.first_name` from a plain dict without first
    raising and catching an AttributeError (a third of the cost of each lookup). Same
    answer as the sandbox gives: names of dict methods still go the sandbox's way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@lru_cache(maxsize=8)
def template_environment(templates_dir: Path) -> SandboxedEnvironment:
    """A sandbox: contact data is data, a missing field is an error, HTML is escaped."""
    if not templates_dir.is_dir():
        raise ConfigError(f"templates folder {templates_dir} does not exist (ABM_TEMPLATES_DIR)")
    env = _Sandbox(
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


@lru_cache(maxsize=8)
def _keyed_hmac(secret: str) -> hmac.HMAC:
    """HMAC-SHA256 with the key set up once: each message copies it (cheaper than a new
    HMAC, whose key setup and digest lookup cost more than the hashing)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def message_id(delivery_id: int, ledger_key: str, sender_domain: str, secret: str) -> str:
    """A Message-ID stable for one ledger row: resends of the row carry the same id."""
    signer = _keyed_hmac(secret).copy()
    signer.update(ledger_key.encode())
    return f"<abm.{delivery_id}.{signer.hexdigest()[:12]}@{sender_domain}>"


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


class TemplateKey(NamedTuple):
    """What template resolution keys on: an account tier, an industry and a committee role.
    (A named tuple: one is made per message and looked up in a cache, and tuples hash and
    compare cheaper than a dataclass.)"""

    tier: int | None
    industry: str | None
    role: str | None


@dataclass(frozen=True)
class EmailTemplates:
    """The templates one audience gets for one email template name."""

    subject: Template
    html_name: str
    text: Template | None
    prepared: PreparedEmail | None


@lru_cache(maxsize=4096)
def email_templates(
    env: SandboxedEnvironment, names: frozenset[str], template: str, audience: TemplateKey
) -> EmailTemplates:
    """Resolved and loaded once per audience, not once per message."""
    where = {"tier": audience.tier, "industry": audience.industry, "role": audience.role}
    html_name = resolve(names, "email", template, "body.html.j2", **where)
    text_name = resolve(names, "email", template, "body.txt.j2", required=False, **where)
    subject_name = resolve(names, "email", template, "subject.j2", **where)
    return EmailTemplates(
        subject=env.get_template(subject_name),
        html_name=html_name,
        text=env.get_template(text_name) if text_name else None,
        prepared=prepared_email(env, html_name, None if text_name else subject_name),
    )


def render_email_parts(
    env: SandboxedEnvironment,
    names: frozenset[str],
    template: str,
    audience: TemplateKey,
    context: dict[str, Any],
    utm: dict[str, str] | None = None,
    utm_domains: tuple[str, ...] = (),
) -> EmailParts:
    """Subject, HTML (CSS inlined, UTM added) and text (written, or derived from the HTML).

    The prepared form of the templates is used when there is one. Should it fail, the
    files people wrote are rendered again, so an error names their file and line."""
    found = email_templates(env, names, template, audience)
    if found.prepared is not None:
        try:
            return _render_prepared(found, context, utm, utm_domains)
        except Exception:  # the same error comes again, with file and line, from below
            pass
    return render_originals(env, found, context, utm, utm_domains)


def render_originals(
    env: SandboxedEnvironment,
    found: EmailTemplates,
    context: dict[str, Any],
    utm: dict[str, str] | None = None,
    utm_domains: tuple[str, ...] = (),
) -> EmailParts:
    """The per-message way: render the files as written, then inline CSS, tag links and
    derive the text from the result."""
    html = inline_css(env.get_template(found.html_name).render(context))
    unsubscribe = context["footer"]["unsubscribe_url"]
    if utm:
        html = tag_html_links(html, utm, utm_domains, unsubscribe)
    if found.text is None:
        plain = html_to_text(html)
    else:
        plain = _tagged_text(found.text.render(context), utm, utm_domains, unsubscribe)
    return EmailParts(header_text(found.subject.render(context)), plain, html)


def _tagged_text(
    text: str, utm: dict[str, str] | None, domains: tuple[str, ...], unsubscribe: str
) -> str:
    return tag_text_links(text, utm, domains, unsubscribe) if utm else text


def _render_prepared(
    found: EmailTemplates,
    context: dict[str, Any],
    utm: dict[str, str] | None,
    utm_domains: tuple[str, ...],
) -> EmailParts:
    assert found.prepared is not None
    unsubscribe = context["footer"]["unsubscribe_url"]
    tags = LinkTags(tuple(utm.items()) if utm else (), utm_domains, unsubscribe)
    subject = None
    if found.text is None:
        subject, html, plain = found.prepared.render_parts(context, tags)
    else:
        html = found.prepared.render_html({**context, UTM_KEY: tags})
        text = render_quick(found.text, context)
        plain = _tagged_text(text, utm, utm_domains, unsubscribe)
    if subject is None:
        subject = render_quick(found.subject, context)
    return EmailParts(header_text(subject), plain, html)


def render_linkedin_text(
    env: SandboxedEnvironment,
    names: frozenset[str],
    template: str,
    action: str,
    audience: TemplateKey,
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


_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]*")


def _address(name: str, email: str) -> str:
    """`Name <a@b>` with the name quoted or RFC 2047-encoded when it needs to be."""
    name = header_text(name)
    if not name:
        return formataddr(("", email))
    if "=?" not in name:  # else it could be read as an encoded word: encode it ourselves
        if _PLAIN_NAME.fullmatch(name):
            return f"{name} <{email}>"
        if name.isascii():
            return formataddr((name, email))
    # one encoded word, as formataddr writes it: parsers keep the space between two
    return f"=?utf-8?b?{base64.b64encode(name.encode()).decode('ascii')}?= <{email}>"


@lru_cache(maxsize=64)
def _sender_address(sender: Sender) -> str:
    return _address(sender.name, sender.email)


@lru_cache(maxsize=4)
def _date_header(second: int) -> str:
    """The Date header, written once a second rather than once a message."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def build_message(
    parts: EmailParts,
    *,
    sender: Sender,
    to_email: str,
    to_name: str,
    message_id: str,
    unsubscribe_url: str,
    campaign_key: str,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> OutgoingEmail:
    """An RFC 5322 message with text and HTML parts and RFC 8058 one-click unsubscribe.
    `extra_headers`: attribution (step, variant, what may be tracked), no personal data.

    Every header value passes through `header_text`, so no line break from data or
    configuration can start a header of its own."""
    # A boundary derived from the Message-ID: stable output that no body can contain.
    boundary = "=_abm_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    headers = [
        ("From", _sender_address(sender)),
        ("To", _address(to_name, to_email)),
        ("Subject", encoded_words(header_text(parts.subject))),
        ("Date", _date_header(int(utcnow().timestamp()))),
        ("Message-ID", header_text(message_id)),
        ("List-Unsubscribe", f"<{header_text(unsubscribe_url)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("X-ABM-Campaign", header_text(campaign_key)),
        *((name, header_text(value)) for name, value in extra_headers),
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

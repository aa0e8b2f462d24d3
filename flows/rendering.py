"""Step 3 of the pipeline, render: Jinja2 templates in a sandbox become real email messages.
Pure functions: the same message comes out whether it is previewed or sent."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from abm.errors import ConfigError
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
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x00]+")


@dataclass(frozen=True)
class Sender:
    name: str
    email: str
    company: str

    @classmethod
    def parse(cls, value: str) -> Sender:
        """`Demo Co <marketing@demo.example>` -> Sender; the company is the display name."""
        name, email = parseaddr(value)
        if "@" not in email:
            raise ConfigError(f"ABM_SENDER: {value!r} is not an address like 'Name <a@b.com>'")
        return cls(name=name or email, email=email, company=name or email.split("@")[1])


def header_text(value: str) -> str:
    """Collapse anything that could start a new header line into one space."""
    return " ".join(_LINE_BREAKS.sub(" ", value).split())


@lru_cache(maxsize=8)
def template_environment(templates_dir: Path) -> SandboxedEnvironment:
    """A sandbox: contact data is data, a missing field is an error, HTML is escaped."""
    if not templates_dir.is_dir():
        raise ConfigError(f"templates folder {templates_dir} does not exist (ABM_TEMPLATES_DIR)")
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        keep_trailing_newline=True,
        auto_reload=False,
    )


def message_id(delivery_id: int, ledger_key: str, sender_domain: str, secret: str) -> str:
    """A Message-ID stable for one ledger row: resends of the row carry the same id."""
    tag = hmac.new(secret.encode(), ledger_key.encode(), hashlib.sha256).hexdigest()[:12]
    return f"<abm.{delivery_id}.{tag}@{sender_domain}>"


@dataclass(frozen=True)
class EmailParts:
    subject: str
    text: str
    html: str


def render_parts(
    env: SandboxedEnvironment, channel: str, template: str, context: dict[str, Any]
) -> EmailParts:
    """Subject, text and HTML of one message from `templates/<channel>/<template>/`."""
    base = f"{channel}/{template}/default"
    return EmailParts(
        subject=header_text(env.get_template(f"{base}.subject.j2").render(context)),
        text=env.get_template(f"{base}.txt.j2").render(context),
        html=env.get_template(f"{base}.html.j2").render(context),
    )


def build_message(
    parts: EmailParts,
    *,
    sender: Sender,
    to_email: str,
    to_name: str,
    message_id: str,
    unsubscribe_url: str,
    campaign_key: str,
) -> EmailMessage:
    """An RFC 5322 message with text and HTML parts and RFC 8058 one-click unsubscribe."""
    message = EmailMessage()
    message["From"] = Address(display_name=header_text(sender.name), addr_spec=sender.email)
    message["To"] = Address(display_name=header_text(to_name), addr_spec=to_email)
    message["Subject"] = parts.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["X-ABM-Campaign"] = campaign_key
    message.set_content(parts.text)
    message.add_alternative(parts.html, subtype="html")
    return message


def render_context(
    contact: dict[str, Any],
    account: dict[str, Any],
    sender: Sender,
    links: dict[str, str],
    footer: dict[str, str],
) -> dict[str, Any]:
    """What a template can see; only plain data, never ORM objects."""
    contact = {**contact, "function_label": FUNCTION_LABELS.get(contact.get("function") or "")}
    return {
        "contact": contact,
        "account": account,
        "sender": {"name": sender.name, "email": sender.email, "company": sender.company},
        "links": links,
        "footer": footer,
    }

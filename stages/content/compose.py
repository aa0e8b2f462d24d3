"""From a ledger row to the exact message that leaves: one composer serves the real send,
`abm campaign preview` and `abm campaign validate`, so they cannot drift apart."""

from __future__ import annotations

from email.message import Message
from email.utils import formataddr, parseaddr
from typing import Any

from connectors.email.attribution import attribution_headers
from core.campaign_file import CampaignFile, Step
from core.settings import Settings
from core.unsubscribe import make_token
from stages.content.click_links import tracker_for
from stages.content.rendering import (
    Sender,
    TemplateKey,
    build_message,
    message_id,
    render_context,
    render_email_parts,
    render_linkedin_text,
    template_environment,
    template_names,
)

CONTACT_FIELDS = ("email", "first_name", "last_name", "title", "seniority", "function", "role")

# Why an email of a `send_as: owner` campaign went from the campaign's sender instead: the
# run summary counts the accounts by these words.
NO_OWNER = "no CRM owner"
NO_OWNER_EMAIL = "CRM owner without an email address"
OWNER_ADDRESS_UNUSABLE = "owner's address unusable"
OWNER_ELSEWHERE = "owner at another domain"
OWNER_LEFT = "CRM owner no longer active"


def account_owner(row: dict[str, Any]) -> dict[str, str] | None:
    """The account's owner as templates see it (`account.owner.name`, `.email`): the CRM's
    (`abm crm pull`) when it has one, else the `owner` column of accounts.csv (a name, or
    `Name <address>`, or an address). None without either, and a key is left out rather
    than set to None: a template then fails or uses its `default(...)`, never says "None"."""
    name, email = row.get("owner_name"), row.get("owner_email")
    if not (name or email):
        raw = str((row.get("account_attributes") or {}).get("owner") or "").strip()
        if not raw:
            return None
        display, address = parseaddr(raw)
        name, email = (display or None, address) if "@" in address else (raw, None)
    owner = {"name": name or email}
    if email:
        owner["email"] = email
    return owner


def owner_sender(row: dict[str, Any], sender: Sender) -> tuple[Sender, str | None]:
    """Who an email to this account goes from when the campaign sends as the owner: the
    CRM owner, only when their address is at the sender's own domain (so SPF, DKIM and
    DMARC still align, and the relay or provider still takes it); otherwise the campaign's
    sender, with the reason (one of the words above)."""
    email = (row.get("owner_email") or "").strip()
    if not email:
        return sender, NO_OWNER_EMAIL if row.get("owner_name") else NO_OWNER
    if row.get("owner_active") is False:  # a rep who left: their mailbox may be gone
        return sender, OWNER_LEFT
    parsed = parseaddr(email)[1]
    if parsed != email or not email.isascii() or email.count("@") != 1 or " " in email:
        return sender, OWNER_ADDRESS_UNUSABLE
    if email.rpartition("@")[2].lower() != sender.email.rpartition("@")[2].lower():
        return sender, OWNER_ELSEWHERE
    name = " ".join(str(row.get("owner_name") or "").split()) or email
    return Sender(name=name, email=email, company=sender.company), None


def template_for(step: Step, variant: str | None) -> str:
    """The template of the variant a person was given, or the step's own."""
    for option in step.variants:
        if option.id == variant:
            return option.template
    if step.template is None:
        raise ValueError(f"step {step.id!r}: variant {variant!r} is not in the campaign file")
    return step.template


class Composer:
    """Everything that is the same for every message of one campaign step, built once."""

    def __init__(
        self,
        settings: Settings,
        campaign_key: str,
        campaign_id: int,
        campaign: CampaignFile,
        step: Step,
    ) -> None:
        self.settings = settings
        self.campaign_key = campaign_key
        self.campaign_id = campaign_id
        self.campaign = campaign
        self.step = step
        self.env = template_environment(settings.templates_dir)
        self.names = template_names(settings.templates_dir)
        self.sender = Sender.parse(campaign.sender or settings.sender)
        self.secret = settings.signing_key()
        self.links = {name: str(url) for name, url in campaign.links.items()}
        self.utm = {
            "utm_source": campaign.utm.source,
            "utm_medium": campaign.utm.medium,
            "utm_campaign": campaign.utm.campaign or campaign_key,
        }
        self.utm_domains = tuple(d.lower() for d in campaign.utm.domains)
        self._utm_by_variant: dict[str | None, dict[str, str]] = {}
        # links through our own redirect, an open pixel: where no provider tracks
        self.tracker = tracker_for(settings, campaign) if step.channel == "email" else None

    def _utm(self, variant: str | None) -> dict[str, str]:
        """The UTM parameters of one variant's messages, made once per variant (shared
        by its messages: not to be changed)."""
        if variant not in self._utm_by_variant:
            content = f"{self.step.id}-{variant}" if variant else self.step.id
            self._utm_by_variant[variant] = {**self.utm, "utm_content": content}
        return self._utm_by_variant[variant]

    def message_id(self, delivery_id: int, contact_id: int) -> str:
        ledger_key = f"{self.campaign_key}:{self.step.id}:{contact_id}"
        sender_domain = self.sender.email.split("@")[1]
        return message_id(delivery_id, ledger_key, sender_domain, self.secret)

    def unsubscribe_url(self, contact_id: int) -> str:
        token = make_token(contact_id, self.campaign_id, self.secret)
        return f"{self.settings.public_url.rstrip('/')}/unsubscribe/{token}"

    def sender_for(self, row: dict[str, Any]) -> tuple[Sender, str | None]:
        """The From of this row's email and, for a `send_as: owner` campaign that could not
        send as the owner, why (None otherwise). Worked out from the row as loaded at send
        time: an owner changed by `abm crm pull` since planning is the one used."""
        if self.campaign.send_as != "owner":
            return self.sender, None
        return owner_sender(row, self.sender)

    def _context(
        self, row: dict[str, Any], unsubscribe_url: str, sender: Sender | None = None
    ) -> dict[str, Any]:
        account = {
            "name": row["account_name"] or row["domain"],
            "domain": row["domain"],
            "industry": row["industry"],
            "tier": row["tier"],
            "country": row["country"],
            "employees": row["employees"],
            # the extra columns of accounts.csv (`owner`, `segment`...), by column name
            "attributes": row.get("account_attributes") or {},
            "owner": account_owner(row),
        }
        footer = {
            "postal_address": self.settings.postal_address,
            "unsubscribe_url": unsubscribe_url,
        }
        extra = {
            "campaign": {"key": self.campaign_key, "name": self.campaign.name},
            "step": {"id": self.step.id},
            "variant": row.get("variant"),
        }
        contact = {key: row[key] for key in CONTACT_FIELDS}
        return render_context(contact, account, sender or self.sender, self.links, footer, extra)

    @staticmethod
    def template_key(row: dict[str, Any]) -> TemplateKey:
        return TemplateKey(tier=row["tier"], industry=row["industry"], role=row["role"])

    def email(self, row: dict[str, Any]) -> Message:
        """The message for one ledger row (`delivery_id`, contact and account fields)."""
        unsubscribe_url = self.unsubscribe_url(row["contact_id"])
        variant = row.get("variant")
        sender, _ = self.sender_for(row)
        parts = render_email_parts(
            self.env,
            self.names,
            template_for(self.step, variant),
            self.template_key(row),
            self._context(row, unsubscribe_url, sender),
            self._utm(variant),
            self.utm_domains,
        )
        if self.tracker is not None:  # after the UTM parameters: they travel in the token
            parts = self.tracker.apply(parts, row.get("delivery_id") or 0, unsubscribe_url)
        name = " ".join(filter(None, (row["first_name"], row["last_name"])))
        headers = attribution_headers(self.step.id, variant, self.campaign.tracking)
        if sender is not self.sender:
            # RFC 5322 3.6.2: the campaign's sender sends on the owner's behalf; SMTP takes
            # it as the envelope sender, so bounces reach the monitored mailbox
            sender_header = formataddr((self.sender.name, self.sender.email))
            headers = [*headers, ("Reply-To", self._reply_to(sender)), ("Sender", sender_header)]
        return build_message(
            parts,
            sender=sender,
            to_email=row["email"],
            to_name=name,
            message_id=row.get("message_id")
            or self.message_id(row["delivery_id"], row["contact_id"]),
            unsubscribe_url=unsubscribe_url,
            campaign_key=self.campaign_key,
            extra_headers=headers,
        )

    def _reply_to(self, owner: Sender) -> str:
        """Replies go to the owner; and to the campaign's sender too when a mailbox is
        monitored (ABM_IMAP_URL), so that a reply still stops the sequence."""
        addresses = [(owner.name, owner.email)]
        if self.settings.imap_url:
            addresses.append((self.sender.name, self.sender.email))
        return ", ".join(formataddr(address) for address in addresses)

    def linkedin_text(self, row: dict[str, Any]) -> str:
        """The connection note or message a rep sends to this person."""
        assert self.step.action is not None
        return render_linkedin_text(
            self.env,
            self.names,
            template_for(self.step, row.get("variant")),
            self.step.action,
            self.template_key(row),
            self._context(row, self.unsubscribe_url(row["contact_id"])),
        )

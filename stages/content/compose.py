"""From a ledger row to the exact message that leaves: one composer serves the real send,
`abm campaign preview` and `abm campaign validate`, so they cannot drift apart."""

from __future__ import annotations

from email.message import Message
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

    def _context(self, row: dict[str, Any], unsubscribe_url: str) -> dict[str, Any]:
        account = {
            "name": row["account_name"] or row["domain"],
            "domain": row["domain"],
            "industry": row["industry"],
            "tier": row["tier"],
            "country": row["country"],
            "employees": row["employees"],
            # the extra columns of accounts.csv (`owner`, `segment`...), by column name
            "attributes": row.get("account_attributes") or {},
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
        return render_context(contact, account, self.sender, self.links, footer, extra)

    @staticmethod
    def template_key(row: dict[str, Any]) -> TemplateKey:
        return TemplateKey(tier=row["tier"], industry=row["industry"], role=row["role"])

    def email(self, row: dict[str, Any]) -> Message:
        """The message for one ledger row (`delivery_id`, contact and account fields)."""
        unsubscribe_url = self.unsubscribe_url(row["contact_id"])
        variant = row.get("variant")
        parts = render_email_parts(
            self.env,
            self.names,
            template_for(self.step, variant),
            self.template_key(row),
            self._context(row, unsubscribe_url),
            self._utm(variant),
            self.utm_domains,
        )
        if self.tracker is not None:  # after the UTM parameters: they travel in the token
            parts = self.tracker.apply(parts, row.get("delivery_id") or 0, unsubscribe_url)
        name = " ".join(filter(None, (row["first_name"], row["last_name"])))
        return build_message(
            parts,
            sender=self.sender,
            to_email=row["email"],
            to_name=name,
            message_id=row.get("message_id")
            or self.message_id(row["delivery_id"], row["contact_id"]),
            unsubscribe_url=unsubscribe_url,
            campaign_key=self.campaign_key,
            extra_headers=attribution_headers(self.step.id, variant, self.campaign.tracking),
        )

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

"""Campaign attribution that travels with a message, so that a provider's events name the
message, step and variant they are about and not only the person.

The composer marks each message with our own headers (`X-ABM-Campaign`, `X-ABM-Step`,
`X-ABM-Variant`, and `X-ABM-Tracking` for what the campaign lets the provider track); the
backends read them back: SendGrid's API as `custom_args` and `tracking_settings`, an SMTP
relay as the tag header ABM_SMTP_RELAY names (SendGrid `X-SMTPAPI`, Mailgun
`X-Mailgun-Variables`, Amazon SES `X-SES-MESSAGE-TAGS`). Every value is an identifier we
made (campaign key, step and variant ids, our Message-ID): never a name or an address, as
recipients can read these headers and providers keep their tags as non-personal data."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.message import Message

from core.campaign_file import Tracking

CAMPAIGN_HEADER = "X-ABM-Campaign"
STEP_HEADER = "X-ABM-Step"
VARIANT_HEADER = "X-ABM-Variant"
MESSAGE_ID_HEADER = "X-ABM-Message-Id"
TRACKING_HEADER = "X-ABM-Tracking"
# the key our webhook parsers match events on (sendgrid_events, mailgun_events)
MESSAGE_ID_ARG = "abm_message_id"
SES_TAG_LIMIT = 256  # characters in a tag name or value (SES MessageTag)
_SES_LITERAL = re.compile(r"[A-Za-z0-9-]")
_SES_ESCAPES = re.compile(r"(?:_[0-9A-F]{2})+")
_TRACKING = re.compile(r"clicks=([01]); opens=([01])")


@dataclass(frozen=True)
class Attribution:
    """Which message, campaign, step and variant a message is."""

    message_id: str
    campaign: str | None = None
    step: str | None = None
    variant: str | None = None

    @classmethod
    def of(cls, message: Message, message_id: str) -> Attribution:
        """What the message's own headers say, under the Message-ID the ledger knows."""
        return cls(
            message_id,
            _header(message, CAMPAIGN_HEADER),
            _header(message, STEP_HEADER),
            _header(message, VARIANT_HEADER),
        )

    def args(self) -> dict[str, str]:
        """As provider arguments (SendGrid custom_args and unique_args, Mailgun variables)."""
        found = {
            MESSAGE_ID_ARG: self.message_id,
            "abm_campaign": self.campaign,
            "abm_step": self.step,
            "abm_variant": self.variant,
        }
        return {key: value for key, value in found.items() if value}


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def attribution_headers(
    step: str, variant: str | None, tracking: Tracking
) -> list[tuple[str, str]]:
    """The headers a composer adds beside `X-ABM-Campaign`: step, variant and tracking."""
    headers = [(STEP_HEADER, step)]
    if variant:
        headers.append((VARIANT_HEADER, variant))
    headers.append((TRACKING_HEADER, f"clicks={int(tracking.clicks)}; opens={int(tracking.opens)}"))
    return headers


def read_tracking(message: Message) -> Tracking:
    """What the message's campaign lets the provider track; a campaign file's defaults when
    the message does not say (so a request never falls back on the account's settings)."""
    found = _TRACKING.fullmatch(_header(message, TRACKING_HEADER) or "")
    if found is None:
        return Tracking()
    return Tracking(clicks=found[1] == "1", opens=found[2] == "1")


def provider_tracks(backend: str, relay: str) -> bool:
    """Whether the provider counts clicks and opens itself, as the campaign's `tracking`
    asks it to: SendGrid (its API's `tracking_settings`), or an SMTP relay whose tag header
    carries tracking switches (SendGrid's `X-SMTPAPI` filters, Mailgun's tracking headers).
    Everywhere else (outbox, console, a plain SMTP server, SES) no one would count them, so
    the composer rewrites the links to our own redirect (`stages.content.click_links`)."""
    return backend == "sendgrid" or (backend == "smtp" and relay in ("sendgrid", "mailgun"))


def relay_headers(
    relay: str, attribution: Attribution, tracking: Tracking
) -> list[tuple[str, str]]:
    """The tag headers of the SMTP relay `relay` (ABM_SMTP_RELAY) for one message."""
    args = attribution.args()
    if relay == "sendgrid":
        # SMTP API: unique_args come back as fields of every event; filters set per message
        # (all lowercase); subscriptiontrack would add SendGrid's own unsubscribe link.
        smtpapi: dict[str, object] = {"unique_args": args}
        if attribution.campaign:
            smtpapi["category"] = [attribution.campaign]
        smtpapi["filters"] = {
            "clicktrack": {"settings": {"enable": int(tracking.clicks), "enable_text": False}},
            "opentrack": {"settings": {"enable": int(tracking.opens)}},
            "subscriptiontrack": {"settings": {"enable": 0}},
        }
        return [("X-SMTPAPI", json.dumps(smtpapi))]
    if relay == "mailgun":
        # variables come back as `user-variables` of every event
        return [
            ("X-Mailgun-Variables", json.dumps(args)),
            ("X-Mailgun-Track-Clicks", "htmlonly" if tracking.clicks else "no"),
            ("X-Mailgun-Track-Opens", "yes" if tracking.opens else "no"),
        ]
    if relay == "ses":
        # message tags reach SES's event destinations (configuration set) as mail.tags
        pairs = ((name, ses_tag_value(value)) for name, value in args.items())
        tags = ", ".join(f"{name}={value}" for name, value in pairs if value)
        return [("X-SES-MESSAGE-TAGS", tags)]
    return []


def ses_tag_value(text: str) -> str | None:
    """`text` in the characters an SES tag value may hold (ASCII letters, digits, `_`, `-`):
    any other character as `_XX` per UTF-8 byte, `_` itself included, so `ses_tag_text`
    gives the text back. None when that exceeds 256 characters: a cut value would name
    another message."""
    value = "".join(
        char if _SES_LITERAL.fullmatch(char) else "".join(f"_{b:02X}" for b in char.encode())
        for char in text
    )
    return value if len(value) <= SES_TAG_LIMIT else None


def ses_tag_text(value: str) -> str:
    """The text an `ses_tag_value` stands for (to read an SES event's `mail.tags` back)."""
    return _SES_ESCAPES.sub(
        lambda found: bytes.fromhex(found[0].replace("_", "")).decode("utf-8"), value
    )

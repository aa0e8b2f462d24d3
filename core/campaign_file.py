"""Campaign files (`campaigns/*.yaml`): a campaign is code, reviewed, validated, then run.

The schema rejects unknown keys and wrong types; `core.yamlfile` turns every problem into
`file:line: field: message`."""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from core.domains import normalise_domain
from core.field_test import FieldTest
from core.intent import IntentFilter
from core.settings import check_sender
from core.vocabulary import STAGES, Role, Stage
from core.yamlfile import load_model, node_line

Tier = Literal[1, 2, 3]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,119}$")
_WAIT = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_WAIT_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_STAGE_CONDITION = re.compile(r"^stage\s*>=\s*([a-z]+)$")
STOP_EVENTS = ("replied", "clicked", "meeting", "unsubscribed", "bounced")
ID = r"^[a-z0-9][a-z0-9_-]{0,79}$"
TEMPLATE = r"^[a-z0-9][a-z0-9_-]{0,119}$"
# Who a campaign's emails go from: its sender, or each account's CRM owner (`send_as`).
SEND_AS = ("sender", "owner")


def parse_wait(text: str) -> timedelta:
    """`90m`, `12h`, `3d`, `2w` -> timedelta."""
    found = _WAIT.match(text)
    if not found:
        raise ValueError(f"wait {text!r}: use a number and m, h, d or w, like 3d")
    return timedelta(**{_WAIT_UNITS[found.group(2)]: int(found.group(1))})


class Audience(BaseModel):
    """Who the campaign is for: accounts by tier, stage and firmographics, and which people."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[Tier] = [1, 2, 3]
    stages: list[Stage] = ["target", "aware", "engaged", "mqa"]
    icp: list[FieldTest] = Field(default=[], description="account filters, all must pass")
    required_roles: list[Role] = ["decision_maker", "approver", "specifier", "reviewer"]
    roles: list[Role] | None = Field(None, description="only people in these roles (default all)")
    intent: IntentFilter | None = Field(
        None, description="only accounts with recent intent on these topics (abm import intent)"
    )


class Variant(BaseModel):
    """One arm of an A/B test: its own template, a share of the audience by weight."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    template: str = Field(pattern=TEMPLATE)
    weight: int = Field(1, ge=1, le=1000)


class Step(BaseModel):
    """One touch of the sequence; a step waits `wait` after the previous one was sent."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID)
    channel: Literal["email", "linkedin_audience", "linkedin_task"] = "email"
    template: str | None = Field(None, pattern=TEMPLATE)
    variants: list[Variant] = []
    wait: str = "0d"
    stop_if: list[str] = ["replied", "unsubscribed", "bounced"]
    action: Literal["connect", "message"] | None = Field(
        None, description="linkedin_task only: connection request or message"
    )
    matched_audience: Literal["contacts", "companies"] | None = Field(
        None, description="linkedin_audience only: hashed contact list or company list"
    )

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: str) -> str:
        parse_wait(value)
        return value

    @field_validator("stop_if")
    @classmethod
    def _stop_conditions(cls, values: list[str]) -> list[str]:
        for value in values:
            stage = _STAGE_CONDITION.match(value.strip())
            if stage and stage.group(1) in STAGES:
                continue
            if value not in STOP_EVENTS:
                raise ValueError(
                    f"{value!r}: use one of {', '.join(STOP_EVENTS)} or 'stage >= <stage>'"
                )
        return values

    @model_validator(mode="after")
    def _channel_fields(self) -> Step:
        if self.channel == "linkedin_audience":
            if self.template or self.variants:
                raise ValueError("a linkedin_audience step has no template")
            self.matched_audience = self.matched_audience or "contacts"
        else:
            if self.matched_audience:
                raise ValueError("matched_audience belongs to linkedin_audience steps")
            if not self.variants and not self.template:
                self.template = self.id
            if self.variants and self.template:
                raise ValueError("give either template or variants, not both")
        if self.channel == "linkedin_task":
            self.action = self.action or "connect"
        elif self.action:
            raise ValueError("action belongs to linkedin_task steps")
        ids = [variant.id for variant in self.variants]
        if len(ids) != len(set(ids)):
            raise ValueError(f"variant ids must be unique: {ids}")
        return self

    @property
    def delay(self) -> timedelta:
        return parse_wait(self.wait)

    @property
    def stop_stage(self) -> str | None:
        """The stage at which this step no longer goes out (`stage >= mqa`), if any."""
        for value in self.stop_if:
            found = _STAGE_CONDITION.match(value.strip())
            if found:
                return found.group(1)
        return None

    def templates(self) -> list[str]:
        """Every template this step can use."""
        return [v.template for v in self.variants] if self.variants else [self.template or ""]


class Cap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: int = Field(ge=1, le=1000)
    days: int = Field(ge=1, le=365)


class Caps(BaseModel):
    """Most messages a person / an account may get from all campaigns in a rolling window."""

    model_config = ConfigDict(extra="forbid")
    per_contact: Cap | None = Cap(max=2, days=7)
    per_account: Cap | None = Cap(max=5, days=7)


class SendingWindow(BaseModel):
    """When messages may leave, in the contact's own time zone (else the account's country,
    else `timezone` here)."""

    model_config = ConfigDict(extra="forbid")
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    start: time = time(8, 0)
    end: time = time(18, 0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `America`, too long
            raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _order(self) -> SendingWindow:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Utm(BaseModel):
    """UTM parameters added to links in emails (never to the unsubscribe link)."""

    model_config = ConfigDict(extra="forbid")
    source: str = "abm"
    medium: str = "email"
    campaign: str | None = Field(None, description="default: the campaign key")
    domains: list[str] = Field(
        [], description="only links to these domains get UTM parameters (default: all)"
    )


class Tracking(BaseModel):
    """What is tracked in this campaign's messages. A provider that tracks (SendGrid, or an
    SMTP relay that takes tracking headers) is told on every request rather than left to the
    account's defaults; its own unsubscribe link (SendGrid's subscription tracking) is never
    asked for: every message carries ours. Elsewhere (outbox, console, a plain SMTP server)
    we track ourselves: links in both parts go through our signed redirect, and the open
    pixel is added only when the file says `opens: true` (first-party opens are off unless
    asked for: image proxies and privacy protection make them unreliable)."""

    model_config = ConfigDict(extra="forbid")
    clicks: bool = Field(True, description="links rewritten to count clicks")
    opens: bool = Field(True, description="a tracking pixel; privacy proxies open mail too")
    site_domains: list[str] = Field(
        [],
        description="your own website's domains: a click on a link to one hands your site "
        "script a visitor id (default: ABM_SITE_DOMAINS)",
    )

    @field_validator("site_domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        return [normalise_domain(value) for value in values]

    @property
    def first_party_opens(self) -> bool:
        """Our own open pixel: only when the campaign file writes `opens: true`."""
        return self.opens and "opens" in self.model_fields_set


class AccountRules(BaseModel):
    """The account is the unit: when one person replies or books a meeting, what happens to
    the sequences of everyone else at that account; and a stage at which it all stops."""

    model_config = ConfigDict(extra="forbid")
    on_reply: Literal["pause", "delay", "stop", "continue"] = Field(
        "delay",
        description="pause: hold the others until `abm campaign resume FILE --account D`; "
        "delay: hold them for `delay`; stop: end their sequences; continue: carry on",
    )
    delay: str = "14d"
    stop_at_stage: Stage | None = "opportunity"

    @field_validator("delay")
    @classmethod
    def _delay(cls, value: str) -> str:
        parse_wait(value)
        return value


class UncertainPolicy(BaseModel):
    """What to do, without asking, with a message whose fate a crash left unknown once it has
    stayed so for `after`: provider events usually settle it within minutes, so this only
    decides the ones nothing settled. `resend` sends it again under the same Message-ID
    (receivers that de-duplicate by Message-ID drop a second copy; others show it twice);
    `mark_sent` counts it as sent (nobody gets a second copy; some may have got none)."""

    model_config = ConfigDict(extra="forbid")
    after: str = Field(description="how long a message stays uncertain first, e.g. 6h or 2d")
    then: Literal["resend", "mark_sent"]

    @field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        parse_wait(value)
        return value

    @property
    def wait(self) -> timedelta:
        return parse_wait(self.after)


class CampaignFile(BaseModel):
    """The schema of a campaign file; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    name: str = Field(min_length=1, max_length=300)
    audience: Audience = Audience()
    consent_required: bool = Field(
        False, description="skip contacts whose consent is `none` or unknown"
    )
    sender: str | None = Field(None, description="From address; default ABM_SENDER")
    send_as: str = Field(
        "sender",
        description="owner: each email goes from the account's CRM owner (Reply-To them) "
        "when their address is at the sender's domain, else from `sender`, counted by reason "
        "in the run summary",
    )
    links: dict[str, HttpUrl] = {}
    utm: Utm = Utm()
    tracking: Tracking = Tracking()
    caps: Caps = Caps()
    sending_window: SendingWindow | None = None
    account_rules: AccountRules = AccountRules()
    uncertain: UncertainPolicy | None = Field(
        None, description="settle messages a crash left uncertain (default: the operator does)"
    )
    steps: list[Step] = Field(min_length=1)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return None if value is None else check_sender(value)

    @field_validator("send_as")
    @classmethod
    def _send_as(cls, value: str) -> str:
        if value not in SEND_AS:
            raise ValueError(
                f"{value!r}: use `sender` (every email from the campaign's sender, the "
                "default) or `owner` (from the account's CRM owner when their address is at "
                "the sender's domain)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignFile:
        ids = [step.id for step in self.steps]
        if len(ids) != len(set(ids)):
            raise ValueError(f"step ids must be unique: {ids}")
        if self.key is not None and not _KEY.match(self.key):
            raise ValueError("key: lowercase letters, digits, - and _ only")
        return self


def load_campaign(path: Path) -> tuple[str, CampaignFile]:
    """(key, campaign) from a file; the key defaults to the file name without `.yaml`."""
    campaign = load_model(path, CampaignFile)
    key = campaign.key or re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-")
    return key, campaign


def field_line(path: Path, *loc: int | str) -> int | None:
    """The 1-based line of a field of a campaign file (`"steps", 1, "template"`), or of the
    nearest enclosing one written in the file (a step whose template is its id); None when
    the file cannot be read as YAML. For messages about a file `load_campaign` accepted."""
    try:
        root: yaml.Node | None = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return node_line(root, loc)

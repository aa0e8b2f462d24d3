"""The product's words, defined once: committee roles, seniorities, functions, journey stages,
contact statuses, delivery states and event types. Every layer reads them from here, so a
new stage or role is added in one place."""

from __future__ import annotations

from typing import Literal, get_args

from core.domains import show

Seniority = Literal["c_level", "vp", "director", "manager", "individual_contributor"]
Function = Literal[
    "executive",
    "engineering",
    "it",
    "security",
    "data",
    "product",
    "finance",
    "procurement",
    "legal",
    "operations",
    "marketing",
    "sales",
    "hr",
    "customer_success",
    "other",
]
Role = Literal["decision_maker", "approver", "specifier", "reviewer", "influencer", "user"]
Stage = Literal["target", "aware", "engaged", "mqa", "opportunity", "customer"]

SENIORITIES: tuple[str, ...] = get_args(Seniority)
FUNCTIONS: tuple[str, ...] = get_args(Function)
ROLES: tuple[str, ...] = get_args(Role)
# Journey stages in order: an account only moves forward through them.
STAGES: tuple[str, ...] = get_args(Stage)
TIERS = (1, 2, 3)


def parse_stage(raw: str) -> str:
    """A journey stage as people write it ("MQA", " Opportunity "); ValueError if unknown."""
    stage = raw.strip().casefold()
    if stage not in STAGES:
        raise ValueError(f"'{show(raw)}' is not a journey stage; use one of {', '.join(STAGES)}")
    return stage


CONTACT_STATUSES = ("active", "unsubscribed", "bounced", "suppressed")
DELIVERY_STATES = (
    "planned",
    "rendered",
    "sending",
    "sent",
    "failed",
    "dead",
    "skipped",
    "uncertain",
)
# How `abm campaign people` names a ledger row's state: `deferred` is a planned row that a
# cap, a sending window or an account hold moved later; `sending` a row claimed or handed to
# a provider right now (`rendered` or `sending`).
PersonState = Literal[
    "planned", "deferred", "sending", "sent", "skipped", "failed", "dead", "uncertain"
]
PERSON_STATES: tuple[str, ...] = get_args(PersonState)

EVENT_TYPES = (
    "sent",
    "delivered",
    "open",
    "click",
    "reply",
    "bounce",
    "unsubscribe",
    "spam_report",
    "ad_impression",
    "ad_click",
    "lead_form",
    "meeting",
    # first-party tracking (abm/tracking.py): a mail scanner following a link, which is
    # recorded but never counted; a page view on the user's own site after a click
    "click_scanner",
    "web_visit",
    # third-party intent data (`abm import intent`): the account researches a topic
    "intent",
)
# Where engagement comes from, in the order `abm accounts show` and the report split an
# account's score by (`stages/engagement/sources.py` says which source each event is):
# emails and the mailbox, LinkedIn (ads, lead forms), the user's own website, intent data;
# `other` only for a channel none of these names.
ENGAGEMENT_SOURCES = ("email", "linkedin", "web", "intent", "other")
SOURCE_LABELS = {
    "email": "email",
    "linkedin": "LinkedIn",
    "web": "web",
    "intent": "intent",
    "other": "other",
}
# Events that show a person (not a mail client's privacy proxy) engaged: breadth counts these.
ENGAGED = frozenset({"click", "reply", "meeting", "lead_form", "ad_click"})

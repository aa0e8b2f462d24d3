"""Validation of a campaign file before it runs: schema, then every template it uses,
rendered for sample people of every seniority, function and role, so a missing field is an
error now and not a blank "Hi ," in someone's inbox."""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateError

from abm.campaign_file import load_campaign
from abm.errors import ConfigError
from abm.settings import Settings
from flows.rendering import Sender, render_context, render_parts, template_environment
from flows.stakeholders import FUNCTIONS, SENIORITIES


def _sample_contexts(links: dict[str, str], sender: Sender, address: str) -> list[dict]:
    contexts = []
    for tier in (1, 2, 3, None):
        for seniority in SENIORITIES:
            for function in FUNCTIONS:
                contact = {
                    "email": "sample.person@sample.example",
                    "first_name": None if function == "other" else "Sam",
                    "last_name": "Sample",
                    "title": None,
                    "seniority": seniority,
                    "function": function,
                    "role": None,
                }
                account = {
                    "name": "Sample Industries",
                    "domain": "sample.example",
                    "industry": None if tier is None else "Manufacturing",
                    "tier": tier,
                    "country": None,
                    "employees": None,
                }
                footer = {"postal_address": address, "unsubscribe_url": "https://u.example/x"}
                contexts.append(render_context(contact, account, sender, links, footer))
    return contexts


def validate_campaign(path: Path, settings: Settings) -> list[str]:
    """Lines describing what was checked; ConfigError naming file and template on failure."""
    key, campaign = load_campaign(path)
    env = template_environment(settings.templates_dir)
    sender = Sender.parse(settings.sender)
    links = {name: str(url) for name, url in campaign.links.items()}
    contexts = _sample_contexts(links, sender, settings.postal_address)
    for step in campaign.steps:
        for context in contexts:
            try:
                render_parts(env, step.channel, step.template, context)
            except TemplateError as exc:
                where = getattr(exc, "filename", None) or f"{step.channel}/{step.template}"
                line = getattr(exc, "lineno", None)
                raise ConfigError(
                    f"{path}: step {step.id!r}: template {where}"
                    f"{f':{line}' if line else ''}: {exc.message or exc}"
                ) from None
    return [
        f"{path}: campaign {key!r} is valid: {len(campaign.steps)} step(s), "
        f"{len(contexts)} sample contexts rendered per step"
    ]

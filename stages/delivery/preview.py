"""Before a campaign runs: `validate` renders every template for every combination of
tier, industry folder and committee role its audience can produce, so a missing field is an
error now and not a blank "Hi ," in someone's inbox; `preview` shows exactly what one
person would receive, through the same composer as the real send."""

from __future__ import annotations

import contextlib
from email.message import Message
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, UndefinedError
from jinja2.sandbox import SecurityError
from sqlalchemy import Engine, select

from core.campaign_file import CampaignFile, Step, load_campaign
from core.errors import AbmError, ConfigError
from core.settings import Settings
from core.vocabulary import FUNCTIONS, ROLES, SENIORITIES
from models.tables import Account, Campaign, Contact, Delivery
from stages.content.compose import Composer
from stages.content.rendering import choose_variant, template_names
from stages.delivery.send import PERSON_COLUMNS, with_account_attributes


def _industries(names: frozenset[str], channel: str, templates: list[str]) -> list[str | None]:
    """Industry folders the templates have (as sample industry names), plus 'none of them'."""
    found: set[str] = set()
    for name in names:
        parts = name.split("/")
        is_industry = len(parts) >= 5 and parts[3] != "_"
        if is_industry and parts[0] == channel and parts[1] in templates:
            found.add(parts[3])
    return [None, "Other", *sorted(found)]


def _sample_rows(campaign: CampaignFile, step: Step, names: frozenset[str]) -> list[dict]:
    roles = list(campaign.audience.roles or ROLES)
    rows = []
    for tier in campaign.audience.tiers:
        for industry in _industries(names, step.channel, step.templates()):
            for role in roles:
                for index, (seniority, function) in enumerate(
                    zip(SENIORITIES * 3, FUNCTIONS, strict=False)
                ):
                    rows.append(
                        {
                            "delivery_id": 0,
                            "contact_id": 0,
                            "email": "sam.sample@sample.example",
                            "first_name": None if index % 2 else "Sam",
                            "last_name": "Sample",
                            "title": None,
                            "seniority": seniority,
                            "function": function,
                            "role": role,
                            "domain": "sample.example",
                            "account_name": None if index % 3 == 0 else "Sample Industries GmbH",
                            "industry": industry.replace("-", " ") if industry else None,
                            "tier": tier,
                            "country": None,
                            "employees": None if index % 2 else 1200,
                            "stage": "target",
                        }
                    )
    return rows


def validate_campaign(path: Path, settings: Settings) -> list[str]:
    """Lines describing what was checked; a ConfigError naming file and template if not."""
    key, campaign = load_campaign(path)
    names = template_names(settings.templates_dir)
    checked = 0
    for step in campaign.steps:
        if step.channel == "linkedin_audience":
            continue
        variants = [v.id for v in step.variants] or [None]
        composer = Composer(settings, key, 0, campaign, step)
        for row in _sample_rows(campaign, step, names):
            for variant in variants:
                _render_or_explain(composer, step, {**row, "variant": variant}, path, settings)
                checked += 1
    return [
        f"{path}: campaign {key!r} is valid: {len(campaign.steps)} step(s); "
        f"{checked} renderings checked across tiers, industry folders, roles and variants"
    ]


# The sample account has no extra columns: any account may lack one, and then the message
# would fail to render when it is due. A fallback makes the template safe for all.
_FALLBACK_HINT = (
    "; a field not every person or account has (such as an extra column, "
    "account.attributes.NAME) needs a fallback: {{ account.attributes.NAME | default('') }}"
)


def _render_or_explain(
    composer: Composer, step: Step, row: dict[str, Any], path: Path, settings: Settings
) -> Message | str:
    """`_render`, with any failure turned into a ConfigError naming the campaign file, the
    step, the template file and line, and the audience it failed for."""
    audience = f"(tier {row['tier']}, industry {row['industry'] or 'unknown'}, role {row['role']})"
    try:
        return _render(composer, step, row)
    except SecurityError as exc:
        raise ConfigError(
            f"{path}: step {step.id!r}: a template tried to reach Python internals, "
            f"which templates may not do (security error: {exc})"
        ) from None
    except TemplateError as exc:
        where = _template_location(exc, settings.templates_dir) or step.channel
        hint = _FALLBACK_HINT if isinstance(exc, UndefinedError) else ""
        raise ConfigError(
            f"{path}: step {step.id!r}: {where}: {exc.message or exc} {audience}{hint}"
        ) from None
    except AbmError:
        raise
    except Exception as exc:  # `{{ 1/0 }}`, `{{ x.format(y) }}`, a note too long...
        where = _template_location(exc, settings.templates_dir)
        if where is None and isinstance(exc, ValueError):
            raise ConfigError(f"{path}: step {step.id!r}: {exc}") from None
        raise ConfigError(
            f"{path}: step {step.id!r}: {where or step.channel}: "
            f"{type(exc).__name__}: {exc} {audience}"
        ) from None


def _template_location(exc: BaseException, templates_dir: Path) -> str | None:
    """`email/t/body.html.j2:2`: the template frame Jinja put in the traceback, or the
    syntax error's own position."""
    filename, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename.endswith(".j2"):
            filename, line = trace.tb_frame.f_code.co_filename, trace.tb_lineno
        trace = trace.tb_next
    if not filename:
        return None
    with contextlib.suppress(ValueError):
        filename = str(Path(filename).resolve().relative_to(templates_dir.resolve()))
    return f"{filename}:{line}" if line else filename


def _render(composer: Composer, step: Step, row: dict[str, Any]) -> Message | str:
    if step.channel == "email":
        return composer.email(row)
    return composer.linkedin_text(row)


def preview(
    engine: Engine,
    settings: Settings,
    path: Path,
    domain: str,
    email: str | None = None,
    step_id: str | None = None,
) -> tuple[Step, dict[str, Any], Message | str]:
    """What one person at an account would receive for a step (the first step by default)."""
    key, campaign = load_campaign(path)
    steps = [s for s in campaign.steps if s.channel != "linkedin_audience"]
    step = next((s for s in steps if s.id == step_id), None) if step_id else steps[0]
    if step is None:
        raise AbmError(f"{path}: no step {step_id!r} with content to preview")
    query = (
        select(*PERSON_COLUMNS)
        .join(Account, Account.id == Contact.account_id)
        .where(Account.domain == domain.strip().lower())
        .order_by(Contact.role, Contact.id)
    )
    if email:
        query = query.where(Contact.email == email.strip().lower())
    with engine.connect() as connection:
        row = connection.execute(query.limit(1)).mappings().first()
        if row is None:
            who = email or "any contact"
            raise AbmError(f"no {who} at account {domain!r} (import them first)")
        row = with_account_attributes(connection, [dict(row)])[0]
        campaign_id = connection.execute(select(Campaign.id).where(Campaign.key == key)).scalar()
        ledger = None
        if campaign_id is not None:
            ledger = connection.execute(
                select(Delivery.id, Delivery.variant).where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.step == step.id,
                    Delivery.contact_id == row["contact_id"],
                )
            ).first()
    person = dict(row)
    weights = [(v.id, v.weight) for v in step.variants]
    person["delivery_id"] = ledger.id if ledger else 0
    person["variant"] = (
        ledger.variant
        if ledger
        else choose_variant(weights, f"{key}:{step.id}:{person['email']}")
        if weights
        else None
    )
    composer = Composer(settings, key, campaign_id or 0, campaign, step)
    return step, person, _render_or_explain(composer, step, person, path, settings)

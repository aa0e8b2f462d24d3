"""Before a campaign run writes or starts anything: every input it will need, checked at
once. The command line calls `preflight` before it registers the campaign or starts Prefect,
and the `run_campaign` flow calls it first (deployments run the flow without the command
line), so a mistake in a file or a setting is a ConfigError (exit 2) naming the file and
line or the setting, in well under a second, and never a run that fails halfway.

Checked, in the order a person would fix them: the campaign file; the ICP rules
(ABM_ICP_RULES), the title table (ABM_TITLE_RULES), the engagement rules
(ABM_ENGAGEMENT_RULES) and the warm-up ramp (ABM_WARMUP); every template the campaign's
steps use: a file for each tier and committee role of its audience, and each file (and
what it includes) parsed and compiled by Jinja; the email backend's settings (credentials
present, ABM_PUBLIC_URL safe for real mail) and LinkedIn's when a step uploads an audience.

Nothing here writes, opens the database or imports Prefect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from connectors.checks import require_send_ready
from core.campaign_file import CampaignFile, Step, field_line, load_campaign
from core.errors import ConfigError
from core.settings import Settings
from core.vocabulary import ROLES
from stages.committee.titles import load_title_table
from stages.content.rendering import (
    TemplateMissing,
    resolve,
    template_environment,
    template_names,
)
from stages.delivery.rates import send_limits
from stages.engagement.rollup import engagement_rules_from
from stages.targeting.scoring import load_icp_rules


def preflight(settings: Settings, campaign_file: Path | str) -> None:
    """Raise a ConfigError naming the file (and line) or the setting that would stop a run
    of `campaign_file` with `settings`; return when every input is usable."""
    path = Path(campaign_file)
    _, campaign = load_campaign(path)
    _setting("ABM_ICP_RULES", settings.icp_rules, load_icp_rules)
    _setting("ABM_TITLE_RULES", settings.title_rules, load_title_table)
    engagement_rules_from(settings)  # names ABM_ENGAGEMENT_RULES itself
    send_limits(settings)  # and ABM_WARMUP
    check_templates(settings, path, campaign)
    require_send_ready(settings)  # credentials present, ABM_PUBLIC_URL safe for real mail
    if any(step.channel == "linkedin_audience" for step in campaign.steps):
        from connectors.linkedin import get_connector

        get_connector(settings).close()  # api mode: token and ad account set (no request)


def _setting(name: str, path: Path | None, load: Callable[[Path | None], Any]) -> None:
    """Load the file a setting names (or the shipped default), the setting named in the
    error when it is the user's file."""
    try:
        load(path)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{name}: {exc}") from None


# What a step's channel renders, by file name in its template folder.
def _files(step: Step) -> tuple[str, ...]:
    if step.channel == "email":
        return ("subject.j2", "body.html.j2")
    return (f"{step.action}.j2",)


def check_templates(settings: Settings, path: Path, campaign: CampaignFile) -> None:
    """Each template the campaign's steps use resolves to a file for every tier and role of
    its audience, and every file of its folder (and each file those include, import or
    extend) parses and compiles. A ConfigError names the campaign file, its line and the
    step, and the template file and line."""
    env = template_environment(settings.templates_dir)
    names = template_names(settings.templates_dir)
    roles = list(campaign.audience.roles or ROLES)
    checked: set[str] = set()
    for index, step in enumerate(campaign.steps):
        if step.channel == "linkedin_audience":
            continue
        for number, template in enumerate(step.templates()):
            variant = ("variants", number) if step.variants else ()
            line = field_line(path, "steps", index, *variant, "template")
            where = f"{path}:{line}" if line else str(path)
            for tier in campaign.audience.tiers:
                for role in roles:
                    for filename in _files(step):
                        try:
                            resolve(names, step.channel, template, filename, tier=tier, role=role)
                        except TemplateMissing:
                            raise ConfigError(
                                f"{where}: step {step.id!r}: no template "
                                f"{step.channel}/{template}/{filename} for tier {tier}, role "
                                f"{role} in {settings.templates_dir} (ABM_TEMPLATES_DIR): "
                                "add it to the template's folder or a tier/industry/role folder"
                            ) from None
            folder = f"{step.channel}/{template}/"
            for name in sorted(n for n in names if n.startswith(folder)):
                used_by = f"{where}: step {step.id!r}"
                tree = _compile(env, names, name, settings.templates_dir, used_by, checked)
                if tree is not None:
                    _check_links(tree, campaign, path, settings.templates_dir / name, used_by)


def _compile(
    env: SandboxedEnvironment,
    names: frozenset[str],
    name: str,
    templates_dir: Path,
    used_by: str,
    checked: set[str],
) -> nodes.Template | None:
    """Parse and compile one template file, then those it refers to by a fixed name; the
    file's tree, or None when it was checked before."""
    if name in checked:
        return None
    checked.add(name)
    try:
        source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        tree = env.parse(source, name, filename)
        env.compile(tree, name, filename)  # an unknown filter or test is found here
    except TemplateSyntaxError as exc:
        at = f"{templates_dir / name}:{exc.lineno}" if exc.lineno else str(templates_dir / name)
        raise ConfigError(f"{used_by}: template {at}: {exc.message}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{used_by}: template {templates_dir / name}: not UTF-8 text; save it as UTF-8"
        ) from None
    except TemplateError as exc:
        raise ConfigError(f"{used_by}: template {templates_dir / name}: {exc}") from None
    for referred in meta.find_referenced_templates(tree):
        if referred is None:  # a name computed at render time
            continue
        if referred not in names:
            raise ConfigError(
                f"{used_by}: template {templates_dir / name} includes {referred!r}, which is "
                f"not in {templates_dir} (ABM_TEMPLATES_DIR)"
            )
        _compile(env, names, referred, templates_dir, used_by, checked)
    return tree


# A name used under these is asked about, not required: `links.x is defined`, `links.x | default`.
_ASKING = {"defined", "undefined", "default", "d"}


def _check_links(
    tree: nodes.Node, campaign: CampaignFile, path: Path, template: Path, used_by: str
) -> None:
    """Every `links.NAME` a template needs is one the campaign file defines under `links:`:
    otherwise every message of the step would fail to render, one by one, at send time."""

    def needed(node: nodes.Node) -> str | None:
        """NAME when `node` reads `links.NAME` or `links["NAME"]`."""
        if not isinstance(node, nodes.Getattr | nodes.Getitem):
            return None
        if not (isinstance(node.node, nodes.Name) and node.node.name == "links"):
            return None
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        return name if isinstance(name, str) else None

    used: dict[str, int] = {}  # name -> first line needing it
    asked: set[str] = set()  # names the template asks about, so it copes without them

    def walk(node: nodes.Node, asking: bool) -> None:
        name = needed(node)
        if name is not None:
            if asking:
                asked.add(name)
            else:
                used.setdefault(name, node.lineno)
        for child in node.iter_child_nodes():
            is_asking = isinstance(node, nodes.Test | nodes.Filter) and node.name in _ASKING
            walk(child, asking or (is_asking and child is node.node))

    walk(tree, False)
    for name, line in used.items():
        if name not in asked and name not in campaign.links:
            defined = ", ".join(sorted(campaign.links)) or "none"
            raise ConfigError(
                f"{used_by}: template {template}:{line} uses links.{name}, which "
                f"{path} does not define under `links:` (it defines: {defined})"
            )

"""What a CRM deal's stage means here: the documented, editable table
`core/defaults/crm_stages.yaml` (or the file ABM_CRM_STAGE_MAP names, which replaces it),
plus the CRM's own flags, which come first:

1. a won deal (`won` true) is `customer`;
2. a deal closed without being won is nothing (it does not move the account);
3. otherwise the table's word for the stage, for this CRM (null: nothing);
4. an open deal whose stage the table does not list is `opportunity`, with a warning that
   names the stage and the file to add it to: nothing is guessed silently.

Pure functions: the pull (`stages/crm/pull.py`) applies what they say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from connectors.crm.base import CrmDeal
from core.errors import ConfigError
from core.settings import DEFAULTS_DIR, Settings
from core.vocabulary import STAGES, Stage
from core.yamlfile import load_model

DEFAULT_STAGE_MAP = DEFAULTS_DIR / "crm_stages.yaml"


def stage_key(stage: str) -> str:
    """A CRM stage as the table matches it: case and spaces do not matter."""
    return " ".join(stage.split()).casefold()


class _StageFile(BaseModel):
    """The YAML file: CRM stage -> our stage (None: nothing), one mapping per CRM."""

    model_config = ConfigDict(extra="forbid")

    hubspot: dict[str, Stage | None] = {}
    salesforce: dict[str, Stage | None] = {}
    sandbox: dict[str, Stage | None] = {}

    @field_validator("hubspot", "salesforce", "sandbox")
    @classmethod
    def _matched_as_keys(cls, table: dict[str, str | None]) -> dict[str, str | None]:
        return {stage_key(str(crm_stage)): ours for crm_stage, ours in table.items()}


@dataclass(frozen=True)
class StageTable:
    """The table as read: per CRM, stage key -> our stage, and the file it came from (the
    warnings name it)."""

    crms: dict[str, dict[str, str | None]]
    path: Path

    def for_crm(self, crm: str) -> dict[str, str | None]:
        """The mapping of one CRM ({} for a CRM the table has no section for)."""
        return self.crms.get(crm, {})


def load_stage_table(path: Path | None = None) -> StageTable:
    """The table at `path`, else the default; a bad file is a ConfigError with file:line."""
    path = path or DEFAULT_STAGE_MAP
    return StageTable(load_model(path, _StageFile).model_dump(), path)


def stage_table_from(settings: Settings) -> StageTable:
    """The table ABM_CRM_STAGE_MAP names, else the default; a bad file names the setting."""
    try:
        return load_stage_table(settings.crm_stage_map)
    except ConfigError as exc:
        if settings.crm_stage_map is None:
            raise
        raise ConfigError(f"ABM_CRM_STAGE_MAP: {exc}") from None


@dataclass(frozen=True)
class DealStage:
    """Our stage for one deal (None: it says nothing) and, when it was a guess, a warning."""

    maps_to: str | None
    warning: str | None = None


def map_deal(table: StageTable, crm: str, deal: CrmDeal) -> DealStage:
    """What this deal says about its account's stage (rules in the module docstring)."""
    if deal.won:
        return DealStage("customer")
    if deal.closed:
        return DealStage(None)
    mapping = table.for_crm(crm)
    key = stage_key(deal.stage)
    if key in mapping:
        return DealStage(mapping[key])
    return DealStage(
        "opportunity",
        f"{crm} deal stage {deal.stage!r} is not in the stage table: counted as opportunity; "
        f"add it under {crm}: in {table.path} (ABM_CRM_STAGE_MAP names your copy)",
    )


def furthest(stages: list[str | None]) -> str | None:
    """The furthest of our stages along the journey (customer beyond opportunity); None
    when none of them says anything."""
    known = [stage for stage in stages if stage is not None]
    return max(known, key=STAGES.index) if known else None

"""Campaign files (`campaigns/*.yaml`): a campaign is code, reviewed, validated, then run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from abm.yamlfile import load_model
from flows.targeting import ROLES

Role = Literal[ROLES]  # type: ignore[valid-type]
Tier = Literal[1, 2, 3]
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,119}$")


class Audience(BaseModel):
    """Who the campaign is for: accounts by tier, and the committee roles it needs."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[Tier] = [1, 2, 3]
    required_roles: list[Role] = ["decision_maker", "approver", "specifier", "reviewer"]
    roles: list[Role] | None = Field(
        None, description="only contacts in these committee roles (default: everyone)"
    )


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,79}$")
    channel: Literal["email"] = "email"
    template: str = Field(pattern=r"^[a-z0-9][a-z0-9_/-]{0,119}$")


class CampaignFile(BaseModel):
    """The schema of a campaign file; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    name: str = Field(min_length=1, max_length=300)
    audience: Audience = Audience()
    consent_required: bool = Field(
        False, description="skip contacts whose consent is `none` or unknown"
    )
    links: dict[str, HttpUrl] = {}
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_steps(self) -> CampaignFile:
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

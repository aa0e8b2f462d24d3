"""One test of one account field: ICP rules weigh these, campaign audiences filter by them.
The schema lives here, below both; evaluating a test is targeting's job."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TESTS = ("in", "not_in", "between", "at_least", "below", "any_of", "none_of", "present")
ROLES = ("decision_maker", "approver", "specifier", "reviewer", "influencer", "user")


class FieldTest(BaseModel):
    """One test of one account field; ICP rules weigh them, campaign audiences filter by them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str
    in_: list[str] | None = Field(None, alias="in")
    not_in: list[str] | None = None
    between: tuple[float, float] | None = None
    at_least: float | None = None
    below: float | None = None
    any_of: list[str] | None = None
    none_of: list[str] | None = None
    present: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one_test(self) -> FieldTest:
        used = [name for name in TESTS if getattr(self, "in_" if name == "in" else name)]
        if len(used) != 1:
            raise ValueError(f"a rule needs exactly one test of {', '.join(TESTS)}; has {used}")
        if self.between and self.between[0] > self.between[1]:
            raise ValueError("between: the low end is above the high end")
        return self

"""Currency rates, dated and replaceable: revenue written in another currency is converted
into the one ICP thresholds use, with the rate's date, never taken at face value."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.yamlfile import load_model

DEFAULTS = Path(__file__).parent / "defaults" / "currency_rates.yaml"


class CurrencyRates(BaseModel):
    """US dollars per unit of each currency, as of `date`."""

    model_config = ConfigDict(extra="forbid")

    date: date
    usd_per_unit: dict[str, float] = Field(min_length=1)

    @field_validator("usd_per_unit")
    @classmethod
    def _codes(cls, value: dict[str, float]) -> dict[str, float]:
        for code, rate in value.items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ValueError(f"{code!r}: use three-letter ISO 4217 codes such as EUR")
            if not rate > 0:
                raise ValueError(f"{code}: a rate must be above 0")
        return value


def load_currency_rates(path: Path | None = None) -> CurrencyRates:
    """The user's rates file (ABM_CURRENCY_RATES), or the indicative default."""
    return load_model(path or DEFAULTS, CurrencyRates)

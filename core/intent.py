"""Intent data: third-party signals that an account is researching a topic (Bombora's
Company Surge, G2 Buyer Intent, 6sense, Demandbase). One signal is an account, a topic, a
score from 0 to 100 and a date; `abm import intent` stores each as an engagement event of
type `intent`.

The schema of an intent condition lives here, below the campaign file (an audience filter:
`audience.intent`) and the engagement rules (a stage condition: `or_intent`), with the one
function both use to ask it, so "surging on a topic we sell" means the same in both."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

__all__ = [
    "SURGE_SCORE",
    "IntentFilter",
    "IntentSignal",
    "TopicRules",
    "TopicWeight",
    "describe_topics",
    "matching_signal",
    "topic_key",
    "topic_matches",
]

SURGE_SCORE = 60.0
"""The score from which a topic counts as surging: Bombora's Company Surge threshold, and the
score a surge flag without a score is stored as."""

EVENT_TYPE = "intent"
_WITHIN = re.compile(r"^\s*(\d{1,4})\s*(d|w)\s*$")
_SPACES = re.compile(r"\s+")


def topic_key(topic: str) -> str:
    """A topic as it is compared and keyed: case and runs of spaces do not matter."""
    return _SPACES.sub(" ", topic).strip().casefold()


def topic_matches(pattern: str, topic: str) -> bool:
    """`pattern` (a glob: `*` matches anything, no `*` means that exact topic) against a
    topic, ignoring case and runs of spaces: `data integration*` matches `Data Integration
    Platforms`."""
    return fnmatchcase(topic_key(topic), topic_key(pattern))


def describe_topics(patterns: Iterable[str]) -> str:
    return ", ".join(patterns)


def _pattern(value: str) -> str:
    text = _SPACES.sub(" ", value).strip()
    if not text:
        raise ValueError("a topic pattern must not be empty")
    if len(text) > 200:
        raise ValueError("a topic pattern is at most 200 characters")
    return text


@dataclass(frozen=True, slots=True)
class IntentSignal:
    """One intent signal of an account, as the filters read it."""

    topic: str
    score: float
    occurred_at: datetime
    source: str | None = None


class IntentFilter(BaseModel):
    """An account with a signal on one of `topics` scoring at least `min_score`, dated within
    `within` of now: "surging on a topic we sell"."""

    model_config = ConfigDict(extra="forbid")

    topics: list[str] = Field(
        min_length=1, description="topic globs, any case: `data integration*`, `etl`"
    )
    min_score: float = Field(
        SURGE_SCORE, ge=0, le=100, allow_inf_nan=False, description="0-100; 60 is a surge"
    )
    within: str = Field("30d", description="how recent the signal must be: `14d`, `4w`")

    @field_validator("topics")
    @classmethod
    def _topics(cls, values: list[str]) -> list[str]:
        return [_pattern(value) for value in values]

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        found = _WITHIN.match(value)
        if not found or int(found.group(1)) < 1:
            raise ValueError(f"within {value!r}: use a number of days or weeks, like 30d or 4w")
        return value

    @property
    def window(self) -> timedelta:
        found = _WITHIN.match(self.within)
        assert found is not None
        return timedelta(days=int(found.group(1)) * (7 if found.group(2) == "w" else 1))

    def describe(self) -> str:
        """The condition in words, for a reason a person reads."""
        return (
            f"intent signal on {describe_topics(self.topics)} with a score of at least "
            f"{self.min_score:g} in the last {self.window.days} days"
        )


def matching_signal(
    condition: IntentFilter, signals: Iterable[IntentSignal], now: datetime
) -> IntentSignal | None:
    """The strongest signal (then the latest) that meets `condition` at `now`, or None."""
    since = now - condition.window
    best: IntentSignal | None = None
    for signal in signals:
        if signal.occurred_at < since or signal.occurred_at > now + timedelta(days=1):
            continue
        if signal.score < condition.min_score:
            continue
        if not any(topic_matches(pattern, signal.topic) for pattern in condition.topics):
            continue
        if best is None or (signal.score, signal.occurred_at) > (best.score, best.occurred_at):
            best = signal
    return best


class TopicWeight(BaseModel):
    """The weight of intent on topics matching `topic` (a glob, any case)."""

    model_config = ConfigDict(extra="forbid")
    topic: str
    weight: float = Field(allow_inf_nan=False)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _pattern(value)


class TopicRules(BaseModel):
    """The `topics:` section of the engagement rules: an intent signal weighs its topic's
    weight x score / 100 (then decays like every event). The first pattern that matches
    wins; a topic none matches weighs `default_weight`, 0 unless you say otherwise: only
    the topics you sell should count."""

    model_config = ConfigDict(extra="forbid")
    default_weight: float = Field(0, allow_inf_nan=False)
    weights: list[TopicWeight] = []
    _cache: dict[str, float] = PrivateAttr(default_factory=dict)

    def weight_of(self, topic: str) -> float:
        """The weight of a signal on `topic` (before its score and decay); worked out once
        per topic."""
        weight = self._cache.get(topic)
        if weight is None:
            key = topic_key(topic)
            weight = next(
                (rule.weight for rule in self.weights if topic_matches(rule.topic, key)),
                self.default_weight,
            )
            if len(self._cache) < 10_000:
                self._cache[topic] = weight
        return weight

    @property
    def counts(self) -> bool:
        """Whether any topic can weigh anything."""
        return bool(self.default_weight) or any(rule.weight for rule in self.weights)

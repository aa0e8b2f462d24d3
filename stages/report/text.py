"""Wording shared by the HTML page, the markdown artifact and the CLI, so each says a number
the same way."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from stages.report.data import MIN_EXPECTED, MIN_SENT_PER_VARIANT

SKIP_REASONS = {
    "unsubscribed": "the person unsubscribed earlier",
    "bounced": "the address bounced before",
    "suppressed": "on the do-not-contact list",
    "no_consent": "no recorded consent, and the campaign requires it",
    "left_audience": "no longer in the campaign's audience (tier, stage, filters, intent or role)",
    "account_replied": "someone else at the account replied, and the campaign stops then",
}


def verdict_text(comparison: dict[str, Any]) -> str:
    """One sentence a marketer can act on for one A/B comparison of click rates."""
    a, b = comparison["control"], comparison["variant"]
    rate_a, rate_b = percent(comparison["control_rate"]), percent(comparison["variant_rate"])
    if comparison["result"] == "not_enough_data":
        so_far = (
            f" (click rate so far {rate_a} for {a}, {rate_b} for {b})"
            if comparison["control_rate"] is not None and comparison["variant_rate"] is not None
            else ""
        )
        return (
            f"Not enough data yet to compare {a} and {b}{so_far}: each variant needs at least "
            f"{MIN_SENT_PER_VARIANT} sends and about {MIN_EXPECTED} clicks."
        )
    p = p_value_text(comparison["p_value"])
    if comparison["result"] == "significant":
        winner, loser = (b, a) if comparison["higher"] == b else (a, b)
        rates = {a: rate_a, b: rate_b}
        return (
            f"Variant {winner} gets more clicks ({rates[winner]} against {rates[loser]} for "
            f"{loser}); {p}, so the difference is unlikely to be chance."
        )
    return (
        f"No clear winner: click rate {rate_a} for {a}, {rate_b} for {b}; {p}, "
        "a gap this size could easily be chance. Keep testing or pick either."
    )


def number(value: int | float) -> str:
    return f"{value:,}"


def sent_text(totals: dict[str, Any]) -> str:
    """What went out, by channel, in words ("3 emails sent, 2 LinkedIn tasks for reps and 4
    people added to LinkedIn audiences"): a rep's task or an audience add is not an email."""
    emails, tasks, adds = (totals[k] for k in ("emails_sent", "linkedin_tasks", "audience_adds"))
    parts = [
        f"{number(emails)} {'email' if emails == 1 else 'emails'} sent" if emails else "",
        f"{number(tasks)} LinkedIn {'task' if tasks == 1 else 'tasks'} for reps" if tasks else "",
        f"{number(adds)} {'person' if adds == 1 else 'people'} added to LinkedIn audiences"
        if adds
        else "",
    ]
    said = [part for part in parts if part]
    if len(said) < 2:
        return "".join(said) or "nothing sent"
    return f"{', '.join(said[:-1])} and {said[-1]}"


def percent(rate: float | None, digits: int = 1) -> str:
    return "–" if rate is None else f"{rate * 100:.{digits}f}%"


def p_value_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def as_words(name: str) -> str:
    """`decision_maker` -> `decision maker`, `mqa` -> `MQA`: names as words."""
    return "MQA" if name == "mqa" else name.replace("_", " ")


def skip_reason_text(reason: str) -> str:
    if reason in SKIP_REASONS:
        return SKIP_REASONS[reason]
    if reason.startswith("account_stage_"):
        return f"the account reached {as_words(reason[14:])}, where the campaign stops"
    if reason.startswith("stopped_stage_"):
        return f"sequence stopped: the account reached {as_words(reason[14:])}"
    if reason.startswith("stopped_"):
        return f"sequence stopped: the person already {as_words(reason[8:])}"
    return as_words(reason)


def when_text(iso: str) -> str:
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def day_text(iso: str) -> str:
    day = date.fromisoformat(iso)
    return f"{day.day} {day:%b %Y}"


def days_text(days: float) -> str:
    return "under a day" if days < 1 else f"{days:g}"

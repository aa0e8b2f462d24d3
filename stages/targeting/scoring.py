"""Step 1 of the pipeline, target: score accounts against the ideal-customer profile and
put them in tiers. Scoring is a pure function; the task around it reads and writes in bulk."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine, bindparam, func, or_, select

from core.field_test import FieldTest
from core.settings import DEFAULTS_DIR
from core.vocabulary import ROLES, Role
from core.yamlfile import load_model
from models.cursors import read_cursor, store_cursor
from models.db import session_scope
from models.store import DriverStatement, update_by_id
from models.tables import Account, utcnow


class IcpRule(FieldTest):
    """One weighted test of one account field."""

    name: str | None = None
    weight: int = Field(ge=-100, le=100)


class Committee(BaseModel):
    model_config = ConfigDict(extra="forbid")
    required_roles: list[Role] = list(ROLES[:5])


class IcpRules(BaseModel):
    """The whole ICP file: rules, tier thresholds, required committee roles."""

    model_config = ConfigDict(extra="forbid")

    tiers: dict[Literal[1, 2, 3], int] = {1: 90, 2: 65, 3: 40}
    committee: Committee = Committee()
    rules: list[IcpRule]

    @model_validator(mode="after")
    def _tiers_descend(self) -> IcpRules:
        if sorted(self.tiers) != [1, 2, 3]:
            raise ValueError("tiers needs thresholds for 1, 2 and 3")
        if not self.tiers[1] >= self.tiers[2] >= self.tiers[3]:
            raise ValueError("tier thresholds must not rise from tier 1 to tier 3")
        return self


def load_icp_rules(path: Path | None = None) -> IcpRules:
    """The user's ICP file, or the documented default that ships in `core/defaults/`."""
    return load_model(path or DEFAULTS_DIR / "icp.yaml", IcpRules)


@dataclass(frozen=True)
class IcpScore:
    score: int
    reasons: list[str]
    tier: int | None


def _field_value(account: Mapping[str, Any], field: str) -> Any:
    if field.startswith("attributes."):
        return (account.get("attributes") or {}).get(field.removeprefix("attributes."))
    return account.get(field)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _evaluate(rule: FieldTest, value: Any) -> str | None:
    """The reason text when the rule matches `value`, else None."""
    field = rule.field
    if rule.present:
        return f"{field} present"
    if rule.in_ is not None or rule.not_in is not None:
        text = str(value).casefold()
        if rule.in_ is not None and text in {v.casefold() for v in rule.in_}:
            return f"{field}={value}"
        if rule.not_in is not None and text not in {v.casefold() for v in rule.not_in}:
            return f"{field}={value} (not excluded)"
        return None
    if rule.any_of is not None or rule.none_of is not None:
        items = value if isinstance(value, list) else [value]
        have = {str(v).casefold(): str(v) for v in items}
        if rule.any_of is not None:
            hits = [have[v.casefold()] for v in rule.any_of if v.casefold() in have]
            return f"{field} has {', '.join(hits)}" if hits else None
        assert rule.none_of is not None
        if not any(v.casefold() in have for v in rule.none_of):
            return f"{field} has none of {', '.join(rule.none_of)}"
        return None
    number = float(value)
    if rule.between is not None:
        low, high = rule.between
        ok = low <= number <= high
        return f"{field} {_number(low)}-{_number(high)} ({_number(number)})" if ok else None
    if rule.at_least is not None:
        ok = number >= rule.at_least
        return f"{field}>={_number(rule.at_least)} ({_number(number)})" if ok else None
    assert rule.below is not None
    return f"{field}<{_number(rule.below)} ({_number(number)})" if number < rule.below else None


def matches(test: FieldTest, account: Mapping[str, Any]) -> bool:
    """Whether an account passes a filter; unknown values never pass (except none_of)."""
    value = _field_value(account, test.field)
    if value in (None, "", []) and not test.none_of:
        return False
    return _evaluate(test, value if value is not None else []) is not None


def tier_for(score: int, rules: IcpRules, override: int | None = None) -> int | None:
    """Tier from thresholds; a manual override always wins."""
    if override in (1, 2, 3):
        return override
    for tier in (1, 2, 3):
        if score >= rules.tiers[tier]:  # type: ignore[index]
            return tier
    return None


def score_account(account: Mapping[str, Any], rules: IcpRules) -> IcpScore:
    """ICP fit of one account, 0-100, with a reason for every rule that fired or could not."""
    total, reasons = 0, []
    for rule in rules.rules:
        value = _field_value(account, rule.field)
        if value in (None, "", []) and not rule.none_of:
            reasons.append(f"0 {rule.field} unknown")
            continue
        reason = _evaluate(rule, value if value is not None else [])
        if reason is not None:
            total += rule.weight
            reasons.append(f"{rule.weight:+d} {reason}")
    score = max(0, min(100, total))
    override = account.get("tier_override")
    tier = tier_for(score, rules, override)
    if override in (1, 2, 3):
        reasons.append(f"tier {override} set by hand")
    return IcpScore(score=score, reasons=list(dict.fromkeys(reasons)), tier=tier)


SCORED_FIELDS = ("id", "domain", "name", "industry", "employees", "annual_revenue", "country")


# Accounts scored per read and write: memory stays the same for a hundred thousand.
SCORE_BATCH = 5000

# Where the fingerprint of the rules the stored scores were worked out with is kept
# (`synccursor`): a changed ICP file (or shipped default) rescores every account.
ICP_RULES_SOURCE = "rules:icp"


def rules_fingerprint(rules: BaseModel) -> str:
    """SHA-256 of the rules as parsed: an edit that changes nothing they mean (a comment,
    the order of keys) keeps it, one that changes a weight or threshold does not."""
    return hashlib.sha256(rules.model_dump_json().encode("utf-8")).hexdigest()


def rescore_accounts_in_db(
    engine: Engine, rules: IcpRules, everything: bool = False
) -> dict[int | None, int]:
    """Score the accounts that changed since they were last scored, or all of them when the
    rules changed since (or `everything`); returns all accounts per tier.

    One transaction, SCORE_BATCH accounts at a time in id order. A score is stored only if
    the account is still as it was read (same `updated_at`): one changed meanwhile keeps its
    older `scored_at` and is scored again next time, never left with a stale score."""
    fingerprint = rules_fingerprint(rules)
    columns = [getattr(Account, name) for name in SCORED_FIELDS]
    extra = [Account.technologies, Account.attributes, Account.tier_override, Account.updated_at]
    query = select(*columns, *extra).order_by(Account.id).limit(SCORE_BATCH)
    all_again = everything or read_cursor(engine, ICP_RULES_SOURCE) != fingerprint
    if not all_again:
        query = query.where(
            or_(Account.scored_at.is_(None), Account.updated_at >= Account.scored_at)
        )
    table = Account.__table__
    store = update_by_id(
        table,
        ["icp_score", "icp_reasons", "tier", "scored_at"],
        table.c.updated_at == bindparam("seen", type_=table.c.updated_at.type),
    )
    now = utcnow()
    with session_scope(engine) as session:
        statement = DriverStatement(store, session.connection().dialect)
        last = 0  # ids start at 1
        while rows := session.execute(query.where(Account.id > last)).mappings().all():
            updates = []
            for row in rows:
                result = score_account(row, rules)
                updates.append(
                    {
                        "_id": row["id"],
                        "seen": row["updated_at"],
                        "icp_score": result.score,
                        "icp_reasons": result.reasons,
                        "tier": result.tier,
                        "scored_at": now,
                    }
                )
            statement.execute_many(session.connection(), updates)
            last = rows[-1]["id"]
        if all_again:
            store_cursor(session, engine, ICP_RULES_SOURCE, fingerprint)
        per_tier = session.execute(select(Account.tier, func.count()).group_by(Account.tier))
        return {tier: count for tier, count in per_tier.all()}

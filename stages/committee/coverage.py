"""Step 2 of the pipeline, map: classify every contact's title into seniority, function and
committee role, and find which roles each target account still lacks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from models.db import session_scope
from models.store import rows_of_accounts, update_rows_by_id
from models.tables import Contact, utcnow
from stages.committee.titles import classify_title, load_title_table


@dataclass(frozen=True)
class Coverage:
    """Which required committee roles an account has a reachable contact for."""

    covered: tuple[str, ...]
    gaps: tuple[str, ...]

    @property
    def ratio(self) -> float:
        total = len(self.covered) + len(self.gaps)
        return len(self.covered) / total if total else 1.0


def coverage(roles_present: Iterable[str | None], required: Iterable[str]) -> Coverage:
    """Covered and missing roles, in the order the campaign lists them."""
    present = set(roles_present)
    wanted = list(dict.fromkeys(required))
    return Coverage(
        covered=tuple(role for role in wanted if role in present),
        gaps=tuple(role for role in wanted if role not in present),
    )


# Changed classifications written at a time, so new title rules over a million contacts
# never hold a million updates in memory.
CLASSIFY_BATCH = 20_000


def classify_contacts(engine: Engine, account_ids: list[int], title_rules: Path | None) -> int:
    """Re-derive seniority, function and role where they changed; returns rows updated.
    Changes are written CLASSIFY_BATCH at a time, each batch its own transaction (a rerun
    finishes what a failed one left)."""
    table = load_title_table(title_rules)
    changed: list[dict[str, Any]] = []
    written = 0
    query = select(
        Contact.account_id,
        Contact.id,
        Contact.title,
        Contact.seniority,
        Contact.function,
        Contact.role,
    )
    with engine.connect() as connection:
        for _, contact_id, title, seniority, function, role in rows_of_accounts(
            connection, query, account_ids
        ):
            result = classify_title(title, table)
            if (result.seniority, result.function, result.role) != (seniority, function, role):
                changed.append(
                    {
                        "_id": contact_id,
                        "seniority": result.seniority,
                        "function": result.function,
                        "role": result.role,
                    }
                )
            if len(changed) == CLASSIFY_BATCH:
                _write_classes(engine, changed)
                written, changed = written + len(changed), []
    _write_classes(engine, changed)
    return written + len(changed)


def _write_classes(engine: Engine, changed: list[dict[str, Any]]) -> None:
    if changed:
        with session_scope(engine) as session:
            update_rows_by_id(session, Contact, changed, updated_at=utcnow())


def committee_coverage(
    engine: Engine, account_ids: list[int], required: list[str]
) -> dict[int, Coverage]:
    """Coverage per account, counting only contacts we may still reach. The required
    roles found are bits of one int per account, and accounts with the same roles share
    one Coverage: a hundred thousand accounts cost a few MB, not a set each."""
    wanted = list(dict.fromkeys(required))
    bits = {role: 1 << index for index, role in enumerate(wanted)}
    found = dict.fromkeys(account_ids, 0)
    query = select(Contact.account_id, Contact.role).where(Contact.status == "active").distinct()
    with engine.connect() as connection:
        for account_id, role in rows_of_accounts(connection, query, account_ids):
            found[account_id] |= bits.get(role, 0)
    shared = {
        mask: coverage((role for role in wanted if mask & bits[role]), wanted)
        for mask in set(found.values())
    }
    return {account_id: shared[mask] for account_id, mask in found.items()}

"""Step 2 of the pipeline, map: classify every contact's title into seniority, function and
committee role, and find which roles each target account still lacks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from flows.stakeholders import classify_title, load_title_table
from models.db import chunked, session_scope
from models.store import update_rows_by_id
from models.tables import Contact, utcnow


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


def classify_contacts(engine: Engine, account_ids: list[int], title_rules: Path | None) -> int:
    """Re-derive seniority, function and role where they changed; returns rows updated."""
    table = load_title_table(title_rules)
    changed = []
    with engine.connect() as connection:
        for batch in chunked(account_ids, 2000):
            rows = connection.execute(
                select(
                    Contact.id, Contact.title, Contact.seniority, Contact.function, Contact.role
                ).where(Contact.account_id.in_(batch))
            )
            for contact_id, title, seniority, function, role in rows:
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
    if changed:
        with session_scope(engine) as session:
            update_rows_by_id(session, Contact, changed, updated_at=utcnow())
    return len(changed)


def committee_coverage(
    engine: Engine, account_ids: list[int], required: list[str]
) -> dict[int, Coverage]:
    """Coverage per account, counting only contacts we may still reach."""
    roles: dict[int, set[str | None]] = {account_id: set() for account_id in account_ids}
    with engine.connect() as connection:
        for batch in chunked(account_ids, 2000):
            rows = connection.execute(
                select(Contact.account_id, Contact.role)
                .where(Contact.account_id.in_(batch), Contact.status == "active")
                .distinct()
            )
            for account_id, role in rows:
                roles[account_id].add(role)
    return {account_id: coverage(present, required) for account_id, present in roles.items()}

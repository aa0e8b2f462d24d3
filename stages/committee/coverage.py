"""Step 2 of the pipeline, map: classify every contact's title into seniority, function and
committee role, and find which roles each target account still lacks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, bindparam, or_, select

from models.cursors import read_cursor, write_cursor
from models.db import session_scope
from models.store import DriverStatement, rows_of_accounts, update_by_id
from models.tables import Contact, utcnow
from stages.committee.titles import classify_title, load_title_table
from stages.targeting.scoring import rules_fingerprint


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


# Classifications written at a time, so new title rules over a million contacts never
# hold a million updates in memory.
CLASSIFY_BATCH = 20_000

# Where the fingerprint of the title table the stored classes came from is kept
# (`synccursor`): a changed table reclassifies every contact.
TITLE_RULES_SOURCE = "rules:titles"


def classify_contacts(engine: Engine, title_rules: Path | None, everything: bool = False) -> int:
    """Classify the titles of contacts changed since they were last classified, or of all
    contacts when the title table changed since (or `everything`); returns rows whose
    seniority, function or role changed.

    Every contact of every account, not only a campaign's: the table's fingerprint is one
    for the whole database. Written CLASSIFY_BATCH at a time, each batch its own transaction
    (a rerun finishes what a failed one left: the fingerprint is stored after the last). A
    class is stored only if the contact is still as it was read (same `updated_at`)."""
    table = load_title_table(title_rules)
    fingerprint = rules_fingerprint(table)
    all_again = everything or read_cursor(engine, TITLE_RULES_SOURCE) != fingerprint
    query = select(
        Contact.id,
        Contact.title,
        Contact.seniority,
        Contact.function,
        Contact.role,
        Contact.updated_at,
    ).order_by(Contact.id)
    if not all_again:
        query = query.where(
            or_(Contact.classified_at.is_(None), Contact.updated_at > Contact.classified_at)
        )
    query = query.limit(CLASSIFY_BATCH)
    changed = 0
    last = 0
    while True:
        with session_scope(engine) as session:
            rows = session.execute(query.where(Contact.id > last)).all()
            if not rows:
                break
            now = utcnow()
            updates = []
            for contact_id, title, seniority, function, role, updated_at in rows:
                result = classify_title(title, table)
                moved = (result.seniority, result.function, result.role) != (
                    seniority,
                    function,
                    role,
                )
                changed += moved
                updates.append(
                    {
                        "_id": contact_id,
                        "seen": updated_at,
                        "seniority": result.seniority,
                        "function": result.function,
                        "role": result.role,
                        # a changed class is a change of the contact; the same one is not
                        "updated_at": now if moved else updated_at,
                        "classified_at": now,
                    }
                )
            connection = session.connection()
            DriverStatement(_STORE_CLASS, connection.dialect).execute_many(connection, updates)
            last = rows[-1][0]
    if all_again:
        write_cursor(engine, TITLE_RULES_SOURCE, fingerprint)
    return changed


_CONTACT = Contact.__table__
_STORE_CLASS = update_by_id(
    _CONTACT,
    ["seniority", "function", "role", "updated_at", "classified_at"],
    _CONTACT.c.updated_at == bindparam("seen", type_=_CONTACT.c.updated_at.type),
)


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

"""The console's server-side state: sessions (by the SHA-256 of their id) and failed sign-ins
(for a rate limit that holds across server processes). Plain reads and writes; the rules
(cookies, timeouts, limits) are in abm/console/access.py."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, or_, select, update

from models.db import session_scope
from models.tables import ConsoleLoginFailure, ConsoleSession

# failures older than this are deleted as new ones come: far past any limit's window
KEEP_FAILURES = timedelta(days=1)


def id_hash(session_id: str) -> str:
    """What the table keeps of a session id: a cookie cannot be rebuilt from it."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def create_session(
    engine: Engine, session_id: str, user_name: str, credential: str, now: datetime
) -> None:
    with session_scope(engine) as session:
        session.add(
            ConsoleSession(
                id_hash=id_hash(session_id),
                user_name=user_name,
                credential=credential,
                created_at=now,
                last_seen_at=now,
            )
        )


def find_session(engine: Engine, session_id: str) -> ConsoleSession | None:
    with session_scope(engine) as session:
        row = session.get(ConsoleSession, id_hash(session_id))
        if row is not None:
            session.expunge(row)
        return row


def touch_session(engine: Engine, session_id: str, now: datetime) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id_hash == id_hash(session_id))
            .values(last_seen_at=now)
        )


def delete_session(engine: Engine, session_id: str) -> None:
    with session_scope(engine) as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash(session_id)))


def delete_stale_sessions(engine: Engine, idle_before: datetime, created_before: datetime) -> int:
    """Sessions past either timeout: they can never be used again."""
    with session_scope(engine) as session:
        result = session.execute(
            delete(ConsoleSession).where(
                (ConsoleSession.last_seen_at < idle_before)
                | (ConsoleSession.created_at < created_before)
            )
        )
        return result.rowcount or 0


def record_failure(engine: Engine, name: str, address: str, now: datetime) -> None:
    """One failed sign-in (the name as typed, cut to the column, and the client address)."""
    with session_scope(engine) as session:
        session.add(ConsoleLoginFailure(at=now, name=name[:128], address=address[:64]))
        session.execute(
            delete(ConsoleLoginFailure).where(ConsoleLoginFailure.at < now - KEEP_FAILURES)
        )


def clear_failures(engine: Engine, name: str, address: str | None = None) -> int:
    """A correct password (or `abm console unlock`): the name's earlier failures no longer
    count against it; the address's do unless it is given (one address trying many names
    stays limited). How many were forgotten."""
    condition = ConsoleLoginFailure.name == name[:128]
    if address:
        condition = or_(condition, ConsoleLoginFailure.address == address[:64])
    with session_scope(engine) as session:
        return session.execute(delete(ConsoleLoginFailure).where(condition)).rowcount or 0


def failures_since(
    engine: Engine, since: datetime, *, name: str | None = None, address: str | None = None
) -> list[datetime]:
    """When the failures since `since` for this name (or this address) happened, newest
    first (both indexed by (name, at) and (address, at))."""
    column = ConsoleLoginFailure.name if name is not None else ConsoleLoginFailure.address
    value = (name if name is not None else address or "")[:128]
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(ConsoleLoginFailure.at)
                .where(column == value, ConsoleLoginFailure.at >= since)
                .order_by(ConsoleLoginFailure.at.desc())
                .limit(1000)
            )
        )


def count_sessions(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(ConsoleSession)) or 0

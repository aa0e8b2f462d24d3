"""Where each incremental sync has read to (`synccursor`), one row per source: LinkedIn,
the monitored mailbox, each kind a CRM pull reads. A cursor is stored in the same
transaction as what was read up to it (`store_cursor`), so a failure never moves a cursor
past what was stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from models.db import session_scope
from models.store import dialect_insert
from models.tables import SyncCursor, utcnow


def read_cursor(engine: Engine, source: str) -> str | None:
    """The stored cursor of `source`, None before its first sync."""
    with engine.connect() as connection:
        return connection.execute(
            select(SyncCursor.cursor).where(SyncCursor.source == source)
        ).scalar()


def store_cursor(session: Any, engine: Engine, source: str, cursor: str) -> None:
    """Set the cursor of `source` inside the caller's transaction (session or connection)."""
    now = utcnow()
    statement = dialect_insert(engine, SyncCursor.__table__).values(
        source=source, cursor=cursor, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["source"], set_={"cursor": cursor, "updated_at": now}
        )
    )


def write_cursor(engine: Engine, source: str, cursor: str) -> None:
    """Set the cursor of `source` in a transaction of its own."""
    with session_scope(engine) as session:
        store_cursor(session, engine, source, cursor)

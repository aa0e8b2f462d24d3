"""The audit log: every operator action (pause, resume, suppression change, ...) with who
did it, with which role, when, on what and through which door (the console or the
command line). Only ever added to; read newest first, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from math import ceil

from sqlalchemy import Engine, func, select

from models.db import session_scope
from models.tables import AuditLog, utcnow

PAGE_SIZE = 50
VIA = ("console", "cli")


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditLog]
    page: int
    pages: int
    total: int


def record_action(
    engine: Engine,
    actor: str,
    action: str,
    target: str,
    detail: str | None = None,
    via: str = "console",
    *,
    role: str | None = None,
    at: datetime | None = None,
) -> None:
    """Keep one operator action: `actor` the user (console) or login name (command line),
    `action` a short verb like `campaign.pause`, `target` what it acted on (a campaign key, a
    suppression's channel; never a password), `detail` the reason given. Values too long for
    their column are cut, not refused: the action has happened and must be on record."""
    if via not in VIA:
        raise ValueError(f"via must be one of {', '.join(VIA)}")
    with session_scope(engine) as session:
        session.add(
            AuditLog(
                at=at or utcnow(),
                actor=actor[:128],
                role=role,
                action=action[:80],
                target=target[:300],
                detail=None if detail is None else detail[:2000],
                via=via,
            )
        )


def last_action(engine: Engine, action: str, target: str) -> AuditLog | None:
    """The latest `action` on `target` (who paused this campaign last, and when), or None."""
    with session_scope(engine) as session:
        row = session.scalars(
            select(AuditLog)
            .where(AuditLog.action == action, AuditLog.target == target)
            .order_by(AuditLog.at.desc(), AuditLog.id.desc())  # type: ignore[union-attr]
            .limit(1)
        ).first()
        if row is not None:
            session.expunge(row)
        return row


def audit_page(engine: Engine, page: int = 1, size: int = PAGE_SIZE) -> AuditPage:
    """One page of the log, newest first (by time, then by id for actions in the same
    instant); a page past the end is the last page."""
    with session_scope(engine) as session:
        total = session.scalar(select(func.count()).select_from(AuditLog)) or 0
        pages = max(1, ceil(total / size))
        page = min(max(1, page), pages)
        rows = list(
            session.scalars(
                select(AuditLog)
                .order_by(AuditLog.at.desc(), AuditLog.id.desc())  # type: ignore[union-attr]
                .offset((page - 1) * size)
                .limit(size)
            )
        )
        for row in rows:
            session.expunge(row)
    return AuditPage(rows, page, pages, total)

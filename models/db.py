"""The engine, sessions and migrations: one engine per process, one code path for both databases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")


class DatabaseError(Exception):
    """The database cannot be used as configured (bad URL, not migrated, unreachable)."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Up to 64 MiB of page cache per connection, used only as needed: bulk writes touch
    # indexes all over the file (a third less SQLite CPU on engagement ingest).
    cursor.execute("PRAGMA cache_size=-65536")
    # Checkpoint the WAL every 4,000 pages (16 MiB) rather than SQLite's 1,000. One webhook
    # batch of 5,000 events dirties 2,000-3,000 pages (it touches every listed person's
    # index entries), so at 1,000 every such commit also ran a checkpoint: the same hot
    # index pages copied into the database and two fsyncs per batch. With this, 1M events
    # ingest with a fifth less CPU (32 -> 26 s) and far fewer fsyncs. Durability: commits still
    # survive a crashed process. On power loss, synchronous=NORMAL could already lose the
    # commits since the last checkpoint; that window grows from ~4 MiB to ~16 MiB of changes.
    cursor.execute("PRAGMA wal_autocheckpoint=4000")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL; SQLite gets WAL and a busy timeout for concurrent tasks."""
    try:
        parsed = make_url(url)
    except Exception:
        # The parser's message quotes the part it choked on, which may be the password.
        raise DatabaseError(
            "ABM_DATABASE_URL is not a valid database URL; the form is "
            "dialect+driver://user:password@host:port/database, with @ : / ? # % in the "
            "user name or password percent-encoded"
        ) from None
    # hide_parameters: a failed statement's error (in logs, Prefect's UI, the terminal)
    # names the SQL but not the values bound to it, which are people's emails and names.
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A short unit of work: commit on success, roll back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser reads % as interpolation: a percent-encoded password (p%40ss) must be %%.
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the schema to the newest revision; returns (before, after)."""
    config = _alembic_config(engine)
    before = current_revision(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, head_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def require_current_schema(engine: Engine) -> None:
    """Fail with a clear message when `abm init` has not been run on this database."""
    try:
        current = current_revision(engine)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        password = engine.url.password
        if password:  # drivers do not echo it, but a message must never carry it
            reason = reason.replace(str(password), "***")
        raise DatabaseError(f"cannot open the database: {reason}") from None
    if current is None:
        raise DatabaseError("the database is empty: run `abm init` first")
    if current != head_revision(engine):
        raise DatabaseError("the database schema is out of date: run `abm init` to migrate it")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Slices of at most `size` items; keeps IN lists under SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]

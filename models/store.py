"""The few database functions the rest of the code calls. Bulk data goes through SQLAlchemy
core in chunks (tens of thousands of rows a second); small, rich work uses the ORM."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Row,
    Select,
    String,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from models.db import chunked, session_scope
from models.tables import (
    Account,
    Contact,
    EngagementEvent,
    LiftedSuppression,
    Suppression,
    utcnow,
)

IN_CHUNK = 2000
# From this share of all accounts, their contacts are read in one pass over the table.
WHOLE_TABLE_SHARE = 0.2


@dataclass
class UpsertCounts:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0


def dialect_insert(engine: Engine, table: Any) -> Any:
    """An INSERT that understands ON CONFLICT, on SQLite and PostgreSQL alike."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_new_rows(
    session: Any, engine: Engine, table: Any, rows: list[dict[str, Any]], unique: list[str]
) -> int:
    """Insert rows, silently keeping existing ones that clash on `unique`; returns how many
    were new (RETURNING, since executemany row counts are unreliable across drivers)."""
    if not rows:
        return 0
    statement = (
        dialect_insert(engine, table)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(table.c.id)
    )
    return len(session.execute(statement, rows).all())


def insert_new_from_select(
    session: Any, engine: Engine, table: Any, columns: list[str], rows: Any, unique: list[str]
) -> int:
    """INSERT ... SELECT, keeping existing rows that clash on `unique`; returns how many
    were new. The rows never leave the database. SQLite reports the count as the row
    count; psycopg does not for this statement, so PostgreSQL counts what RETURNING gives."""
    statement = (
        dialect_insert(engine, table)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=unique)
    )
    if engine.dialect.name == "postgresql":
        return len(session.execute(statement.returning(table.c.id)).all())
    return session.execute(statement).rowcount


EVENT_COLUMNS = (
    "provider",
    "provider_event_id",
    "type",
    "channel",
    "occurred_at",
    "account_id",
    "contact_id",
    "campaign_id",
    "message_id",
    "data",
    "created_at",
)


_NO_DATA: dict[str, Any] = {}
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
# "YYYY-MM-DD " by proleptic ordinal: formatting the date is most of the cost of the text,
# and a batch of events spans few days. Bounded; a race only computes a prefix twice.
_DAY_TEXT: dict[int, str] = {}


def sqlite_utc(value: datetime) -> str:
    """An aware datetime as `UTCDateTime` stores it on SQLite (UTC, no offset, always six
    digits of microseconds): the text SQLAlchemy's bind processors would make, made faster."""
    if value.tzinfo is not UTC:
        if value.utcoffset() is None:
            raise ValueError("Datetime values must have timezone information.")
        value = value.astimezone(UTC)
    day = _DAY_TEXT.get(ordinal := value.toordinal())
    if day is None:
        if len(_DAY_TEXT) >= 10_000:
            _DAY_TEXT.clear()
        day = _DAY_TEXT[ordinal] = f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
    two = _TWO_DIGITS
    return f"{day}{two[value.hour]}:{two[value.minute]}:{two[value.second]}.{value.microsecond:06d}"


def insert_new_events(
    session: Any, engine: Engine, events: Sequence[dict[str, Any]], now: datetime
) -> int:
    """Insert engagement events, keeping existing ones (and the first of duplicates within
    `events`) by (provider, provider_event_id); returns how many were new. Each event holds
    the EngagementEvent columns; `data` defaults to {} and `created_at` to `now`.

    SQLite: one DBAPI executemany of INSERT .. ON CONFLICT DO NOTHING with the values already
    in the form SQLAlchemy would store (datetimes as UTC text, data as JSON text), so readers
    get back the same aware datetimes and dicts; new rows are counted by sqlite3's rowcount,
    which sums changes() over the executemany (0 for a row the conflict skipped) and so needs
    neither RETURNING nor a look-up first. PostgreSQL: one statement over arrays, counted by
    RETURNING (`_insert_new_events_postgres`), exact where psycopg's executemany rowcount is
    not to be relied on."""
    if not events:
        return 0
    table = EngagementEvent.__table__
    unknown = set().union(*events).difference(EVENT_COLUMNS)
    if unknown:
        raise ValueError(f"not EngagementEvent columns: {sorted(unknown)}")
    dumps = engine.dialect._json_serializer or json.dumps
    if engine.dialect.name == "postgresql":
        return _insert_new_events_postgres(session, engine, events, now, dumps)
    if engine.dialect.name != "sqlite":
        rows = [{"data": {}, "created_at": now, **event} for event in events]
        return insert_new_rows(session, engine, table, rows, ["provider", "provider_event_id"])
    created, empty = sqlite_utc(now), dumps({})
    rows = [
        (
            event["provider"],
            event["provider_event_id"],
            event["type"],
            event["channel"],
            sqlite_utc(event["occurred_at"]),
            event.get("account_id"),
            event.get("contact_id"),
            event.get("campaign_id"),
            event.get("message_id"),
            empty if (data := event.get("data", _NO_DATA)) == _NO_DATA else dumps(data),
            sqlite_utc(event["created_at"]) if "created_at" in event else created,
        )
        for event in events
    ]
    quote = engine.dialect.identifier_preparer.quote
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, EVENT_COLUMNS))}) "
        f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
        "ON CONFLICT (provider, provider_event_id) DO NOTHING"
    )
    return session.connection().exec_driver_sql(statement, rows).rowcount


# The PostgreSQL type of each of EVENT_COLUMNS, for the arrays `unnest` reads.
_EVENT_ARRAY_TYPES = (
    "varchar[]",
    "varchar[]",
    "varchar[]",
    "varchar[]",
    "timestamptz[]",
    "int[]",
    "int[]",
    "int[]",
    "varchar[]",
    "json[]",
    "timestamptz[]",
)


def _insert_new_events_postgres(
    session: Any, engine: Engine, events: Sequence[dict[str, Any]], now: datetime, dumps: Any
) -> int:
    """`insert_new_events` on PostgreSQL: one INSERT .. SELECT FROM unnest(one array a
    column) ON CONFLICT DO NOTHING, counting the rows it returns. A multi-row VALUES statement
    has eleven parameters an event, which psycopg parsed anew on every call (a third of a
    1,000-event webhook's time); this one has eleven whatever the batch, and unnest keeps the
    events' order, so the first of duplicates within them is the one kept."""
    empty = dumps({})
    columns: list[list[Any]] = [[] for _ in EVENT_COLUMNS]
    for event in events:
        data = event.get("data", _NO_DATA)
        values = (
            event["provider"],
            event["provider_event_id"],
            event["type"],
            event["channel"],
            event["occurred_at"],
            event.get("account_id"),
            event.get("contact_id"),
            event.get("campaign_id"),
            event.get("message_id"),
            empty if data == _NO_DATA else dumps(data),
            event.get("created_at", now),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    quote = engine.dialect.identifier_preparer.quote
    arrays = ", ".join(f"%s::{kind}" for kind in _EVENT_ARRAY_TYPES)
    statement = (
        f"WITH new AS (INSERT INTO {quote(EngagementEvent.__table__.name)} "
        f"({', '.join(map(quote, EVENT_COLUMNS))}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING 1) "
        "SELECT count(*) FROM new"
    )
    return session.connection().exec_driver_sql(statement, tuple(columns)).scalar_one()


def upsert_events(
    session: Any, engine: Engine, events: Iterable[dict[str, Any]], now: datetime
) -> tuple[UpsertCounts, set[int]]:
    """Store events keyed by (provider, provider_event_id) whose values a source may correct
    (intent signals: a re-exported week with a new score): new ones are inserted, those
    whose time, account or data changed are updated, the rest left alone. Returns the
    counts and the accounts whose events were inserted or changed (before and after), for
    the caller to roll up in the same transaction. `events` (any iterable: they are read
    IN_CHUNK at a time) hold no key twice."""
    counts = UpsertCounts()
    touched: set[int] = set()
    pending = iter(events)
    while batch := list(itertools.islice(pending, IN_CHUNK)):
        by_provider: dict[str, list[str]] = {}
        for event in batch:
            by_provider.setdefault(event["provider"], []).append(event["provider_event_id"])
        existing: dict[tuple[str, str], Row] = {}
        for provider, keys in by_provider.items():
            for row in session.execute(_events_by_key(engine, provider, keys)):
                existing[(provider, row[0])] = row
        new, changed = [], []
        for event in batch:
            row = existing.get((event["provider"], event["provider_event_id"]))
            if row is None:
                new.append(event)
                if event.get("account_id") is not None:
                    touched.add(event["account_id"])
                continue
            values = (event.get("account_id"), event["occurred_at"], event.get("data") or {})
            if (row.account_id, row.occurred_at, row.data or {}) == values:
                counts.unchanged += 1
                continue
            changed.append(
                {
                    "_id": row.id,
                    "account_id": values[0],
                    "occurred_at": values[1],
                    "data": values[2],
                }
            )
            touched.update(a for a in (row.account_id, values[0]) if a is not None)
        counts.imported += insert_new_events(session, engine, new, now)
        update_rows_by_id(session, EngagementEvent, changed)
        counts.updated += len(changed)
    return counts, touched


def _events_by_key(engine: Engine, provider: str, keys: list[str]) -> Select:
    """provider_event_id, id, account_id, occurred_at and data of the events of `provider`
    with these keys. On PostgreSQL the keys are joined as an array, one index look-up each:
    with `IN (...)` the planner, whose statistics do not yet know the rows a long import
    added in its own transaction, reads every event of the provider and compares it with
    every key (minutes for 100,000 signals)."""
    table = EngagementEvent.__table__
    columns = (
        table.c.provider_event_id,
        table.c.id,
        table.c.account_id,
        table.c.occurred_at,
        table.c.data,
    )
    if engine.dialect.name != "postgresql":
        return select(*columns).where(
            table.c.provider == provider, table.c.provider_event_id.in_(keys)
        )
    array = bindparam("keys", keys, type_=postgresql.ARRAY(String))
    wanted = func.unnest(array).table_valued("key").render_derived(name="wanted")
    return select(*columns).join_from(
        wanted,
        table,
        and_(table.c.provider == provider, table.c.provider_event_id == wanted.c.key),
    )


def rows_of_accounts(
    connection: Connection, query: Select, account_ids: Sequence[int]
) -> Iterator[Row]:
    """The rows of `query` (whose first column is an account id) for these accounts.

    A few accounts are looked up by index, IN_CHUNK at a time. Past WHOLE_TABLE_SHARE of
    all accounts, one pass over the table, filtered here, is several times faster: by
    index each row costs a seek, and SQLite may pick a less selective index (contact
    status, say) and scan most of the table once per chunk, which grows with the square
    of the table."""
    if not account_ids:
        return
    accounts = connection.execute(select(func.count()).select_from(Account)).scalar_one()
    if len(account_ids) < accounts * WHOLE_TABLE_SHARE:
        column = query.selected_columns[0]
        for batch in chunked(account_ids, IN_CHUNK):
            yield from connection.execute(query.where(column.in_(batch)))
        return
    wanted = set(account_ids)
    # streamed (a server-side cursor on PostgreSQL), not the whole table in memory at once
    for row in connection.execute(query.execution_options(yield_per=IN_CHUNK * 10)):
        if row[0] in wanted:
            yield row


def update_rows_by_id(
    session: Any,
    model: type,
    rows: list[dict[str, Any]],
    *conditions: Any,
    **constants: Any,
) -> None:
    """One executemany UPDATE: each row dict holds `_id` and the new column values (the
    same columns in every row); `conditions` narrow the WHERE, `constants` set fixed values."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "_id"]
    connection = session.connection()
    statement = update_by_id(model.__table__, columns, *conditions, **constants)
    DriverStatement(statement, connection.dialect).execute_many(connection, rows)


def update_by_id(table: Any, columns: Sequence[str], *conditions: Any, **constants: Any) -> Any:
    """UPDATE `table` SET each of `columns` from the parameter of its name, and the
    `constants`, WHERE id = the `_id` parameter and `conditions` hold."""
    return (
        update(table)
        .where(table.c.id == bindparam("_id"), *conditions)
        .values(**{name: bindparam(name) for name in columns}, **constants)
    )


class DriverStatement:
    """A statement compiled once and run on the driver's own cursor, for statements run once
    per message (SMTP sends one message per ledger commit) or once per row of a bulk write:
    SQLAlchemy's per-execution and per-row work (parameter building, result set-up) costs
    more than SQLite's. Values still pass through the columns' own type conversions; values
    bound when the statement was built (a claim token, a campaign id) and the columns' fixed
    defaults are kept. Runs inside the caller's transaction on `connection`."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a DriverStatement cannot expand IN lists; use connection.execute")
        self.sql = str(compiled)
        defaults = dict(compiled.params)
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            default = column.onupdate if compiled.isupdate else column.default
            if not default.is_scalar:
                raise ValueError(f"{column.name}: its default is computed per row; pass it")
            defaults[column.key] = default.arg
        self.converters = {
            name: converter
            for bind, name in compiled.bind_names.items()
            if (converter := bind.type.dialect_impl(dialect).bind_processor(dialect))
        }
        # converted once here, not once per row
        self.fixed = {name: self._converted(name, value) for name, value in defaults.items()}
        self.order = list(compiled.positiontup or ()) if compiled.positional else None

    def _converted(self, name: str, value: Any) -> Any:
        convert = self.converters.get(name)
        return value if convert is None else convert(value)

    def _parameters(self, values: dict[str, Any]) -> Any:
        merged = self.fixed.copy()
        converters = self.converters
        for name, value in values.items():
            convert = converters.get(name)
            merged[name] = value if convert is None else convert(value)
        return merged if self.order is None else tuple(merged[name] for name in self.order)

    def execute(self, connection: Connection, values: dict[str, Any]) -> int:
        """Run once with `values`; returns the driver's row count."""
        cursor = connection.connection.cursor()
        try:
            cursor.execute(self.sql, self._parameters(values))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def execute_many(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Run once per row of `rows` (executemany)."""
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(self.sql, [self._parameters(row) for row in rows])
        finally:
            cursor.close()


def _merged(existing: dict[str, Any], record: dict[str, Any], fields: Sequence[str]) -> dict:
    """Values after applying a file record: blanks in the file never erase what we know."""
    merged: dict[str, Any] = {}
    for field in fields:
        value = record.get(field)
        if field == "attributes":
            merged[field] = {**(existing.get(field) or {}), **(value or {})}
        elif value in (None, "", []):
            merged[field] = existing.get(field)
        else:
            merged[field] = value
    return merged


def _upsert(
    engine: Engine,
    model: type,
    key: str,
    records: list[dict[str, Any]],
    fields: Sequence[str],
) -> UpsertCounts:
    """Insert new rows and update changed ones by natural key; unchanged rows are not touched."""
    counts = UpsertCounts()
    with session_scope(engine) as session:
        _upsert_in(session, model, key, records, fields, counts, utcnow())
    return counts


def _upsert_in(
    session: Any,
    model: type,
    key: str,
    records: Sequence[dict[str, Any]],
    fields: Sequence[str],
    counts: UpsertCounts,
    now: datetime,
) -> None:
    """`_upsert` inside the caller's transaction, adding to `counts`."""
    columns = [getattr(model, name) for name in (key, *fields)]
    for batch in chunked(records, IN_CHUNK):
        keys = [record[key] for record in batch]
        existing = {
            row[1]: row
            for row in session.execute(
                select(model.id, *columns).where(getattr(model, key).in_(keys))
            )
        }
        inserts, updates = [], []
        for record in batch:
            row = existing.get(record[key])
            if row is None:
                new = _merged({}, record, fields)
                new.update({key: record[key], "created_at": now, "updated_at": now})
                new["attributes"] = new.get("attributes") or {}
                inserts.append(new)
                continue
            current = dict(zip((key, *fields), row[1:], strict=True))
            merged = _merged(current, record, fields)
            if any(merged[field] != current[field] for field in fields):
                updates.append({"_id": row[0], **merged, "updated_at": now})
            else:
                counts.unchanged += 1
        if inserts:
            rows = _with_defaults(model, inserts)
            table = model.__table__
            insert = table.insert().values({name: bindparam(name) for name in rows[0]})
            connection = session.connection()
            DriverStatement(insert, connection.dialect).execute_many(connection, rows)
        update_rows_by_id(session, model, updates)
        counts.imported += len(inserts)
        counts.updated += len(updates)


def _with_defaults(model: type, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Core inserts skip Python-side defaults; fill the JSON list columns every row needs."""
    json_lists = [name for name in ("technologies", "icp_reasons") if name in model.__table__.c]
    for row in rows:
        for name in json_lists:
            if row.get(name) is None:
                row[name] = []
    return rows


ACCOUNT_FIELDS = (
    "name",
    "industry",
    "employees",
    "annual_revenue",
    "country",
    "technologies",
    "tier_override",
    "attributes",
)
CONTACT_FIELDS = (
    "account_id",
    "first_name",
    "last_name",
    "title",
    "linkedin_url",
    "country",
    "timezone",
    "consent",
    "seniority",
    "function",
    "role",
    "attributes",
)


def upsert_accounts(engine: Engine, records: list[dict[str, Any]]) -> UpsertCounts:
    """Upsert accounts by domain (records as the importing stage parses them)."""
    return _upsert(engine, Account, "domain", records, ACCOUNT_FIELDS)


def upsert_contacts(engine: Engine, records: list[dict[str, Any]]) -> UpsertCounts:
    """Upsert contacts by email; each record names its `account_domain`, which must exist."""
    ids = account_ids_by_domain(engine, {record["account_domain"] for record in records})
    rows = [{**record, "account_id": ids[record["account_domain"]]} for record in records]
    counts = _upsert(engine, Contact, "email", rows, CONTACT_FIELDS)
    apply_suppressions(engine)
    return counts


class ContactBatches:
    """Upserts contacts a batch at a time inside one transaction, for an import that streams
    its file: see `contact_batches`."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.counts = UpsertCounts()
        self.now = utcnow()

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Upsert `records` as `upsert_contacts` would, setting each one's `account_id`; an
        email must not come back in a later call (the caller merges duplicates first, so
        each contact is counted once)."""
        ids = _account_ids(self.session, {record["account_domain"] for record in records})
        for record in records:
            record["account_id"] = ids[record["account_domain"]]
        _upsert_in(self.session, Contact, "email", records, CONTACT_FIELDS, self.counts, self.now)


@contextmanager
def contact_batches(engine: Engine) -> Iterator[ContactBatches]:
    """One transaction for all the batches of an import: it commits when the block ends and
    rolls back if it raises, so a file that fails half-way leaves nothing written. As with
    `upsert_contacts`, suppressions are applied once the contacts are in."""
    with session_scope(engine) as session:
        yield ContactBatches(session)
    apply_suppressions(engine)


def account_ids_by_domain(engine: Engine, domains: Iterable[str]) -> dict[str, int]:
    with engine.connect() as connection:
        return _account_ids(connection, domains)


def _account_ids(executor: Any, domains: Iterable[str]) -> dict[str, int]:
    """Account id by domain, on a connection or inside a session's transaction."""
    found: dict[str, int] = {}
    for batch in chunked(sorted(set(domains)), IN_CHUNK):
        rows = executor.execute(select(Account.domain, Account.id).where(Account.domain.in_(batch)))
        found.update(dict(rows.all()))
    return found


def known_domains(engine: Engine) -> set[str]:
    """Every account domain, for checking contacts before they are written."""
    with engine.connect() as connection:
        return set(connection.execute(select(Account.domain)).scalars())


def add_suppressions(engine: Engine, records: list[dict[str, Any]], source: str = "import") -> int:
    """Store suppressions (existing ones are kept as they are) and apply them to contacts."""
    added = 0
    now = utcnow()
    with session_scope(engine) as session:
        for batch in chunked(records, IN_CHUNK):
            rows = [
                {
                    "kind": r["kind"],
                    "value": r["value"],
                    "channel": r.get("channel") or "all",
                    "reason": r.get("reason") or None,
                    "source": source,
                    "created_at": now,
                }
                for r in batch
            ]
            added += insert_new_rows(
                session, engine, Suppression.__table__, rows, ["kind", "value", "channel"]
            )
    apply_suppressions(engine)
    return added


def email_domain(engine: Engine) -> Any:
    """SQL for the part of `contact.email` after the @, on SQLite and PostgreSQL."""
    if engine.dialect.name == "sqlite":
        return func.substr(Contact.email, func.instr(Contact.email, "@") + 1)
    return func.split_part(Contact.email, "@", 2)


def contacts_by_email(engine: Engine, emails: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(contact id, account id) by email, for the emails that are known contacts."""
    found: dict[str, tuple[int, int]] = {}
    with engine.connect() as connection:
        for batch in chunked(sorted(set(emails)), IN_CHUNK):
            rows = connection.execute(
                select(Contact.email, Contact.id, Contact.account_id).where(
                    Contact.email.in_(batch)
                )
            )
            found.update(
                {email: (contact_id, account_id) for email, contact_id, account_id in rows.all()}
            )
    return found


def apply_suppressions(engine: Engine) -> int:
    """Mark active contacts whose email or domain is suppressed for email as `suppressed`."""
    with session_scope(engine) as session:
        return _apply_suppressions_in(session, engine)


def _held_by(engine: Engine, kind: str, value: Any) -> Any:
    """SQL: the contact's email (kind `email`), or its account's or its email's domain
    (kind `domain`), is `value` (a value, or a subquery of values)."""
    if kind == "email":
        return Contact.email.in_(value) if isinstance(value, Select) else Contact.email == value
    account_domain = select(Account.domain).where(Account.id == Contact.account_id)
    if isinstance(value, Select):
        return or_(account_domain.scalar_subquery().in_(value), email_domain(engine).in_(value))
    return or_(account_domain.scalar_subquery() == value, email_domain(engine) == value)


def _apply_suppressions_in(session: Any, engine: Engine) -> int:
    """`apply_suppressions` inside the caller's transaction."""
    channels = ("all", "email")
    email_hit = select(Suppression.value).where(
        Suppression.kind == "email", Suppression.channel.in_(channels)
    )
    domain_hit = select(Suppression.value).where(
        Suppression.kind == "domain", Suppression.channel.in_(channels)
    )
    result = session.execute(
        update(Contact)
        .where(Contact.status == "active")
        .where(or_(_held_by(engine, "email", email_hit), _held_by(engine, "domain", domain_hit)))
        .values(status="suppressed", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# An unsubscribe is the person's own withdrawal of consent. The engagement rollup records one
# with the reason `unsubscribed`; lists imported from elsewhere word it their own way.
UNSUBSCRIBE_WORDS = ("unsubscrib", "opt-out", "opt out", "opted out", "optout", "opted-out")
SUPPRESSION_FIELDS = ("kind", "value", "channel", "reason", "source", "created_at")
LIFT_FIELDS = ("lifted_by", "lift_reason", "person_asked", "contacts_reactivated", "lifted_at")


def is_unsubscribe(reason: str | None) -> bool:
    """Whether a suppression's reason records an unsubscribe (or an opt-out): those are
    lifted only at the person's own request, never by an operator's clean-up."""
    text = (reason or "").casefold()
    return any(word in text for word in UNSUBSCRIBE_WORDS)


class SuppressionNotFound(LookupError):
    """No suppression of that value (on that channel) to lift."""


class UnsubscribeNotLifted(PermissionError):
    """The suppressions to lift include an unsubscribe and the person did not ask."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        said = ", ".join(f"{r['value']} on channel {r['channel']} ({r['reason']})" for r in rows)
        super().__init__(f"an unsubscribe: {said}")


def _filters(model: Any, kind: str | None, channel: str | None, search: str | None) -> list[Any]:
    """Conditions on a suppression table: this kind, this channel, and a case-insensitive
    search in the value or the reason (`%` and `_` in it match themselves)."""
    conditions = []
    if kind:
        conditions.append(model.kind == kind)
    if channel:
        conditions.append(model.channel == channel)
    if search and search.strip():
        text = search.strip().casefold()
        conditions.append(
            or_(
                func.lower(model.value).contains(text, autoescape=True),
                func.lower(func.coalesce(model.reason, "")).contains(text, autoescape=True),
            )
        )
    return conditions


def suppression_rows(
    engine: Engine,
    kind: str | None = None,
    channel: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The suppressions in force, by kind, value and channel; each says whether it is an
    unsubscribe (`abm suppressions list`; the console asks for a page of them)."""
    query = (
        select(*(getattr(Suppression, name) for name in SUPPRESSION_FIELDS))
        .where(*_filters(Suppression, kind, channel, search))
        .order_by(Suppression.kind, Suppression.value, Suppression.channel)
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    for row in rows:
        row["unsubscribe"] = is_unsubscribe(row["reason"])
    return rows


def lifted_suppression_rows(
    engine: Engine,
    kind: str | None = None,
    channel: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Every lifted suppression as it was, with who lifted it, when and why; newest first."""
    columns = (*SUPPRESSION_FIELDS, *LIFT_FIELDS)
    query = (
        select(*(getattr(LiftedSuppression, name) for name in columns))
        .where(*_filters(LiftedSuppression, kind, channel, search))
        .order_by(LiftedSuppression.lifted_at.desc(), LiftedSuppression.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def count_suppressions(
    engine: Engine,
    kind: str | None = None,
    channel: str | None = None,
    search: str | None = None,
    lifted: bool = False,
) -> int:
    """How many rows `suppression_rows` (or, `lifted`, `lifted_suppression_rows`) would
    list without a limit: the console's pages need the total."""
    model = LiftedSuppression if lifted else Suppression
    query = select(func.count()).select_from(model).where(*_filters(model, kind, channel, search))
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def statuses_freed(row: dict[str, Any], person_asked: bool) -> set[str]:
    """The contact statuses this suppression alone may have set, which lifting it undoes.

    A LinkedIn-only suppression sets none. Email and domain suppressions set `suppressed`;
    a bounce recorded by the engagement rollup sets `bounced`. `unsubscribed` is undone only
    for one person's own address, and only when that person asked."""
    if row["channel"] not in ("all", "email"):
        return set()
    freed = {"suppressed"}
    if row["kind"] == "email" and row["reason"] == "bounced":
        freed.add("bounced")
    if row["kind"] == "email" and person_asked and is_unsubscribe(row["reason"]):
        freed.add("unsubscribed")
    return freed


def lift_suppressions(
    engine: Engine,
    kind: str,
    value: str,
    channel: str | None,
    lifted_by: str,
    reason: str,
    person_asked: bool = False,
) -> list[dict[str, Any]]:
    """Lift the suppressions of one value (on one channel, or all of them), in one
    transaction: each is kept in `liftedsuppression` with who, when and why, and the people
    it alone held are active again (those another suppression still holds stay suppressed).

    Takes one value, never a list: an unsubscribe among them raises UnsubscribeNotLifted
    unless `person_asked` (that person asked to hear from us again), and nothing changes.
    Returns the history rows written."""
    query = select(Suppression).where(Suppression.kind == kind, Suppression.value == value)
    with session_scope(engine) as session:
        found = session.execute(query.order_by(Suppression.channel)).scalars().all()
        chosen = [row for row in found if channel is None or row.channel == channel]
        if not chosen:
            elsewhere = ", ".join(row.channel for row in found)
            where = f" on channel {channel}" if channel else ""
            also = f"; it is suppressed on channel {elsewhere}" if elsewhere else ""
            raise SuppressionNotFound(f"no suppression of {value}{where}{also}")
        originals = [{name: getattr(row, name) for name in SUPPRESSION_FIELDS} for row in chosen]
        unsubscribes = [row for row in originals if is_unsubscribe(row["reason"])]
        if unsubscribes and not person_asked:
            raise UnsubscribeNotLifted(unsubscribes)
        lifted = []
        for row, original in zip(chosen, originals, strict=True):
            session.delete(row)
            session.flush()
            reactivated = _reactivate(session, engine, original, person_asked)
            history = LiftedSuppression(
                **original,
                lifted_by=lifted_by,
                lift_reason=reason,
                person_asked=person_asked,
                contacts_reactivated=reactivated,
            )
            session.add(history)
            session.flush()
            lifted.append(
                {name: getattr(history, name) for name in (*SUPPRESSION_FIELDS, *LIFT_FIELDS)}
            )
    return lifted


def _reactivate(session: Any, engine: Engine, lifted: dict[str, Any], person_asked: bool) -> int:
    """Make the people the lifted suppression held active, then suppress again those another
    suppression still holds; returns how many are active now."""
    freed = statuses_freed(lifted, person_asked)
    if not freed:
        return 0
    ids = list(
        session.execute(
            select(Contact.id).where(
                Contact.status.in_(sorted(freed)),
                _held_by(engine, lifted["kind"], lifted["value"]),
            )
        ).scalars()
    )
    for batch in chunked(ids, IN_CHUNK):
        session.execute(
            update(Contact)
            .where(Contact.id.in_(batch))
            .values(status="active", updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    _apply_suppressions_in(session, engine)
    active = 0
    for batch in chunked(ids, IN_CHUNK):
        active += session.execute(
            select(func.count()).where(Contact.id.in_(batch), Contact.status == "active")
        ).scalar_one()
    return active

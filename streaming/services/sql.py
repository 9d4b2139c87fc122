"""Raw SQL that the ORM would write slower: a statement per batch, one parameter per value.

`bulk_update` builds and compiles a CASE per row and field, which cost a loaded worker a
tenth of its CPU; an UPDATE joined to a VALUES list costs one parameter per value. The
statements run unchanged on PostgreSQL and SQLite: both name the columns of a VALUES
list column1, column2… They go through `batch_cursor`, which numbers their parameters.
"""

import functools
from collections.abc import Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg.postgres import types

TIMESTAMPTZ_OID = types["timestamptz"].oid


class BatchCursor:
    """A cursor for statements of many `%s` parameters: see `batch_cursor`."""

    def __init__(self, cursor: CursorWrapper, *, numbered: bool) -> None:
        self.cursor = cursor
        self.numbered = numbered

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.cursor.execute(numbered(sql) if self.numbered else sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.cursor.fetchall()


@contextmanager
def batch_cursor() -> Iterator[BatchCursor]:
    """Open a cursor for a batch statement, whose parameters are numbered here rather than by the driver.

    psycopg finds a statement's `%s` placeholders with a regular expression, and keeps what
    it found only for statements of at most 50 parameters. A round's batch statements have
    hundreds, and each batch size makes a text of its own: parsed anew every time, they cost
    a loaded worker over a quarter of a round's CPU. On PostgreSQL the placeholders become
    `$1, $2, …` with one split of the text, and the statement goes to a psycopg `RawCursor`,
    which sends it as it is, with Django's checks, error classes and time zone. On SQLite,
    and while Django logs queries (DEBUG, or a test counting them: it logs a statement by
    quoting its parameters into its `%s`), the statement goes to Django's cursor as it is.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or db.queries_logged:
        with db.cursor() as cursor:
            yield BatchCursor(cursor, numbered=False)
        return
    # What BaseDatabaseWrapper.cursor() and the PostgreSQL backend's create_cursor() do, for this class.
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = psycopg.RawCursor(db.connection)
    if db.timezone != db.connection.adapters.get_loader(TIMESTAMPTZ_OID, psycopg.pq.Format.TEXT).timezone:
        register_tzloader(db.timezone, raw)
    db.validate_thread_sharing()
    with CursorWrapper(raw, db) as cursor:
        yield BatchCursor(cursor, numbered=True)


def numbered(sql: str) -> str:
    """Return `sql` with its `%s` placeholders written `$1, $2, …`, as PostgreSQL numbers parameters."""
    first, *rest = sql.split("%s")
    text = first + "".join(f"${number}{part}" for number, part in enumerate(rest, start=1))
    assert "%" not in text, "only %s placeholders: psycopg would read %% as one %, PostgreSQL as two"
    return text


def update_from_values(
    model: type[models.Model],
    *,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    assignments: str,
    params: Sequence[Any] = (),
    casts: Mapping[str, str] | None = None,
) -> None:
    """Update `model`'s rows from `rows` in one statement, each row matched on its first value.

    `columns` names each row's values, in order; the first names the table's column
    the rows are matched on. In `assignments`, the SET clause, `{name}` stands for a
    row's value, cast to its type in `casts` if it has one: in PostgreSQL a column of
    NULLs (say, no reply had an error) has no type of its own. `params` fill the
    clause's `%s`.
    """
    if not rows:
        return
    casts = casts or {}
    values = {}
    for number, name in enumerate(columns, start=1):
        values[name] = f"new.column{number}"
        if name in casts:
            values[name] = f"CAST({values[name]} AS {casts[name]})"
    rows_sql, rows_params = values_sql(rows)
    with batch_cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET {assignments.format(**values)} "
            f"FROM ({rows_sql}) AS new WHERE {columns[0]} = new.column1",
            [*params, *rows_params],
        )


def objects_insert(objects: Sequence[models.Model]) -> None:
    """INSERT new instances of one model in one statement, as `bulk_create` would, without reading back ids.

    For rows whose primary key is set before saving (a UUID) or never read back (a chunk's
    id). Fields are prepared as `save` prepares them: `pre_save` (auto_now_add) and the
    field's own conversion; a generated column is left to the database.
    """
    model = type(objects[0])
    # Not through `django.db.connection`: each field's preparation asks the connection, and the
    # proxy's per-thread lookup cost more than the preparation itself.
    db = connections[DEFAULT_DB_ALIAS]
    fields = [
        field
        for field in model._meta.concrete_fields
        if not field.generated and not (field.primary_key and isinstance(field, models.AutoField))
    ]
    rows = [[field.get_db_prep_save(field.pre_save(obj, add=True), db) for field in fields] for obj in objects]
    rows_sql, params = values_sql(rows)
    columns = []
    for field in fields:
        assert field.column is not None, f"{field.name} is a concrete field: it has a column"
        columns.append(db.ops.quote_name(field.column))
    with batch_cursor() as cursor:
        cursor.execute(f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) {rows_sql}", params)
    for obj in objects:
        obj._state.adding, obj._state.db = False, db.alias


def values_sql(rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """Return a `VALUES (%s, …), …` list of `rows` and its parameters, in order."""
    row_sql = f"({placeholders(rows[0])})"
    return f"VALUES {', '.join([row_sql] * len(rows))}", [value for row in rows for value in row]


def placeholders(values: Sized) -> str:
    """Return one `%s` per value, comma-separated."""
    return ", ".join(["%s"] * len(values))


def db_id(model: type[models.Model], pk: Any) -> Any:
    """Return a primary key as the database takes it in raw SQL."""
    if isinstance(pk, UUID):
        return db_uuid(pk)
    return model._meta.pk.get_db_prep_value(pk, connection)


def db_uuid(value: UUID | None) -> Any:
    """Return a UUID as a UUIDField gives it to the database: as it is where the type is native, else its hex.

    A worker's round converts several per reply. The field's own conversion asks the
    connection each time, and reaching it through `django.db.connection` (a per-thread
    lookup) cost ten times the conversion.
    """
    return value if value is None or _native_uuids() else value.hex


@functools.cache
def _native_uuids() -> bool:
    # The process has one database, whose kind does not change while it runs.
    return bool(connection.features.has_native_uuid_field)


def db_time(value: datetime) -> Any:
    """Return a datetime as the database takes it in raw SQL."""
    return connection.ops.adapt_datetimefield_value(value)


def returned_uuid(value: Any) -> UUID:
    """Return a UUID primary key that a RETURNING clause gave: a UUID (PostgreSQL) or its hex (SQLite)."""
    return value if isinstance(value, UUID) else UUID(value)

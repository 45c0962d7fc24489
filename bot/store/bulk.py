"""Many-row INSERT below the ORM, for the tracker's first poll of thousands of issues.

``session.execute(insert(table), rows)`` runs every bind processor of every column for
every row (JSON dumps, the UTC timestamp type, booleans) in Python before the DBAPI sees
a value: most of the tracker's time on a 10,000-issue first poll (bench/poll.py). Here
values that are the same for the whole batch are encoded once, per-row values go through
the same SQLAlchemy bind processors (so they are stored exactly as Core would store
them), JSON columns may be given as text already serialised, and rows go out as
multi-row ``INSERT ... VALUES (...), (...)`` statements: one database call per few
hundred rows, during which the driver releases the GIL (see :class:`BackgroundWriter`).
Supported dialects: SQLite (``qmark``) and PostgreSQL via psycopg (``%s``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from bot.errors import StoreError
from bot.store.models import UtcDateTime

log = logging.getLogger(__name__)

# Under SQLite's default bound-parameter limit (32,766 since 3.32) and PostgreSQL's 65,535.
_MAX_PARAMS = 32_000
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Statement:
    """One SQL text with its positional parameters, ready for the DBAPI."""

    sql: str
    params: tuple[Any, ...]


def insert_statements(
    dialect: Dialect,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    constants: Mapping[str, Any] | None = None,
    json_text: Collection[str] = (),
) -> list[Statement]:
    """Multi-row INSERTs of ``rows`` (values for the ``varying`` columns, in order).

    Every row also gets ``constants`` (column → Python value, encoded once). Columns in
    ``json_text`` must be varying JSON columns whose values are already JSON text; they
    are stored as given. Unknown columns raise KeyError, a row of the wrong width
    ValueError, before anything is sent.
    """
    if not rows:
        return []
    fixed = dict(constants or {})
    overlap = set(varying) & set(fixed)
    if overlap:
        raise ValueError(f"columns both varying and constant: {sorted(overlap)}")
    for name in json_text:
        if name not in varying:
            raise ValueError(f"json_text column {name!r} is not a varying column")
    placeholder = _PLACEHOLDERS.get(dialect.paramstyle)
    if placeholder is None:
        raise NotImplementedError(f"unsupported paramstyle {dialect.paramstyle!r}")
    procs = [None if name in json_text else _processor(table, name, dialect) for name in varying]
    tail = [_encode(_processor(table, name, dialect), value) for name, value in fixed.items()]
    names = [*varying, *fixed]
    quote = dialect.identifier_preparer.quote
    # Only quoted identifiers from the table's metadata reach the text; values are bound.
    columns = ", ".join(quote(n) for n in names)
    head = f"INSERT INTO {quote(table.name)} ({columns}) VALUES "  # noqa: S608
    group = f"({', '.join([placeholder] * len(names))})"
    per_statement = max(1, _MAX_PARAMS // len(names))
    out: list[Statement] = []
    for start in range(0, len(rows), per_statement):
        part = rows[start : start + per_statement]
        params = _encode_rows(procs, part, tail)
        out.append(Statement(head + ", ".join([group] * len(part)), tuple(params)))
    return out


def insert_many(
    session: Session,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    constants: Mapping[str, Any] | None = None,
    json_text: Collection[str] = (),
) -> None:
    """Insert ``rows`` now, in the session's transaction (see :func:`insert_statements`).

    The ORM identity map does not learn about the rows.
    """
    connection = session.connection()
    statements = insert_statements(
        connection.dialect, table, varying, rows, constants=constants, json_text=json_text
    )
    for statement in statements:
        _execute(connection, statement)


def _execute(connection: Connection, statement: Statement) -> None:
    try:
        connection.exec_driver_sql(statement.sql, statement.params)
    except DBAPIError as exc:
        # SQLAlchemy's message carries the whole statement and its parameters: hundreds
        # of rows of issue text. The driver's own first line says what went wrong.
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        kind = type(exc.orig).__name__
        raise StoreError(f"bulk insert failed: {kind}: {detail}"[:500]) from exc


class BackgroundWriter:
    """Runs prepared statements on the session's connection in one worker thread.

    The caller keeps building the next batch (HTTP reads, validation) while the database
    works: SQLite and psycopg release the GIL for the whole of a multi-row INSERT. The
    connection is used by one thread at a time: call :meth:`wait` before touching the
    session again. Leaving the ``with`` block waits for the last write and joins the
    thread; a write's exception is raised from :meth:`wait`, :meth:`submit` or the exit.
    """

    def __init__(self, session: Session) -> None:
        self._connection: Connection = session.connection()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-insert")
        self._pending: Future[None] | None = None

    def submit(self, statements: list[Statement]) -> None:
        """Wait for the previous write, then start writing ``statements``."""
        self.wait()
        if statements:
            self._pending = self._pool.submit(self._run, statements)

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; re-raise its exception."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _run(self, statements: list[Statement]) -> None:
        for statement in statements:
            _execute(self._connection, statement)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.wait()
            else:
                try:
                    self.wait()
                except Exception as write_error:  # the caller's exception wins
                    log.warning("bulk insert failed while unwinding: %r", write_error)
        finally:
            self._pool.shutdown(wait=True)


def sqlite_utc_text(value: datetime | None) -> str | None:
    """What SQLAlchemy's SQLite bind processor makes of a :class:`UtcDateTime` value
    (UTC, no offset, always six fractional digits), in one C call instead of four
    Python ones. Equality with SQLAlchemy's output is pinned by a test."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _processor(table: Table, name: str, dialect: Dialect) -> Processor | None:
    column = table.columns[name]  # KeyError for a column the table does not have
    if dialect.name == "sqlite" and isinstance(column.type, UtcDateTime):
        return sqlite_utc_text
    proc: Processor | None = column.type.dialect_impl(dialect).bind_processor(dialect)
    return proc


def _encode(proc: Processor | None, value: Any) -> Any:
    return proc(value) if proc is not None else value


def _encode_rows(
    procs: list[Processor | None], rows: Sequence[Sequence[Any]], tail: list[Any]
) -> list[Any]:
    """All rows' values, encoded, flattened in statement order."""
    width = len(procs)
    active = [(i, p) for i, p in enumerate(procs) if p is not None]
    flat: list[Any] = []
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row has {len(row)} values for {width} columns")
        if active:
            values = list(row)
            for i, proc in active:
                values[i] = proc(values[i])
            flat += values
        else:
            flat += row
        flat += tail
    return flat

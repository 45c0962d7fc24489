"""Many-row INSERT for SQLite, below SQLAlchemy, for the tracker's first-seen issues.

Why it exists (issue #11: keep a hand version only where it is more than 1.3x faster than
what SQLAlchemy does itself, measured in the same run): ``bench/bulk_insert.py`` writes
the tracker's first-seen rows every way on both stores. On SQLite every SQLAlchemy
route was slower than this module (run of 2026-12-01, time over this module's at
100 / 1k / 10k rows): ORM ``insert(Model)`` executemany 2.16 / 2.01 / 2.05, Core
executemany 1.89 / 2.08 / 1.88, Core with ``raw`` pre-serialised 1.76 / 1.80 / 1.83, the
same without the all-NULL columns 1.46 / 1.49 / 1.48, Core's multi-row
``insert().values([...])`` 17 / 23 / 21. The cost is SQLAlchemy
running every column's bind processor for every row (the UTC timestamp type's two
Python layers above all). On PostgreSQL SQLAlchemy's insertmanyvalues is 1.4 / 3.0 / 2.6x
faster than the same hand statements, so the tracker uses SQLAlchemy there
(``bot.pipeline.track``) and this module is SQLite only.

What it does: values that are the same for the whole batch are encoded once, per-row
values go through the same bind processors SQLAlchemy would use (so rows read back
exactly as Core's would), JSON columns may be given as text already serialised, and rows
go out as multi-row ``INSERT ... VALUES (?, ...), (?, ...)`` statements under SQLite's
bound-parameter limit. Writes run on the caller's thread: the former background writer
thread did not measurably help on SQLite (``bench/poll.py`` poll_ratio 0.68 with it,
0.81 and 0.60 without, same day).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from bot.errors import StoreError
from bot.store.models import UtcDateTime

# Under SQLite's default bound-parameter limit (32,766 since 3.32).
_MAX_PARAMS = 32_000

Processor = Callable[[object], object]


@dataclass(frozen=True)
class Statement:
    """One SQL text with its positional parameters, ready for the DBAPI."""

    sql: str
    params: tuple[object, ...]


def insert_statements(
    dialect: Dialect,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    constants: Mapping[str, object] | None = None,
    json_text: Collection[str] = (),
) -> list[Statement]:
    """Multi-row INSERTs of ``rows`` (values for the ``varying`` columns, in order).

    Every row also gets ``constants`` (column → Python value, encoded once). Columns in
    ``json_text`` must be varying JSON columns whose values are already JSON text; they
    are stored as given. Unknown columns raise KeyError, a row of the wrong width
    ValueError, a dialect other than SQLite NotImplementedError, before anything is sent.
    """
    if dialect.name != "sqlite":
        raise NotImplementedError(f"bulk insert is for SQLite only, not {dialect.name!r}")
    if not rows:
        return []
    fixed = dict(constants or {})
    overlap = set(varying) & set(fixed)
    if overlap:
        raise ValueError(f"columns both varying and constant: {sorted(overlap)}")
    for name in json_text:
        if name not in varying:
            raise ValueError(f"json_text column {name!r} is not a varying column")
    procs = [None if name in json_text else _processor(table, name, dialect) for name in varying]
    tail = [_encode(_processor(table, name, dialect), value) for name, value in fixed.items()]
    names = [*varying, *fixed]
    quote = dialect.identifier_preparer.quote
    # Only quoted identifiers from the table's metadata reach the text; values are bound.
    columns = ", ".join(quote(n) for n in names)
    head = f"INSERT INTO {quote(table.name)} ({columns}) VALUES "  # noqa: S608
    group = f"({', '.join(['?'] * len(names))})"
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
    rows: Sequence[Sequence[object]],
    *,
    constants: Mapping[str, object] | None = None,
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


def sqlite_utc_text(value: object) -> object:
    """What SQLAlchemy's SQLite bind processor makes of a :class:`UtcDateTime` value
    (UTC, no offset, always six fractional digits), in one C call instead of four
    Python ones. Equality with SQLAlchemy's output is pinned by a test."""
    if not isinstance(value, datetime):
        if value is not None:
            raise TypeError(f"{type(value).__name__} given for a UTC timestamp column")
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _processor(table: Table, name: str, dialect: Dialect) -> Processor | None:
    column = table.columns[name]  # KeyError for a column the table does not have
    if isinstance(column.type, UtcDateTime):
        return sqlite_utc_text
    proc: Processor | None = column.type.dialect_impl(dialect).bind_processor(dialect)
    return proc


def _encode(proc: Processor | None, value: object) -> object:
    return proc(value) if proc is not None else value


def _encode_rows(
    procs: list[Processor | None], rows: Sequence[Sequence[object]], tail: list[object]
) -> list[object]:
    """All rows' values, encoded, flattened in statement order."""
    width = len(procs)
    active = [(i, p) for i, p in enumerate(procs) if p is not None]
    flat: list[object] = []
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

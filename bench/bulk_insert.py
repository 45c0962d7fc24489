"""First-seen issues into the store: the hand multi-row INSERT against SQLAlchemy's own.

What is measured is the tracker's write of first-seen issues (``bot.pipeline.track``):
from validated ``SentryIssue`` objects to committed ``tracked_issue`` rows plus one
``transition`` ("first polled") per issue, in batches of 500 like the tracker. The
tracker looks the ids up first and inserts only the unknown ones, so every way is a
plain INSERT (no ON CONFLICT) into tables that do not hold the ids yet, and every way
writes the same values (the other columns NULL or their constant).

- ``hand``: on SQLite ``bot.store.bulk.insert_many``, what the tracker uses there;
  on PostgreSQL (which that module refuses) the same statements built here with ``%s``.
  Constant columns encoded once, per-row values through SQLAlchemy's bind processors,
  ``raw`` as JSON text serialised by pydantic, multi-row ``INSERT … VALUES (…), (…)``
  statements of at most 32,000 parameters, run with ``exec_driver_sql``.
- ``orm``: ``session.execute(insert(TrackedIssue), rows)`` with dicts (``raw`` a dict the
  JSON type serialises), SQLAlchemy's executemany / insertmanyvalues path; what the
  tracker uses on PostgreSQL.
- ``core``: the same rows through Core's ``insert(table)``, without the ORM bulk layer.
- ``core_values``: Core's multi-row ``insert(table).values([...])``, chunked under the
  parameter limit (SQLAlchemy builds the statement).
- ``core_text``: ``core`` with ``raw`` pre-serialised by pydantic and bound as text.
- ``core_lean``: ``core_text`` without the columns that are NULL for every new issue.

Each (store, size) runs every way once per round, ``REPS`` rounds, on emptied tables
(emptying not timed); the figure is the median. Stores: a SQLite file and a scratch
PostgreSQL database on 127.0.0.1:5432 (``BENCH_PG_ADMIN`` to change), dropped at the end.

Run: ``.venv/bin/python bench/bulk_insert.py``; the last lines are the headline figures:
``bulk_sqlite_hand_vs_sqlalchemy_<size>`` (the ORM way's time over the hand way's, above
1 = hand faster), ``bulk_sqlite_hand_vs_best_sqlalchemy_<size>`` (the fastest
SQLAlchemy way's), ``bulk_pg_sqlalchemy_vs_hand_<size>`` (hand over ORM, above 1 =
SQLAlchemy faster), and ``bulk_path_<store>``: the path the tracker takes there.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import JSON, Column, MetaData, Table, TypeDecorator, delete, insert
from sqlalchemy.engine import Connection, Dialect
from sqlmodel import Session

from bot.clock import FakeClock
from bot.pipeline.track import _BATCH as BATCH
from bot.pipeline.track import _MIRRORED, _NEW_ROW_DEFAULTS, _mirror
from bot.pipeline.track import _NEW_VARYING as _VARYING
from bot.sentry.models import SentryIssue
from bot.store.bulk import insert_many
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue, Transition, UtcDateTime
from bot.testing import FakeSentry

REPS = 7
SIZES = (100, 1_000, 10_000)
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_MAX_PARAMS = 32_000

_TABLE: Table = TrackedIssue.__table__  # type: ignore[attr-defined]
_TRANSITIONS: Table = Transition.__table__  # type: ignore[attr-defined]
# The tracker's own row shape: the same columns, constants and text bounds it writes.
_DEFAULTS: dict[str, object] = {**_NEW_ROW_DEFAULTS, "created_at": NOW, "updated_at": NOW}
_TRANSITION_CONSTANTS: dict[str, object] = {
    "from_state": None,
    "to_state": LifecycleState.NEW.value,
    "at": NOW,
}


def issues(n: int) -> list[SentryIssue]:
    """``n`` realistic issues (FakeSentry's list shape, ~1 KB of JSON each)."""
    fake = FakeSentry(clock=FakeClock(NOW))
    out = []
    for i in range(n):
        seen = NOW - timedelta(minutes=i % 2880)
        raw = fake.add_issue(
            project="api",
            title=f"Error: failure number {i} in handler {i % 97}",
            culprit=f"app.handlers.h{i % 97} in run",
            lastSeen=seen,
            firstSeen=seen - timedelta(days=i % 30),
        )
        out.append(SentryIssue.model_validate(raw))
    return out


def _reason(issue: SentryIssue) -> str:
    return f"first polled ({issue.count} events, {issue.user_count} users)"


# --- the hand way (bot/store/bulk.py; its PostgreSQL form, which the bot no longer has) --

Processor = Callable[[object], object]


def _sqlite_utc_text(value: object) -> object:
    if not isinstance(value, datetime):
        return value
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _processor(conn: Connection, table: Table, name: str) -> Processor | None:
    dialect = conn.dialect
    column = table.columns[name]
    if dialect.name == "sqlite" and isinstance(column.type, UtcDateTime):
        return _sqlite_utc_text
    proc: Processor | None = column.type.dialect_impl(dialect).bind_processor(dialect)
    return proc


def _hand_insert(
    conn: Connection,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[object]],
    constants: Mapping[str, object],
    json_text: Sequence[str] = (),
) -> None:
    if not rows:
        return
    placeholder = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    procs = [None if n in json_text else _processor(conn, table, n) for n in varying]
    tail = []
    for name, value in constants.items():
        proc = _processor(conn, table, name)
        tail.append(proc(value) if proc is not None else value)
    names = [*varying, *constants]
    quote = conn.dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) VALUES "  # noqa: S608
    group = f"({', '.join([placeholder] * len(names))})"
    active = [(i, p) for i, p in enumerate(procs) if p is not None]
    per_statement = max(1, _MAX_PARAMS // len(names))
    for start in range(0, len(rows), per_statement):
        part = rows[start : start + per_statement]
        flat: list[object] = []
        for row in part:
            values = list(row)
            for i, proc in active:
                values[i] = proc(values[i])
            flat += values
            flat += tail
        conn.exec_driver_sql(head + ", ".join([group] * len(part)), tuple(flat))


_SERIALIZER = SentryIssue.__pydantic_serializer__


def write_hand(session: Session, batch: list[SentryIssue]) -> None:
    """The tracker's first-seen write through bot.store.bulk (SQLite), or the same
    statements built here (PostgreSQL)."""
    conn = session.connection()
    rows = [(i.id, *_mirror(i), _SERIALIZER.to_json(i, by_alias=True).decode()) for i in batch]
    firsts = [(i.id, _reason(i)) for i in batch]
    if conn.dialect.name == "sqlite":
        insert_many(session, _TABLE, _VARYING, rows, constants=_DEFAULTS, json_text=("raw",))
        insert_many(
            session, _TRANSITIONS, ("issue_id", "reason"), firsts, constants=_TRANSITION_CONSTANTS
        )
        return
    _hand_insert(conn, _TABLE, _VARYING, rows, _DEFAULTS, json_text=("raw",))
    _hand_insert(conn, _TRANSITIONS, ("issue_id", "reason"), firsts, _TRANSITION_CONSTANTS)


# --- SQLAlchemy's way -------------------------------------------------------------------


def write_orm(session: Session, batch: list[SentryIssue]) -> None:
    """The same rows through ``session.execute(insert(Model), rows)``."""
    rows = [
        {
            **_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": i.model_dump(mode="json", by_alias=True),
        }
        for i in batch
    ]
    session.execute(insert(TrackedIssue), rows)
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(Transition), firsts)


def write_core(session: Session, batch: list[SentryIssue]) -> None:
    """The same rows through Core's ``insert(table)`` (no ORM bulk layer)."""
    rows = [
        {
            **_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": i.model_dump(mode="json", by_alias=True),
        }
        for i in batch
    ]
    session.execute(insert(_TABLE), rows)
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(_TRANSITIONS), firsts)


# SQLite's bound-parameter limit is 32,766 (since 3.32); PostgreSQL's 65,535.
_VALUES_ROWS = _MAX_PARAMS // len(_TABLE.columns)


def write_core_values(session: Session, batch: list[SentryIssue]) -> None:
    """Core's multi-row VALUES: ``insert(table).values([row, ...])`` (SQLAlchemy builds the
    statement, no hand SQL), in chunks under the parameter limit."""
    rows = [
        {
            **_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": i.model_dump(mode="json", by_alias=True),
        }
        for i in batch
    ]
    for at in range(0, len(rows), _VALUES_ROWS):
        session.execute(insert(_TABLE).values(rows[at : at + _VALUES_ROWS]))
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(_TRANSITIONS).values(firsts))


class JsonText(TypeDecorator[str]):
    """The JSON column, bound from JSON text already serialised (no ``json.dumps``); on
    PostgreSQL still cast to JSON by SQLAlchemy's psycopg dialect."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


# The same table for SQLAlchemy, except that ``raw`` takes JSON text. A separate
# MetaData: this is a second view of the migrated table, never created from here.
_TEXT_TABLE = Table(
    _TABLE.name,
    MetaData(),
    *(Column(c.name, JsonText() if c.name == "raw" else c.type) for c in _TABLE.columns),
)


def write_core_text(session: Session, batch: list[SentryIssue]) -> None:
    """Core executemany with ``raw`` pre-serialised by pydantic (one native call per issue)
    instead of ``model_dump`` + the JSON type's ``json.dumps``; the compiled statement and
    its bind processors come from SQLAlchemy's statement cache."""
    rows = [
        {
            **_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": _SERIALIZER.to_json(i, by_alias=True).decode(),
        }
        for i in batch
    ]
    session.execute(insert(_TEXT_TABLE), rows)
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(_TRANSITIONS), firsts)


def write_core_values_text(session: Session, batch: list[SentryIssue]) -> None:
    """Core's multi-row VALUES with ``raw`` pre-serialised (both of the above)."""
    rows = [
        {
            **_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": _SERIALIZER.to_json(i, by_alias=True).decode(),
        }
        for i in batch
    ]
    for at in range(0, len(rows), _VALUES_ROWS):
        session.execute(insert(_TEXT_TABLE).values(rows[at : at + _VALUES_ROWS]))
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(_TRANSITIONS).values(firsts))


_SET_DEFAULTS = {k: v for k, v in _DEFAULTS.items() if v is not None}


def write_core_lean(session: Session, batch: list[SentryIssue]) -> None:
    """Core executemany, ``raw`` pre-serialised, and the columns that are NULL for every
    new issue left out of the statement (the database's NULL, no per-row processor)."""
    rows = [
        {
            **_SET_DEFAULTS,
            **dict(zip(_MIRRORED, _mirror(i), strict=True)),
            "id": i.id,
            "raw": _SERIALIZER.to_json(i, by_alias=True).decode(),
        }
        for i in batch
    ]
    session.execute(insert(_TEXT_TABLE), rows)
    firsts = [{**_TRANSITION_CONSTANTS, "issue_id": i.id, "reason": _reason(i)} for i in batch]
    session.execute(insert(_TRANSITIONS), firsts)


WAYS: dict[str, Callable[[Session, list[SentryIssue]], None]] = {
    "hand": write_hand,
    "orm": write_orm,
    "core": write_core,
    "core_values": write_core_values,
    "core_text": write_core_text,
    "core_lean": write_core_lean,
}


def _write_once(store: Store, way: str, data: list[SentryIssue]) -> float:
    """Seconds for one write of ``data`` (batches of BATCH, one commit) on emptied tables."""
    write = WAYS[way]
    with store.session() as session:
        session.execute(delete(Transition))
        session.execute(delete(TrackedIssue))
    start = time.perf_counter()
    with store.session() as session:
        for at in range(0, len(data), BATCH):
            write(session, data[at : at + BATCH])
    elapsed = time.perf_counter() - start
    with store.session() as session:
        written = (
            session.connection().exec_driver_sql("SELECT count(*) FROM tracked_issue").scalar()
        )
    assert written == len(data), (way, written, len(data))
    return elapsed


def time_ways(store: Store, ways: Sequence[str], data: list[SentryIssue]) -> dict[str, float]:
    """Median milliseconds per way over ``REPS`` rounds; each round runs every way once,
    in turn, so a load spike on this shared machine hits all ways alike."""
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(REPS):
        for way in ways:
            times[way].append(_write_once(store, way, data))
    return {way: statistics.median(t) * 1000 for way, t in times.items()}


def _pg_db(name: str, *, drop: bool) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def main() -> None:
    data = {n: issues(n) for n in SIZES}
    pg_name = f"bench_bulk_{os.getpid()}"
    stores = os.environ.get("BENCH_STORES", "sqlite,pg").split(",")
    headline: list[str] = []
    details: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bulk.db'}"}
        if "pg" in stores:
            urls["pg"] = _pg_db(pg_name, drop=False)
        try:
            for store_name, url in urls.items():
                store = Store(url)
                store.upgrade()
                for n in SIZES:
                    ms = time_ways(store, list(WAYS), data[n])
                    label = f"{n // 1000}k" if n >= 1000 else str(n)
                    cells = ", ".join(f"{way} {t:7.1f}" for way, t in ms.items())
                    print(f"{store_name} {n:>6} rows (ms): {cells}", flush=True)
                    best = min(t for way, t in ms.items() if way != "hand")
                    for way, t in ms.items():
                        if way != "hand":
                            details.append(
                                f"bulk_{store_name}_{way}_over_hand_{label}: {t / ms['hand']:.2f}"
                            )
                    if store_name == "sqlite":
                        headline.append(
                            f"bulk_sqlite_hand_vs_sqlalchemy_{label}: {ms['orm'] / ms['hand']:.2f}"
                        )
                        headline.append(
                            f"bulk_sqlite_hand_vs_best_sqlalchemy_{label}: {best / ms['hand']:.2f}"
                        )
                    else:
                        headline.append(
                            f"bulk_pg_sqlalchemy_vs_hand_{label}: {ms['hand'] / ms['orm']:.2f}"
                        )
                store.dispose()
        finally:
            if "pg" in urls:
                _pg_db(pg_name, drop=True)
    headline.append("bulk_path_sqlite: hand (bot.store.bulk.insert_many)")
    headline.append("bulk_path_pg: sqlalchemy (session.execute(insert(Model), rows))")
    print("\n".join(details))
    print("\n".join(headline))


if __name__ == "__main__":
    main()

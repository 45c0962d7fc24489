"""``retention_cleanup``'s settings and the statements it runs, per engine.

PostgreSQL gets its own statements (``FOR UPDATE SKIP LOCKED``, ``DELETE ... RETURNING``
on ``= ANY(ids)``); MySQL/MariaDB and SQLite share portable ones. Every statement is
composed with psycopg.sql from checked identifiers; values are binds. See
:mod:`bot.actions.retention` for what a run promises.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql
from pydantic import Field

from bot.actions.base import ActionSettings
from bot.actions.target import Ident, TargetConnection, ident
from bot.errors import RemediationError


class RetentionSettings(ActionSettings):
    table: Ident
    timestamp_column: Ident
    id_column: Ident = "id"
    older_than_days: int = Field(ge=1, le=36_500)
    batch_size: int = Field(default=1_000, ge=1, le=50_000)
    pause_ms: int = Field(default=200, ge=0, le=60_000)
    archive_table: Ident | None = None
    # Only clean a table that has grown past this many rows (RB-04: "If > 1M rows").
    min_table_rows: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Statements:
    """The statements one dialect needs, composed from checked identifiers."""

    cutoff: sql.Composed
    count_old: sql.Composed
    count_new: sql.Composed
    lock_batch: sql.Composed
    lock_after: sql.Composed
    delete_batch: sql.Composed
    columns: sql.Composed
    count_all: sql.Composed
    # DELETE ... RETURNING (PostgreSQL, MariaDB, SQLite 3.35+); MySQL has none.
    returning: bool = True


def _pg(s: RetentionSettings) -> Statements:
    table, ts, pk = ident(s.table), ident(s.timestamp_column), ident(s.id_column)
    return Statements(
        cutoff=sql.SQL("SELECT now() - make_interval(days => {d}) AS cutoff").format(
            d=sql.Placeholder("days")
        ),
        count_old=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} < {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        count_new=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} >= {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        # Oldest first, by the timestamp index a retention table has; rows a writer
        # holds are skipped, never waited on.
        lock_batch=sql.SQL(
            "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c}"
            " ORDER BY {ts} LIMIT {n} FOR UPDATE SKIP LOCKED"
        ).format(pk=pk, t=table, ts=ts, c=sql.Placeholder("cutoff"), n=sql.Placeholder("n")),
        # Keyset: the next batch starts at the last timestamp of the one before, as an
        # index range, so it never re-walks the entries earlier batches left dead
        # (without it every batch scans them all again: quadratic in the batches).
        lock_after=sql.SQL(
            "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c} AND {ts} >= {a}"
            " ORDER BY {ts} LIMIT {n} FOR UPDATE SKIP LOCKED"
        ).format(
            pk=pk,
            t=table,
            ts=ts,
            c=sql.Placeholder("cutoff"),
            n=sql.Placeholder("n"),
            a=sql.Placeholder("after_ts"),
        ),
        # The cutoff is re-checked: a row is deleted only if it is still old.
        delete_batch=sql.SQL(
            "DELETE FROM {t} WHERE {pk} = ANY({ids}) AND {ts} < {c} RETURNING {ts} AS ts"
        ).format(t=table, pk=pk, ids=sql.Placeholder("ids"), ts=ts, c=sql.Placeholder("cutoff")),
        count_all=sql.SQL("SELECT count(*) AS n FROM {t}").format(t=table),
        columns=sql.SQL(
            "SELECT attname AS name FROM pg_attribute WHERE attrelid = {t}::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
        ).format(t=sql.Placeholder("table")),
    )


def _portable(conn: TargetConnection, s: RetentionSettings) -> Statements:
    """MySQL/MariaDB and SQLite: the same statements with the engine's clock, locking
    clause and list membership. SQLite (D1) timestamps are ``datetime('now')`` text and
    the cutoff is that same text, so ``<`` compares them in time order and uses the
    timestamp index; the file's write lock (``BEGIN IMMEDIATE``) stands in for row locks."""
    table, ts, pk = ident(s.table), ident(s.timestamp_column), ident(s.id_column)
    d = conn.dialect
    sqlite = d.name == "sqlite"
    cutoff = (
        "SELECT datetime('now', '-' || %(days)s || ' days') AS cutoff"
        if sqlite
        else "SELECT NOW(6) - INTERVAL %(days)s DAY AS cutoff"
    )
    batch = (
        "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c}{after}"
        " ORDER BY {ts} LIMIT {n} {lock}"
    )
    keyset = sql.SQL(" AND {} >= {}").format(ts, sql.Placeholder("after_ts"))
    returning = d.name != "mysql"
    columns = (
        "SELECT name FROM pragma_table_xinfo(%(table)s) WHERE hidden = 0 ORDER BY cid"
        if sqlite
        else "SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %(table)s"
        " AND EXTRA NOT LIKE '%%GENERATED%%' ORDER BY ORDINAL_POSITION"
    )
    return Statements(
        cutoff=sql.Composed([sql.SQL(cutoff)]),
        count_old=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} < {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        count_new=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} >= {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        lock_batch=sql.SQL(batch).format(
            pk=pk,
            ts=ts,
            t=table,
            c=sql.Placeholder("cutoff"),
            after=sql.SQL(""),
            n=sql.Placeholder("n"),
            lock=d.skip_locked,
        ),
        lock_after=sql.SQL(batch).format(
            pk=pk,
            ts=ts,
            t=table,
            c=sql.Placeholder("cutoff"),
            after=keyset,
            n=sql.Placeholder("n"),
            lock=d.skip_locked,
        ),
        delete_batch=sql.SQL("DELETE FROM {t} WHERE {in_ids} AND {ts} < {c}{ret}").format(
            t=table,
            in_ids=d.member(pk, "ids"),
            ts=ts,
            c=sql.Placeholder("cutoff"),
            # Bare column: SQLite's RETURNING takes no alias-qualified names.
            ret=sql.SQL(" RETURNING {} AS ts").format(ts) if returning else sql.SQL(""),
        ),
        count_all=sql.SQL("SELECT count(*) AS n FROM {t}").format(t=table),
        columns=sql.Composed([sql.SQL(columns)]),
        returning=returning,
    )


def archive_sql(conn: TargetConnection, s: RetentionSettings, columns: list[str]) -> sql.Composed:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL("INSERT INTO {archive} ({cols}) SELECT {cols} FROM {t} WHERE {in_ids}").format(
        archive=ident(s.archive_table or ""),
        cols=cols,
        t=ident(s.table),
        in_ids=conn.dialect.member(ident(s.id_column), "ids"),
    )


def statements_for(conn: TargetConnection, s: RetentionSettings) -> Statements:
    if conn.dialect.name == "postgresql":
        return _pg(s)
    if conn.dialect.name in ("mysql", "mariadb", "sqlite"):
        return _portable(conn, s)
    raise RemediationError(
        f"retention_cleanup has no {conn.dialect.name} statements", target=conn.dialect.name
    )

""":class:`~bot.actions.dialect.SqlDialect` for SQLite (and Cloudflare D1's schemas).

- catalog: ``pragma_table_info`` (declared types, ``NOT NULL``, the primary key's
  columns in order; an ``INTEGER PRIMARY KEY`` is the rowid and never NULL);
- casts follow SQLite's own affinity rules for the declared type (sqlite.org/datatype3,
  "Determination Of Column Affinity"): INTEGER, TEXT and REAL affinities cast to
  themselves; NUMERIC and BLOB affinities take the value as it is, because
  ``CAST('2026-03-01 12:00:00' AS NUMERIC)`` is 2026 and the column's own affinity
  already stores a number-looking text as a number;
- time: timestamps are TEXT as D1 writes them with ``datetime('now')`` (UTC,
  ``YYYY-MM-DD HH:MM:SS``); they are compared through ``julianday()``, which reads that
  form and ISO-8601 with ``T``, fractions or ``Z`` alike, against the database's own
  ``'now'``; ``now`` writes ``datetime('now')``; an "interval" column holds seconds;
- no sessions (``session_gone`` is refused) and no row locks: the adapter's
  ``BEGIN IMMEDIATE`` holds the file's write lock for the whole run, so candidates
  cannot change under it;
- no writable CTEs: the transition takes its portable path (a SELECT under the write
  lock, then an UPDATE per group by primary key).
"""

from __future__ import annotations

from psycopg import sql

from bot.actions.dialect import Column, Function, SessionMatch, Table
from bot.actions.target import TargetConnection, check_identifier
from bot.errors import RemediationError

_TABLE_SQL = (
    'SELECT name, type AS type_sql, "notnull" AS not_null, pk AS pk_position'
    " FROM pragma_table_info(%(table)s, %(schema)s) ORDER BY cid"
)


def affinity(type_sql: str) -> str:
    """SQLite's column affinity for a declared type (its rules, in their order)."""
    t = type_sql.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t.strip():
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


class SqliteDialect:
    """The transition's dialect for SQLite (see the module doc)."""

    name = "sqlite"
    # No writable CTEs / UPDATE ... RETURNING here: the transition's portable path.
    update_returning = False
    lock_clause: sql.Composable = sql.SQL("")

    def table(self, conn: TargetConnection, table: str) -> Table:
        schema, _, bare = check_identifier(table).rpartition(".")
        rows = conn.fetch_all(_TABLE_SQL, {"table": bare, "schema": schema or "main"})
        if not rows:
            raise RemediationError(f"table {table} does not exist on the target", table=table)
        pk = sorted((r["pk_position"], r["name"]) for r in rows if r["pk_position"])
        rowid = (
            len(pk) == 1
            and affinity(next(str(r["type_sql"]) for r in rows if r["name"] == pk[0][1]))
            == "INTEGER"
        )
        return Table(
            name=table,
            columns={
                str(r["name"]): Column(
                    str(r["name"]),
                    str(r["type_sql"]),
                    not r["not_null"] and not (rowid and r["pk_position"]),
                )
                for r in rows
            },
            primary_key=tuple(str(name) for _, name in pk),
        )

    def function(self, conn: TargetConnection, name: str, nargs: int) -> Function:
        raise RemediationError(
            f"call: a queue's own SQL function is supported on PostgreSQL only ({name})",
            function=name,
        )

    def cast(self, value: sql.Composable, type_sql: str) -> sql.Composable:
        kind = "TEXT" if type_sql == "text" else affinity(type_sql)
        if kind in ("NUMERIC", "BLOB"):
            return value
        return sql.SQL("CAST({} AS {})").format(value, sql.SQL(kind))

    def now(self) -> sql.Composable:
        return sql.SQL("datetime('now')")

    def older_than(self, ts: sql.Composable, seconds: sql.Composable) -> sql.Composable:
        return sql.SQL("julianday({}) < julianday('now') - ({}) / 86400.0").format(ts, seconds)

    def lease_expired(self, started: sql.Composable, interval: sql.Composable) -> sql.Composable:
        return sql.SQL("julianday({}) + ({}) / 86400.0 < julianday('now')").format(
            started, interval
        )

    def session_gone(self, owner: sql.Composable, match: SessionMatch) -> sql.Composable:
        raise RemediationError("session_gone: SQLite has no server sessions to look up")


SQLITE = SqliteDialect()

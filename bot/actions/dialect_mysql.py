""":class:`~bot.actions.dialect.SqlDialect` for MySQL 8 / MariaDB 10.6+.

- catalog: ``information_schema.COLUMNS`` (``COLUMN_TYPE`` is the column's own spelling:
  ``enum('queued','running')``, ``datetime(6)``, ``bigint(20) unsigned``) and the
  ``PRIMARY`` constraint's ``KEY_COLUMN_USAGE``, in the connection's database unless
  the table is ``schema.table``;
- casts: MySQL's ``CAST`` takes a handful of target types, so each column type maps to
  the nearest one (``SIGNED``/``UNSIGNED``, ``DECIMAL(p,s)``, ``DATETIME(n)``, ``DATE``,
  ``TIME(n)``, ``DOUBLE``, ``JSON`` on MySQL, else ``CHAR``); the column then converts on
  assignment, and in the session's strict mode a value it cannot hold is an error;
- time: ``NOW(6)``, compared with ``DATETIME(6)``/``TIMESTAMP`` columns in the session's
  time zone (the server's default, as the application's own sessions see it unless they
  set ``time_zone``); an "interval" column of a lease holds seconds;
- sessions: ``information_schema.PROCESSLIST`` by connection id (``pid``); MySQL and
  MariaDB keep no application name outside performance_schema, so that match is refused;
- no writable CTEs and no ``UPDATE ... RETURNING``: the transition takes its portable
  path (a locked SELECT, then an UPDATE per group by primary key).
"""

from __future__ import annotations

import re

from psycopg import sql

from bot.actions.dialect import Column, Function, SessionMatch, Table
from bot.actions.target import TargetConnection, check_identifier
from bot.errors import RemediationError

_TABLE_SQL = """
SELECT c.COLUMN_NAME AS name, c.COLUMN_TYPE AS type_sql, c.IS_NULLABLE AS nullable,
       k.ORDINAL_POSITION AS pk_position
  FROM information_schema.COLUMNS AS c
  LEFT JOIN information_schema.KEY_COLUMN_USAGE AS k
    ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME
   AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY'
 WHERE c.TABLE_SCHEMA = COALESCE(%(schema)s, DATABASE()) AND c.TABLE_NAME = %(table)s
 ORDER BY c.ORDINAL_POSITION
"""

_INT = re.compile(r"^(tiny|small|medium|big)?int(eger)?\b|^year\b|^bit\b")
_DECIMAL = re.compile(r"^(decimal|numeric|dec|fixed)\s*(\(\s*\d+\s*(,\s*\d+\s*)?\))?")
_FLOAT = re.compile(r"^(float|double|real)\b")
_TEMPORAL = re.compile(r"^(datetime|timestamp|time)\s*(\(\s*(\d)\s*\))?")


def cast_target(type_sql: str, *, mariadb: bool) -> str:
    """The ``CAST(... AS <target>)`` nearest to a column type (see the module doc)."""
    t = type_sql.strip().lower()
    if t == "text":
        return "CHAR"
    if _INT.match(t):
        return "UNSIGNED" if "unsigned" in t else "SIGNED"
    m = _DECIMAL.match(t)
    if m:
        return "DECIMAL" + (m.group(2) or "").replace(" ", "")
    if _FLOAT.match(t):
        return "DOUBLE"
    m = _TEMPORAL.match(t)
    if m:
        kind = "TIME" if m.group(1) == "time" else "DATETIME"
        return f"{kind}({m.group(3)})" if m.group(3) else kind
    if t.startswith("date"):
        return "DATE"
    if t == "json" and not mariadb:
        return "JSON"
    if "binary" in t or "blob" in t:
        return "BINARY"
    return "CHAR"  # char, varchar, text, enum, set, MariaDB's json (longtext)


class MySqlDialect:
    """The transition's dialect for MySQL / MariaDB (see the module doc)."""

    # No writable CTEs / UPDATE ... RETURNING here: the transition's portable path.
    update_returning = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._mariadb = name == "mariadb"
        # MariaDB 10.6+ / MySQL 8.0.1+ (the adapter's Dialect says FOR UPDATE on older
        # servers; the transition's portable path needs SKIP LOCKED).
        self.lock_clause: sql.Composable = sql.SQL("FOR UPDATE SKIP LOCKED")

    def table(self, conn: TargetConnection, table: str) -> Table:
        schema, _, bare = check_identifier(table).rpartition(".")
        rows = conn.fetch_all(_TABLE_SQL, {"schema": schema or None, "table": bare})
        if not rows:
            raise RemediationError(f"table {table} does not exist on the target", table=table)
        pk = sorted((r["pk_position"], r["name"]) for r in rows if r["pk_position"] is not None)
        return Table(
            name=table,
            columns={
                str(r["name"]): Column(str(r["name"]), str(r["type_sql"]), r["nullable"] == "YES")
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
        target = cast_target(type_sql, mariadb=self._mariadb)
        return sql.SQL("CAST({} AS {})").format(value, sql.SQL(target))

    def now(self) -> sql.Composable:
        return sql.SQL("NOW(6)")

    def older_than(self, ts: sql.Composable, seconds: sql.Composable) -> sql.Composable:
        return sql.SQL("{} < TIMESTAMPADD(MICROSECOND, -ROUND({} * 1000000), NOW(6))").format(
            ts, seconds
        )

    def lease_expired(self, started: sql.Composable, interval: sql.Composable) -> sql.Composable:
        # No interval type: the lease column holds seconds.
        return sql.SQL("TIMESTAMPADD(MICROSECOND, ROUND({} * 1000000), {}) < NOW(6)").format(
            interval, started
        )

    def session_gone(self, owner: sql.Composable, match: SessionMatch) -> sql.Composable:
        if match != "pid":
            raise RemediationError(
                f"session_gone by {match} needs performance_schema on {self.name}; "
                "match sessions by pid (the connection id) instead"
            )
        return sql.SQL(
            "NOT EXISTS (SELECT 1 FROM information_schema.PROCESSLIST AS a"
            " WHERE CAST(a.ID AS CHAR) = CAST({} AS CHAR))"
        ).format(owner)


MYSQL = MySqlDialect("mysql")
MARIADB = MySqlDialect("mariadb")

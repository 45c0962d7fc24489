"""The dialect seam of the state transition: the few things that differ between engines.

:mod:`bot.actions.transition` composes ONE statement per batch from a playbook's
``set`` / staleness / cap settings. Everything engine-specific it needs goes through a
:class:`SqlDialect`, found by :func:`dialect_for` from the connection's
``conn.dialect.name``:

- :meth:`SqlDialect.table` reads the catalog: each column's own type and nullability, and
  the primary key (rows are identified by it, never by a physical address such as
  PostgreSQL's ``ctid``, which is only unique per partition);
- :meth:`SqlDialect.cast` turns a bound value (always sent as text) into the column's own
  type (enum, domain, jsonb, timestamp, integer...): without it PostgreSQL refuses
  ``CASE ... THEN $1`` into an enum column ("is of type X but expression is of type text");
- :meth:`SqlDialect.now`, :meth:`SqlDialect.older_than`, :meth:`SqlDialect.lease_expired`
  and :meth:`SqlDialect.session_gone` are the staleness vocabulary, evaluated with the
  target's own clock (the one that wrote the timestamps);
- :attr:`SqlDialect.lock_clause` is the candidate-locking clause (``FOR UPDATE OF t
  SKIP LOCKED``): a row a live session holds is skipped, never waited on;
- :meth:`SqlDialect.function` reads a function's parameter types (for a queue's own SQL
  function, such as procrastinate's ``procrastinate_retry_job_v2``);
- :attr:`SqlDialect.update_returning` picks the statement shape: one
  ``WITH candidates ... UPDATE ... RETURNING`` per batch, or (engines without it) a locked
  SELECT followed by an UPDATE by primary key.

Another engine implements this Protocol and is named in ``_MODULES`` (imported on first
use, like the action registry: MySQL/MariaDB in :mod:`bot.actions.dialect_mysql`, SQLite
in :mod:`bot.actions.dialect_sqlite`) or registers itself with :func:`register_dialect`.
Fragments are :mod:`psycopg.sql` compositions over the alias ``t`` with named
placeholders; identifiers come only from playbooks, checked at load.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from psycopg import sql

from bot.actions.target import TargetConnection, check_identifier
from bot.errors import RemediationError


@dataclass(frozen=True)
class Column:
    """One column as the catalog describes it."""

    name: str
    # The column's own type as the database spells it (``format_type`` on PostgreSQL:
    # "pgboss.job_state", "timestamp with time zone", "jsonb", a domain's name...).
    type_sql: str
    nullable: bool


@dataclass(frozen=True)
class Table:
    """A table (or partitioned table) as the catalog describes it."""

    name: str
    columns: Mapping[str, Column]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        """The column ``name``, or a clear error naming the table."""
        found = self.columns.get(name)
        if found is None:
            raise RemediationError(f"table {self.name} has no column {name!r}", table=self.name)
        return found


@dataclass(frozen=True)
class Function:
    """A database function's exact parameter types, in order."""

    name: str
    arg_types: tuple[str, ...]


SessionMatch = Literal["application_name", "pid"]


class SqlDialect(Protocol):
    """What the transition needs from an engine (see module docstring)."""

    name: str
    lock_clause: sql.Composable
    # True when the engine has UPDATE ... FROM ... RETURNING and data-modifying CTEs
    # (PostgreSQL): one statement per batch. False (MariaDB, SQLite): the portable path,
    # a locked SELECT then UPDATE by primary key (no ``call``, no ``companions``).
    update_returning: bool

    def table(self, conn: TargetConnection, table: str) -> Table:
        """Catalog lookup; :class:`RemediationError` if the table does not exist."""
        ...

    def function(self, conn: TargetConnection, name: str, nargs: int) -> Function:
        """Catalog lookup of the one function ``name`` taking ``nargs`` arguments."""
        ...

    def cast(self, value: sql.Composable, type_sql: str) -> sql.Composable:
        """``value`` (a text expression) converted to the type ``type_sql``."""
        ...

    def now(self) -> sql.Composable:
        """The target's current timestamp."""
        ...

    def older_than(self, ts: sql.Composable, seconds: sql.Composable) -> sql.Composable:
        """True when timestamp ``ts`` is more than ``seconds`` (a bind) in the past."""
        ...

    def lease_expired(self, started: sql.Composable, interval: sql.Composable) -> sql.Composable:
        """True when ``started + interval`` (an interval-typed column) is in the past."""
        ...

    def session_gone(self, owner: sql.Composable, match: SessionMatch) -> sql.Composable:
        """True when no live database session has ``owner`` as its ``match`` attribute."""
        ...


def _qualified(table: str) -> str:
    """``schema.name`` as a quoted name for ``to_regclass`` (parts are checked
    identifiers: no quotes inside, so doubling is never needed)."""
    return ".".join(f'"{part}"' for part in check_identifier(table).split("."))


_PG_TABLE_SQL = """
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type_sql,
       NOT (a.attnotnull OR COALESCE(ty.typnotnull, false)) AS nullable,
       array_position(pk.indkey::int2[], a.attnum) AS pk_position
  FROM pg_attribute AS a
  JOIN pg_type AS ty ON ty.oid = a.atttypid
  LEFT JOIN pg_index AS pk ON pk.indrelid = a.attrelid AND pk.indisprimary
 WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_PG_FUNCTION_SQL = """
SELECT p.oid::regprocedure::text AS signature,
       ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY
             AS u(t, n) ORDER BY n) AS arg_types
  FROM pg_proc AS p
  JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE p.proname = %(name)s AND p.pronargs = %(nargs)s
   AND (%(schema)s::text IS NULL AND pg_function_is_visible(p.oid) OR n.nspname = %(schema)s)
"""


class PostgresDialect:
    """:class:`SqlDialect` for PostgreSQL (partitioned tables, enums, domains, jsonb)."""

    name = "postgresql"
    # OF t: lock only the target rows, never rows of a joined worker/heartbeat table.
    lock_clause: sql.Composable = sql.SQL("FOR UPDATE OF t SKIP LOCKED")
    update_returning = True

    def table(self, conn: TargetConnection, table: str) -> Table:
        rows = conn.fetch_all(_PG_TABLE_SQL, {"table": _qualified(table)})
        if not rows:
            raise RemediationError(f"table {table} does not exist on the target", table=table)
        pk = sorted((r["pk_position"], r["name"]) for r in rows if r["pk_position"] is not None)
        return Table(
            name=table,
            columns={
                str(r["name"]): Column(str(r["name"]), str(r["type_sql"]), bool(r["nullable"]))
                for r in rows
            },
            primary_key=tuple(str(name) for _, name in pk),
        )

    def function(self, conn: TargetConnection, name: str, nargs: int) -> Function:
        schema, _, bare = check_identifier(name).rpartition(".")
        rows = conn.fetch_all(
            _PG_FUNCTION_SQL, {"name": bare, "nargs": nargs, "schema": schema or None}
        )
        if len(rows) != 1:
            raise RemediationError(
                f"expected exactly one function {name} taking {nargs} argument(s) on the "
                f"target, found {len(rows)}",
                function=name,
            )
        arg_types = rows[0]["arg_types"]
        assert isinstance(arg_types, list)  # ARRAY(...) arrives as a Python list
        return Function(name, tuple(str(t) for t in arg_types))

    def cast(self, value: sql.Composable, type_sql: str) -> sql.Composable:
        # type_sql is format_type()'s output: the catalog's own, already-quoted spelling.
        return sql.SQL("CAST({} AS {})").format(value, sql.SQL(type_sql))

    def now(self) -> sql.Composable:
        return sql.SQL("now()")

    def older_than(self, ts: sql.Composable, seconds: sql.Composable) -> sql.Composable:
        return sql.SQL("{} < now() - make_interval(secs => {})").format(ts, seconds)

    def lease_expired(self, started: sql.Composable, interval: sql.Composable) -> sql.Composable:
        return sql.SQL("({} + {}) < now()").format(started, interval)

    def session_gone(self, owner: sql.Composable, match: SessionMatch) -> sql.Composable:
        # pg_stat_activity lists every live backend; a SIGKILLed client's backend is gone
        # as soon as the server notices the closed socket.
        column = sql.SQL("a.application_name") if match == "application_name" else sql.SQL("a.pid")
        return sql.SQL(
            "NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE {column}::text = {owner}::text)"
        ).format(column=column, owner=owner)


_DIALECTS: dict[str, SqlDialect] = {"postgresql": PostgresDialect()}
# Engines whose dialect module is imported on first use: module path, attribute.
_MODULES: dict[str, tuple[str, str]] = {
    "mysql": ("bot.actions.dialect_mysql", "MYSQL"),
    "mariadb": ("bot.actions.dialect_mysql", "MARIADB"),
    "sqlite": ("bot.actions.dialect_sqlite", "SQLITE"),
}


def register_dialect(dialect: SqlDialect) -> None:
    """Make ``dialect`` the one used for connections whose ``dialect.name`` matches."""
    _DIALECTS[dialect.name] = dialect


def table_of(conn: TargetConnection, table: str) -> Table:
    """``table``'s catalog entry, read once per transaction (``conn.memo``). Inside one
    transaction the entry stays true once a statement has touched the table (its lock
    blocks DDL until the end); the next transaction reads the catalog again."""
    key = ("catalog", table)
    found = conn.memo.get(key)
    if isinstance(found, Table):
        return found
    entry = dialect_for(conn).table(conn, table)
    conn.memo[key] = entry
    return entry


def dialect_for(conn: TargetConnection) -> SqlDialect:
    """The transition dialect for ``conn``; a clear error for an engine without one."""
    found = _DIALECTS.get(conn.dialect.name)
    if found is None and conn.dialect.name in _MODULES:
        module, attribute = _MODULES[conn.dialect.name]
        found = getattr(importlib.import_module(module), attribute)
        assert found is not None
        _DIALECTS[conn.dialect.name] = found
    if found is None:
        raise RemediationError(
            f"state transitions are not implemented for {conn.dialect.name} targets",
            dialect=conn.dialect.name,
        )
    return found


def text_value(value: object) -> str | None:
    """A playbook value as the text form every engine casts from (JSON for mappings and
    lists, ``true``/``false`` for booleans); ``None`` stays SQL NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)

"""The target port: what an action may ask of a target database, and nothing else.

:class:`TargetDatabase` opens ONE transaction with timeouts and yields a
:class:`TargetConnection`; :class:`Dialect` names the few SQL fragments that differ
between engines. The adapters live in :mod:`bot.adapters.targets`; the helpers actions
compose SQL with (identifier checks, scope filters) in :mod:`bot.actions.target`.

This module imports no database driver at run time, so everything that only names the
port (the action contract, the playbook models, the CLI's ``--help``) stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, LiteralString, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from psycopg import sql

# The binds an action composes for one statement, by placeholder name.
Binds = dict[str, object]
# Values bound to a statement's named placeholders (``%(name)s``): plain Python values
# the drivers adapt (str, int, float, bool, None, datetime, lists of these, JSON text).
Params = Mapping[str, object]
# One result row keyed by column name, values as the driver returns them.
Row = dict[str, object]

# What actions may pass as SQL: reviewed literal text or psycopg.sql compositions.
SqlQuery: TypeAlias = "LiteralString | sql.SQL | sql.Composed"


def _any_array() -> sql.SQL:
    from psycopg import sql  # the driver only when a dialect is built (CLI start-up)

    return sql.SQL("{} = ANY({})")


@dataclass(frozen=True)
class Dialect:
    """The engine-specific SQL fragments an action may use, named so each use is visible.

    ``skip_locked`` is the row-locking clause for candidate selection: PostgreSQL's
    ``FOR UPDATE SKIP LOCKED`` lets a live worker that holds a row keep it (the row is
    skipped, not waited on). Engines without row locks (SQLite) get an empty clause and
    rely on the compare-and-set re-check inside the UPDATE alone.
    """

    name: str
    skip_locked: sql.SQL
    now: sql.SQL
    # "<timestamp column> is older than N seconds" with N a bind parameter named here.
    seconds_ago: sql.SQL
    supports_arrays: bool
    # "<expression> is one of <list bound to a placeholder>": ``= ANY(array)`` where the
    # driver binds arrays; ``IN (...)`` where the adapter expands the list (never empty
    # text: an empty list renders as ``(NULL)``, which matches nothing).
    in_list: sql.SQL = field(default_factory=_any_array)
    # UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+; not MySQL or MariaDB 10.x/11.x).
    update_returning: bool = True

    def member(self, expr: sql.Composable, placeholder: str) -> sql.Composable:
        """``expr`` is one of the values bound (as a list) to ``placeholder``."""
        from psycopg import sql  # the driver only when SQL is composed (CLI start-up)

        return self.in_list.format(expr, sql.Placeholder(placeholder))


class TargetConnection(Protocol):
    """One open transaction on a target database, as handed to an action."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def memo(self) -> dict[object, object]:
        """A cache that lives exactly as long as this transaction: what actions learned
        inside it (a table's catalog entry, a composed statement). Never carried into the
        next transaction, so a schema change between two transactions is always seen."""
        ...

    def fetch_all(self, query: SqlQuery, params: Params | None = None) -> list[Row]:
        """Run ``query`` and return every row as a dict keyed by column name."""
        ...

    def execute(self, query: SqlQuery, params: Params | None = None) -> int:
        """Run ``query`` and return the number of rows it affected."""
        ...


@runtime_checkable
class Pipelining(Protocol):
    """A connection that can send several independent statements in one round trip."""

    def fetch_pipelined(self, statements: Sequence[tuple[SqlQuery, Params]]) -> list[list[Row]]:
        """Run ``statements`` in order, one round trip, and return each one's rows; a
        failing statement raises (translated) and the ones after it did not run."""
        ...


def fetch_each(
    conn: TargetConnection, statements: Sequence[tuple[SqlQuery, Params]]
) -> list[list[Row]]:
    """Run independent statements in order and return each one's rows: in one round trip
    where the adapter pipelines (PostgreSQL), else one by one."""
    if isinstance(conn, Pipelining):
        return conn.fetch_pipelined(statements)
    return [conn.fetch_all(query, params) for query, params in statements]


class TargetDatabase(Protocol):
    """A named database the bot may remediate."""

    @property
    def name(self) -> str: ...

    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> AbstractContextManager[TargetConnection]:
        """A context manager yielding a :class:`TargetConnection` inside ONE transaction
        with both timeouts applied. It commits when the block ends normally and rolls
        back when it raises; errors come out translated (see module docstring)."""
        ...

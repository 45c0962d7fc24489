"""Target databases: the port actions run against, and its psycopg 3 adapter.

An action never opens a connection itself. The executor asks a :class:`TargetDatabase`
for ONE transaction (``statement_timeout`` and ``lock_timeout`` applied with ``SET
LOCAL``) and hands the action the :class:`TargetConnection` it yields. Library errors
are translated here, at the boundary, ``from exc``:

- ``lock_not_available`` (55P03) / ``query_canceled`` (57014) -> :class:`LockTimeout`
- cannot connect / connection lost                          -> :class:`TargetUnavailable`
- any other database error                                  -> :class:`RemediationError`

Messages never contain the DSN or its password.

Identifiers (table and column names) come only from playbook files; they are checked
with :func:`check_identifier` at load time and again when an action composes SQL with
:func:`ident`, which quotes them with :class:`psycopg.sql.Identifier`. Values always
travel as bind parameters.

The few places where SQL differs between engines are gathered in :class:`Dialect` so an
action states explicitly what it relies on (``FOR UPDATE SKIP LOCKED``, ``now()``,
interval arithmetic, list membership, ``UPDATE ... RETURNING``). Actions write SQL once
with psycopg.sql; the MySQL/MariaDB and SQLite adapters in :mod:`bot.adapters` render the
same compositions for their drivers (:mod:`bot.adapters.targets.sqltext`), and
:func:`bot.adapters.targets.factory.open_target` picks the adapter from the URL scheme.
"""

from __future__ import annotations

import re
import select
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, LiteralString, Protocol
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import AfterValidator

from bot.errors import LockTimeout, RemediationError, TargetUnavailable
from bot.safety.redact import dsn_passwords, scrub

# What actions may pass as SQL: reviewed literal text or psycopg.sql compositions.
SqlQuery = LiteralString | sql.SQL | sql.Composed

_IDENT_PART = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_IDENT_RE = re.compile(rf"{_IDENT_PART}(?:\.{_IDENT_PART})?")


def check_identifier(name: str) -> str:
    """Return ``name`` unchanged if it is a plain (optionally ``schema.``-qualified) SQL
    identifier of at most 63 characters per part; raise ``ValueError`` otherwise.

    Used as a pydantic validator on every table/column setting, so a hostile or mistyped
    name fails when the playbook loads, never when SQL runs.
    """
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid SQL identifier "
            "(letters, digits, underscore; optionally schema.name; at most 63 chars each)"
        )
    return name


# A settings field holding a table/column name: validated when the playbook loads.
Ident = Annotated[str, AfterValidator(check_identifier)]


def ident(name: str) -> sql.Identifier:
    """Quote a checked identifier (``schema.table`` becomes ``"schema"."table"``)."""
    return sql.Identifier(*check_identifier(name).split("."))


_PLAIN = frozenset({type(None), bool, int, float, str})


def json_safe(value: Any) -> Any:
    """Turn a database value into something the journal can store as JSON."""
    # Exact-type fast path first: before-images can hold thousands of rows.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def scope_filter(
    alias: str, scope: Mapping[str, str], params: Mapping[str, Any]
) -> tuple[sql.Composable, dict[str, Any]]:
    """``AND alias.col = %(scope_i)s`` for each ``column: param`` in ``scope``, plus binds.

    A scope parameter missing from ``params`` is an error, never a dropped filter: a
    missing filter would widen the remediation to the whole table.
    """
    parts: list[sql.Composable] = []
    binds: dict[str, Any] = {}
    for i, (column, param) in enumerate(sorted(scope.items())):
        if param not in params:
            raise RemediationError(f"scope parameter {param!r} was not extracted", param=param)
        key = f"scope_{i}"
        parts.append(
            sql.SQL(" AND {}.{} = {}").format(
                sql.Identifier(alias), ident(column), sql.Placeholder(key)
            )
        )
        binds[key] = params[param]
    return sql.Composed(parts), binds


_ANY_ARRAY = sql.SQL("{} = ANY({})")


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
    in_list: sql.SQL = field(default_factory=lambda: _ANY_ARRAY)
    # UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+; not MySQL or MariaDB 10.x/11.x).
    update_returning: bool = True

    def member(self, expr: sql.Composable, placeholder: str) -> sql.Composable:
        """``expr`` is one of the values bound (as a list) to ``placeholder``."""
        return self.in_list.format(expr, sql.Placeholder(placeholder))


POSTGRESQL = Dialect(
    name="postgresql",
    skip_locked=sql.SQL("FOR UPDATE SKIP LOCKED"),
    now=sql.SQL("now()"),
    seconds_ago=sql.SQL("now() - make_interval(secs => {})"),
    supports_arrays=True,
)


class TargetConnection(Protocol):
    """One open transaction on a target database, as handed to an action."""

    @property
    def dialect(self) -> Dialect: ...

    def fetch_all(
        self, query: SqlQuery, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run ``query`` and return every row as a dict keyed by column name."""
        ...

    def execute(self, query: SqlQuery, params: Mapping[str, Any] | None = None) -> int:
        """Run ``query`` and return the number of rows it affected."""
        ...


class TargetDatabase(Protocol):
    """A named database the bot may remediate."""

    @property
    def name(self) -> str: ...

    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> Any:
        """A context manager yielding a :class:`TargetConnection` inside ONE transaction
        with both timeouts applied. It commits when the block ends normally and rolls
        back when it raises; errors come out translated (see module docstring)."""
        ...


# admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or starting.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate_error(exc: psycopg.Error, *, target: str, secret: str | None = None) -> Exception:
    """Map a psycopg error to the bot's exception tree (the caller raises it ``from exc``)."""
    message = _first_line(exc)
    if secret:
        message = message.replace(secret, "***")
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return LockTimeout(f"timed out on target {target}: {message}", target=target)
    state = exc.sqlstate or ""
    lost = isinstance(exc, psycopg.OperationalError) and not state
    if lost or state.startswith("08") or state in _UNAVAILABLE_STATES:
        return TargetUnavailable(f"target {target} unavailable: {message}", target=target)
    return RemediationError(f"database error on target {target}: {message}", target=target)


class PgConnection:
    """:class:`TargetConnection` over one psycopg 3 connection inside a transaction."""

    def __init__(self, conn: psycopg.Connection[Any], target: str, secret: str | None) -> None:
        self._conn = conn
        self._target = target
        self._secret = secret

    @property
    def dialect(self) -> Dialect:
        return POSTGRESQL

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The underlying psycopg connection (tests and benchmarks only)."""
        return self._conn

    def fetch_all(
        self, query: SqlQuery, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        try:
            with self._conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, secret=self._secret) from exc

    def execute(self, query: SqlQuery, params: Mapping[str, Any] | None = None) -> int:
        try:
            with self._conn.cursor() as cur:
                cur.execute(query, params)
                return cur.rowcount
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._target, secret=self._secret) from exc


_SET_TIMEOUTS = sql.SQL(
    "SELECT set_config('statement_timeout', {st}, true), set_config('lock_timeout', {lt}, true)"
)
# A pooled connection starts each transaction clean: session settings back to the
# connection's defaults and no session-level advisory lock kept (seed 001's bug was a
# pooled connection holding one). No extra round trip: sent with the timeouts.
_RESET_SESSION = sql.SQL("RESET ALL; SELECT pg_advisory_unlock_all(); ")


def _looks_alive(conn: psycopg.Connection[Any]) -> bool:
    """An idle connection has nothing to read: data or EOF means the server ended it
    (restart, ``pg_terminate_backend``, idle timeout), so it must not be reused."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


class _Idle:
    """A target's idle connections, newest last, each with the time it was returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: list[tuple[psycopg.Connection[Any], float]] = []

    def close_all(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn, _ in conns:
            conn.close()


class PgTarget:
    """:class:`TargetDatabase` for PostgreSQL through psycopg 3.

    Connections are reused through a small pool (``pool_size`` idle connections, each
    kept at most ``max_idle_s``), so the preview, execution and verification of one run,
    and the runs of a burst, share one connection instead of opening three per run. A
    connection goes back to the pool only after a clean commit or rollback of a
    transaction the bot ran; one that saw any error is closed. A reused connection is
    reset (``RESET ALL``, ``pg_advisory_unlock_all()``) at the start of its next
    transaction, so no session state crosses from one remediation to the next.
    ``pool_size=0`` opens a fresh connection per transaction. :meth:`close` (or garbage
    collection of the target) closes the idle connections.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "target",
        connect_timeout_s: int = 5,
        application_name: str = "sentry-remediation-bot",
        pool_size: int = 2,
        max_idle_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._name = name
        self._connect_timeout_s = connect_timeout_s
        self._application_name = application_name
        self._pool_size = pool_size
        self._max_idle_s = max_idle_s
        self._idle = _Idle()
        # Closes pooled connections when the target is dropped without close().
        self._finalizer = weakref.finalize(self, self._idle.close_all)
        try:
            password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
            self._secret: str | None = str(password) if password else None
        except psycopg.Error:
            # Malformed (e.g. a bad %-escape): psycopg quotes the raw password in its
            # error, so find it by pattern instead (bot.safety.redact).
            found = dsn_passwords(dsn)
            self._secret = found[0] if found else None

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"PgTarget(name={self._name!r})"

    def close(self) -> None:
        """Close the idle pooled connections (a transaction in progress is unaffected)."""
        self._idle.close_all()

    def _checkout(self) -> tuple[psycopg.Connection[Any], bool]:
        """An idle pooled connection (True) or a new one (False)."""
        now = time.monotonic()
        stale: list[psycopg.Connection[Any]] = []
        found: psycopg.Connection[Any] | None = None
        with self._idle.lock:
            while self._idle.conns:
                conn, returned = self._idle.conns.pop()
                if now - returned <= self._max_idle_s and _looks_alive(conn):
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            conn.close()
        if found is not None:
            return found, True
        return self._connect(), False

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and not conn.closed:
            with self._idle.lock:
                if len(self._idle.conns) < self._pool_size:
                    self._idle.conns.append((conn, time.monotonic()))
                    return
        conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._dsn,
                connect_timeout=self._connect_timeout_s,
                application_name=self._application_name,
            )
        except psycopg.Error as exc:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: " + scrub(_first_line(exc), [self._dsn]),
                target=self._name,
            ) from exc
        except Exception as exc:  # a malformed DSN raises ProgrammingError/ValueError
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: invalid DSN", target=self._name
            ) from exc

    @contextmanager
    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> Iterator[PgConnection]:
        """Yield a :class:`PgConnection` in one transaction with ``SET LOCAL`` timeouts;
        commit on success, roll back on any exception (which propagates, translated)."""
        if statement_timeout_ms <= 0 or lock_timeout_ms <= 0:
            # 0 means "no timeout" to PostgreSQL; a remediation must always have one.
            raise ValueError("statement_timeout_ms and lock_timeout_ms must be positive")
        conn, reused = self._checkout()
        wrapped = PgConnection(conn, self._name, self._secret)
        timeouts = _SET_TIMEOUTS.format(
            st=sql.Literal(f"{int(statement_timeout_ms)}ms"),
            lt=sql.Literal(f"{int(lock_timeout_ms)}ms"),
        )
        clean = False
        try:
            with conn.transaction():
                if read_only:
                    wrapped.execute("SET TRANSACTION READ ONLY")
                wrapped.execute(sql.Composed([_RESET_SESSION, timeouts]) if reused else timeouts)
                yield wrapped
            clean = True
        except psycopg.Error as exc:
            raise translate_error(exc, target=self._name, secret=self._secret) from exc
        finally:
            if clean:
                self._checkin(conn)
            else:
                conn.close()


# What every verify asks: which of the rows we changed still match the problem?
_STILL_MATCHING_SQL = sql.SQL("SELECT t.{id} AS id FROM {table} AS t WHERE {in_ids} AND {where}")


def still_matching(
    conn: TargetConnection,
    table: str,
    id_column: str,
    ids: list[Any],
    where: sql.Composable,
    binds: Mapping[str, Any],
) -> list[Any]:
    """The ids among ``ids`` whose row (alias ``t``) still satisfies ``where``."""
    rows = conn.fetch_all(
        _STILL_MATCHING_SQL.format(
            id=ident(id_column),
            table=ident(table),
            in_ids=conn.dialect.member(sql.SQL("t.{}").format(ident(id_column)), "ids"),
            where=where,
        ),
        {**binds, "ids": ids},
    )
    return [json_safe(r["id"]) for r in rows]

"""PostgreSQL targets through psycopg 3: the :class:`~bot.actions.target.TargetDatabase`
adapter the bot was first written for.

:meth:`PgTarget.transaction` runs ONE transaction with ``statement_timeout`` and
``lock_timeout`` applied as transaction-local settings, on a connection from a small
pool. psycopg errors are translated here, ``from exc``:

- ``lock_not_available`` (55P03) / ``query_canceled`` (57014) -> :class:`LockTimeout`
- cannot connect / connection lost                          -> :class:`TargetUnavailable`
- any other database error                                  -> :class:`RemediationError`

Messages never contain the DSN or its password.
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from bot.actions.target import POSTGRESQL, Dialect, Params, Row, SqlQuery
from bot.errors import LockTimeout, RemediationError, TargetUnavailable
from bot.safety.redact import dsn_passwords, scrub

# A psycopg connection as the bot opens it: default (tuple) rows.
PgConn = psycopg.Connection[tuple[object, ...]]

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


@contextmanager
def _translated(target: str, secret: str | None) -> Iterator[None]:
    """Raise any psycopg error of the block as the bot's (see :func:`translate_error`)."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate_error(exc, target=target, secret=secret) from exc


class PgConnection:
    """:class:`TargetConnection` over one psycopg 3 connection inside a transaction."""

    def __init__(self, conn: PgConn, target: str, secret: str | None) -> None:
        self._conn = conn
        self._target = target
        self._secret = secret
        self._memo: dict[object, object] = {}
        self._rendered: dict[int, tuple[sql.Composable, bytes]] = {}

    @property
    def dialect(self) -> Dialect:
        return POSTGRESQL

    @property
    def memo(self) -> dict[object, object]:
        return self._memo

    @property
    def raw(self) -> PgConn:
        """The underlying psycopg connection (tests and benchmarks only)."""
        return self._conn

    def _text(self, query: SqlQuery) -> SqlQuery | bytes:
        """A composed query rendered once per transaction: a storm runs one composed
        statement a thousand times, each with its own binds."""
        if not isinstance(query, sql.Composable):
            return query
        found = self._rendered.get(id(query))
        if found is not None and found[0] is query:
            return found[1]
        text = query.as_bytes(self._conn)
        self._rendered[id(query)] = (query, text)  # the query kept alive: its id stays its own
        return text

    def fetch_all(self, query: SqlQuery, params: Params | None = None) -> list[Row]:
        with (
            _translated(self._target, self._secret),
            self._conn.cursor(row_factory=dict_row) as cur,
        ):
            cur.execute(self._text(query), params)
            return cur.fetchall() if cur.description is not None else []

    def fetch_pipelined(self, statements: Sequence[tuple[SqlQuery, Params]]) -> list[list[Row]]:
        """:class:`~bot.actions.port.Pipelining`: the statements in one psycopg pipeline
        (one round trip instead of one each); results read after the pipeline syncs."""
        if len(statements) < 2 or not psycopg.Pipeline.is_supported():
            return [self.fetch_all(query, params) for query, params in statements]
        cursors: list[psycopg.Cursor[Row]] = []
        try:
            with _translated(self._target, self._secret):
                with self._conn.pipeline():
                    for query, params in statements:
                        cur = self._conn.cursor(row_factory=dict_row)
                        cursors.append(cur)
                        cur.execute(self._text(query), params)
                return [c.fetchall() if c.description is not None else [] for c in cursors]
        finally:
            for cur in cursors:
                cur.close()

    def execute(self, query: SqlQuery, params: Params | None = None) -> int:
        with _translated(self._target, self._secret), self._conn.cursor() as cur:
            cur.execute(self._text(query), params)
            return cur.rowcount


_SET_TIMEOUTS = sql.SQL(
    "SELECT set_config('statement_timeout', {st}, true), set_config('lock_timeout', {lt}, true)"
)
# The transaction is opened by the bot's own BEGIN (the connection is in autocommit
# mode), sent in the same round trip as the session reset and the timeouts: one round
# trip before the first statement instead of three (BEGIN, SET TRANSACTION READ ONLY,
# the settings). A multi-statement text without parameters goes out as one simple query.
_BEGIN = sql.SQL("BEGIN; ")
_BEGIN_READ_ONLY = sql.SQL("BEGIN READ ONLY; ")
# A pooled connection starts each transaction clean: session settings back to the
# connection's defaults and no session-level advisory lock kept (seed 001's bug was a
# pooled connection holding one). No extra round trip: sent with the timeouts.
_RESET_SESSION = sql.SQL("RESET ALL; SELECT pg_advisory_unlock_all(); ")


def _looks_alive(conn: PgConn) -> bool:
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
        self.conns: list[tuple[PgConn, float]] = []

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

    def _checkout(self) -> tuple[PgConn, bool]:
        """An idle pooled connection (True) or a new one (False)."""
        now = time.monotonic()
        stale: list[PgConn] = []
        found: PgConn | None = None
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

    def _checkin(self, conn: PgConn) -> None:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if idle and not conn.closed:
            with self._idle.lock:
                if len(self._idle.conns) < self._pool_size:
                    self._idle.conns.append((conn, time.monotonic()))
                    return
        conn.close()

    def _connect(self) -> PgConn:
        try:
            return psycopg.connect(
                self._dsn,
                connect_timeout=self._connect_timeout_s,
                application_name=self._application_name,
                # Transactions are opened by transaction()'s own BEGIN (see _BEGIN).
                autocommit=True,
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
        begin = [_BEGIN_READ_ONLY if read_only else _BEGIN]
        if reused:
            begin.append(_RESET_SESSION)
        clean = False
        try:
            with _translated(self._name, self._secret):
                try:
                    wrapped.execute(sql.Composed([*begin, timeouts]))
                    yield wrapped
                except BaseException:
                    # Rolled back at once (not left to the server noticing the closed
                    # socket), so no lock of the failed transaction outlives it.
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                    raise
                done = conn.execute("COMMIT").statusmessage
                if done != "COMMIT":
                    # A statement failed inside the transaction and its error was
                    # handled: PostgreSQL answers COMMIT with ROLLBACK, silently.
                    raise RemediationError(
                        f"target {self._name}: the transaction was rolled back by the"
                        f" server ({done}), not committed: a statement inside it failed",
                        target=self._name,
                    )
            clean = True
        finally:
            if clean:
                self._checkin(conn)
            else:
                conn.close()

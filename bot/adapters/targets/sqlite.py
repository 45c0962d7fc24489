"""SQLite targets through the standard library's ``sqlite3`` (Cloudflare D1 is SQLite).

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``. The file must exist:
a mistyped path is "cannot connect", never a fresh empty database remedied in silence.

Each :meth:`SqliteTarget.transaction` opens the file and runs ONE transaction:

- ``BEGIN IMMEDIATE`` for a run: the write lock is taken up front, so every read the
  action makes is already under the lock its writes need (SQLite has no row locks; this
  is its ``FOR UPDATE``), and a concurrent writer is waited on for at most the lock
  timeout (``busy_timeout``), then ``SQLITE_BUSY`` -> :class:`LockTimeout`;
- ``PRAGMA query_only`` + a deferred ``BEGIN`` for previews and verifies;
- the statement timeout is a progress handler that interrupts a statement running past
  its deadline (``SQLITE_INTERRUPT`` -> :class:`LockTimeout`); the clock is injectable.

Timestamps are what D1 writes with ``datetime('now')``: UTC text ``YYYY-MM-DD HH:MM:SS``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import unquote, urlsplit

from psycopg import sql

from bot.actions.target import Dialect, Params, Row, SqlQuery
from bot.adapters.targets.sqltext import ParamStyle, render
from bot.errors import LockTimeout, RemediationError, TargetUnavailable

SQLITE = Dialect(
    name="sqlite",
    # BEGIN IMMEDIATE already holds the database's write lock: nothing to add per row.
    skip_locked=sql.SQL(""),
    now=sql.SQL("datetime('now')"),
    # The text form D1 writes, so it compares with a datetime('now') column as text.
    seconds_ago=sql.SQL("datetime('now', '-' || ({}) || ' seconds')"),
    supports_arrays=False,
    in_list=sql.SQL("{} IN {}"),
    update_returning=True,
)

_LOCKED = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT"})
_GONE = frozenset({"SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_IOERR", "SQLITE_CORRUPT"})


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (three slashes: relative; four: absolute)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if parts.query or parts.fragment:
        raise ValueError("a sqlite URL takes no options")
    path = unquote(parts.path[1:])
    if not path or path == ":memory:":
        raise ValueError("a sqlite target must be a database file")
    return Path(path)


def translate_sqlite_error(exc: sqlite3.Error, *, target: str) -> Exception:
    """Map a sqlite3 error to the bot's exception tree (the caller raises it ``from exc``)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = f"{text} ({name})" if name else text
    if name in _LOCKED or "database is locked" in text:
        return LockTimeout(f"timed out on target {target}: {message}", target=target)
    if name in _GONE:
        return TargetUnavailable(f"target {target} unavailable: {message}", target=target)
    return RemediationError(f"database error on target {target}: {message}", target=target)


class SqliteConnection:
    """:class:`~bot.actions.target.TargetConnection` over one sqlite3 connection."""

    def __init__(
        self, conn: sqlite3.Connection, target: str, arm: Callable[[], None] = lambda: None
    ) -> None:
        self._conn = conn
        self._target = target
        self._arm = arm
        self._memo: dict[object, object] = {}

    @property
    def dialect(self) -> Dialect:
        return SQLITE

    @property
    def memo(self) -> dict[object, object]:
        return self._memo

    @property
    def raw(self) -> sqlite3.Connection:
        """The underlying sqlite3 connection (tests only)."""
        return self._conn

    def _run(self, query: SqlQuery, params: Params | None) -> sqlite3.Cursor:
        rendered = render(query, params, ParamStyle.NAMED)
        self._arm()
        try:
            return self._conn.execute(rendered.text, rendered.params)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, target=self._target) from exc

    def fetch_all(self, query: SqlQuery, params: Params | None = None) -> list[Row]:
        cur = self._run(query, params)
        try:
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, target=self._target) from exc
        finally:
            cur.close()

    def execute(self, query: SqlQuery, params: Params | None = None) -> int:
        cur = self._run(query, params)
        try:
            if cur.description is not None:
                cur.fetchall()  # a statement with RETURNING runs to completion here
            return cur.rowcount
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, target=self._target) from exc
        finally:
            cur.close()


class SqliteTarget:
    """:class:`~bot.actions.target.TargetDatabase` for one SQLite file."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "target",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._monotonic = monotonic
        try:
            self._path: Path | None = sqlite_path(url)
            self._problem = ""
        except ValueError as exc:
            self._path, self._problem = None, str(exc)

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Nothing to close: every transaction opens and closes its own connection (a
        pooled connection could carry a session lock over, the very bug of seed 001)."""

    def __repr__(self) -> str:
        return f"SqliteTarget(name={self._name!r}, path={str(self._path)!r})"

    def _connect(self, lock_timeout_ms: int) -> sqlite3.Connection:
        if self._path is None:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: invalid URL: {self._problem}",
                target=self._name,
            )
        uri = self._path.resolve().as_uri() + "?mode=rw"
        try:
            # isolation_level=None: no implicit BEGIN (this class issues its own);
            # timeout= is SQLite's busy_timeout: how long to wait for another writer.
            return sqlite3.connect(
                uri, uri=True, timeout=lock_timeout_ms / 1000, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: {exc} ({self._path})",
                target=self._name,
            ) from exc

    @contextmanager
    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> Iterator[SqliteConnection]:
        """Yield a :class:`SqliteConnection` in one transaction (see the module doc);
        commit on success, roll back on any exception."""
        if statement_timeout_ms <= 0 or lock_timeout_ms <= 0:
            raise ValueError("statement_timeout_ms and lock_timeout_ms must be positive")
        conn = self._connect(lock_timeout_ms)
        deadline = [float("inf")]

        def arm() -> None:
            deadline[0] = self._monotonic() + statement_timeout_ms / 1000

        # Called every 1000 virtual-machine steps; a non-zero answer interrupts.
        conn.set_progress_handler(lambda: int(self._monotonic() > deadline[0]), 1000)
        wrapped = SqliteConnection(conn, self._name, arm)
        try:
            if read_only:
                wrapped.execute("PRAGMA query_only = ON")
            wrapped.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
            yield wrapped
            wrapped.execute("COMMIT")
        except BaseException:
            deadline[0] = float("inf")  # the rollback itself must not be interrupted
            if conn.in_transaction:
                with suppress(sqlite3.Error):  # closing the connection discards it anyway
                    conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

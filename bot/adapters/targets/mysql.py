"""MySQL / MariaDB targets through PyMySQL.

PyMySQL is the driver because it is pure Python (nothing to compile, no libmysqlclient on
the host or in the image), maintained under the PyMySQL organisation, and the default
MySQL driver of SQLAlchemy; its client-side escaping is what mysqlclient does too.

Each :meth:`MySqlTarget.transaction` opens a connection, sets the session up and runs ONE
transaction on it:

- ``sql_mode`` gains ``ANSI_QUOTES`` (identifiers are double-quoted, as the actions write
  them) and ``STRICT_ALL_TABLES`` (a NULL into a NOT NULL column or a bad value is an
  error, never a silent zero or empty string), and on MariaDB
  ``SIMULTANEOUS_ASSIGNMENT`` (every SET expression reads the old row, as in SQL);
- ``READ COMMITTED``: locking reads take no gap locks, so the bot never blocks the
  application's inserts next to the rows it looks at;
- lock timeouts: ``innodb_lock_wait_timeout`` (row locks) and ``lock_wait_timeout``
  (metadata / table locks), whole seconds, rounded up;
- statement timeout: MariaDB ``max_statement_time`` (seconds, every statement); MySQL
  ``max_execution_time`` (milliseconds, read-only SELECTs only: an UPDATE on MySQL is
  bounded by the lock timeouts and the client's read timeout);
- ``START TRANSACTION READ ONLY`` for previews and verifies.

Errors are translated to the bot's tree (``from exc``), never showing the password:

- 1205 lock wait timeout, 3024 / 1969 statement timeout, 1317 interrupted -> LockTimeout
- cannot connect / connection lost (2002, 2003, 2006, 2013, 1053, 1927)  -> TargetUnavailable
- anything else                                                          -> RemediationError
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
import pymysql.cursors
from psycopg import sql
from pymysql.constants import CLIENT

from bot.actions.target import Dialect, Params, Row, SqlQuery
from bot.adapters.targets.sqltext import ParamStyle, render
from bot.errors import LockTimeout, RemediationError, TargetUnavailable

# A PyMySQL connection as the adapter opens it (default cursor class).
MyConn: TypeAlias = "pymysql.Connection[pymysql.cursors.Cursor]"  # subscriptable in the stubs only

_LOCK_CODES = frozenset({1205, 3024, 1969, 1317})
# CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST,
# ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED (MariaDB).
_GONE_CODES = frozenset({2002, 2003, 2006, 2013, 1053, 1927})
_SCHEMES = ("mysql", "mariadb")
_OPTIONS = frozenset({"charset", "unix_socket", "ssl_ca", "ssl_disabled", "connect_timeout"})


def mysql_dialect(*, mariadb: bool, version: tuple[int, ...]) -> Dialect:
    """The SQL fragments for one server: SKIP LOCKED from MariaDB 10.6 / MySQL 8.0.1 on;
    older servers lock and wait (bounded by the lock timeouts) rather than skip."""
    skips = version >= ((10, 6) if mariadb else (8, 0, 1))
    return Dialect(
        name="mariadb" if mariadb else "mysql",
        skip_locked=sql.SQL("FOR UPDATE SKIP LOCKED" if skips else "FOR UPDATE"),
        now=sql.SQL("NOW(6)"),
        seconds_ago=sql.SQL("TIMESTAMPADD(MICROSECOND, -ROUND({} * 1000000), NOW(6))"),
        supports_arrays=False,
        in_list=sql.SQL("{} IN {}"),
        update_returning=False,
    )


def parse_version(text: str) -> tuple[bool, tuple[int, ...]]:
    """``(is_mariadb, (major, minor, patch))`` from ``SELECT VERSION()``."""
    # MariaDB before 11 may prefix "5.5.5-" for old replication clients.
    numbers = re.match(r"(?:5\.5\.5-)?(\d+)\.(\d+)\.(\d+)", text)
    version = tuple(int(n) for n in numbers.groups()) if numbers else (0,)
    return "mariadb" in text.lower(), version


@dataclass(frozen=True)
class MySqlDsn:
    """The parts of a ``mysql://`` / ``mariadb://`` URL the driver needs."""

    host: str
    port: int
    user: str | None
    password: str | None
    database: str
    options: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> MySqlDsn:
        """Parse ``mysql://user:pass@host:port/db?charset=utf8mb4``; raise ``ValueError``
        with a message that never repeats the password."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"expected a mysql:// or mariadb:// URL, got {parts.scheme}://")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ValueError("the URL must name one database: mysql://user@host/DATABASE")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - _OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
            )
        try:
            port = parts.port or 3306
        except ValueError:
            raise ValueError("the port is not a number") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=database,
            options={k: v[-1] for k, v in query.items()},
        )


def _code(exc: BaseException) -> int | None:
    args: tuple[object, ...] = exc.args
    return args[0] if args and isinstance(args[0], int) else None


def _message(exc: BaseException, secret: str | None) -> str:
    args: tuple[object, ...] = exc.args
    text = str(args[1]) if len(args) > 1 else (str(exc) or type(exc).__name__)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text.replace(secret, "***") if secret else text


def translate_mysql_error(
    exc: pymysql.MySQLError, *, target: str, secret: str | None = None
) -> Exception:
    """Map a PyMySQL error to the bot's exception tree (the caller raises it ``from exc``)."""
    code = _code(exc)
    message = f"{_message(exc, secret)} (error {code})" if code else _message(exc, secret)
    if code in _LOCK_CODES:
        return LockTimeout(f"timed out on target {target}: {message}", target=target)
    if code in _GONE_CODES or isinstance(exc, pymysql.err.InterfaceError):
        return TargetUnavailable(f"target {target} unavailable: {message}", target=target)
    return RemediationError(f"database error on target {target}: {message}", target=target)


class MySqlConnection:
    """:class:`~bot.actions.target.TargetConnection` over one PyMySQL connection."""

    def __init__(self, conn: MyConn, dialect: Dialect, target: str, secret: str | None) -> None:
        self._conn = conn
        self._dialect = dialect
        self._target = target
        self._secret = secret
        self._memo: dict[object, object] = {}

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def memo(self) -> dict[object, object]:
        return self._memo

    @property
    def raw(self) -> MyConn:
        """The underlying PyMySQL connection (tests only)."""
        return self._conn

    def fetch_all(self, query: SqlQuery, params: Params | None = None) -> list[Row]:
        rendered = render(query, params, ParamStyle.PYFORMAT)
        try:
            with self._conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(rendered.text, rendered.params or None)
                return list(cur.fetchall()) if cur.description is not None else []
        except pymysql.MySQLError as exc:
            raise translate_mysql_error(exc, target=self._target, secret=self._secret) from exc

    def execute(self, query: SqlQuery, params: Params | None = None) -> int:
        rendered = render(query, params, ParamStyle.PYFORMAT)
        try:
            with self._conn.cursor() as cur:
                return int(cur.execute(rendered.text, rendered.params or None))
        except pymysql.MySQLError as exc:
            raise translate_mysql_error(exc, target=self._target, secret=self._secret) from exc


class MySqlTarget:
    """:class:`~bot.actions.target.TargetDatabase` for MySQL 5.7+/8 and MariaDB 10.x/11.x.

    A fresh connection per transaction, like :class:`~bot.adapters.targets.postgres.PgTarget`: a
    connection that was never pooled cannot carry session state (or a ``GET_LOCK``) over.
    """

    def __init__(self, url: str, *, name: str = "target", connect_timeout_s: int = 5) -> None:
        self._name = name
        self._secret: str | None = None
        try:
            self._dsn: MySqlDsn | None = MySqlDsn.parse(url)
            self._secret = self._dsn.password
            self._problem = ""
        except ValueError as exc:
            self._dsn, self._problem = None, str(exc)
        self._connect_timeout_s = connect_timeout_s

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Nothing to close: every transaction opens and closes its own connection (a
        pooled connection could carry a session lock over, the very bug of seed 001)."""

    def __repr__(self) -> str:
        where = f"{self._dsn.host}:{self._dsn.port}/{self._dsn.database}" if self._dsn else "?"
        return f"MySqlTarget(name={self._name!r}, at={where!r})"

    def _connect(self, read_timeout_s: int) -> MyConn:
        dsn = self._dsn
        if dsn is None:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: invalid URL: {self._problem}",
                target=self._name,
            )
        ssl_disabled = dsn.options.get("ssl_disabled", "").lower() in {"1", "true", "yes"}
        try:
            return pymysql.connect(
                host=dsn.host,
                port=dsn.port,
                user=dsn.user,
                password=dsn.password or "",
                database=dsn.database,
                unix_socket=dsn.options.get("unix_socket"),
                ssl_ca=dsn.options.get("ssl_ca"),
                ssl_disabled=ssl_disabled or None,
                charset=dsn.options.get("charset", "utf8mb4"),
                connect_timeout=int(dsn.options.get("connect_timeout", self._connect_timeout_s)),
                read_timeout=read_timeout_s,
                write_timeout=read_timeout_s,
                autocommit=False,
                # rowcount = rows matched, as on PostgreSQL (not only rows whose value changed).
                client_flag=CLIENT.FOUND_ROWS,
                program_name="sentry-remediation-bot",
            )
        except pymysql.MySQLError as exc:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: {_message(exc, self._secret)}",
                target=self._name,
            ) from exc
        except (OSError, ValueError) as exc:
            raise TargetUnavailable(
                f"cannot connect to target {self._name}: {type(exc).__name__}",
                target=self._name,
            ) from exc

    @contextmanager
    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> Iterator[MySqlConnection]:
        """Yield a :class:`MySqlConnection` in one transaction with the session timeouts
        set (see the module doc); commit on success, roll back on any exception."""
        if statement_timeout_ms <= 0 or lock_timeout_ms <= 0:
            raise ValueError("statement_timeout_ms and lock_timeout_ms must be positive")
        # The client gives up well after the server should have: a safety net, not the rule.
        read_timeout_s = math.ceil((statement_timeout_ms + lock_timeout_ms) / 1000) + 10
        conn = self._connect(read_timeout_s)
        try:
            boot = MySqlConnection(
                conn, mysql_dialect(mariadb=False, version=(0,)), self._name, self._secret
            )
            version = str(boot.fetch_all("SELECT VERSION() AS v")[0]["v"])
            mariadb, numbers = parse_version(version)
            wrapped = MySqlConnection(
                conn, mysql_dialect(mariadb=mariadb, version=numbers), self._name, self._secret
            )
            lock_s = max(1, math.ceil(lock_timeout_ms / 1000))
            wrapped.execute(
                "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode,"
                " 'ANSI_QUOTES', 'STRICT_ALL_TABLES'),"
                " SESSION innodb_lock_wait_timeout = %(lock_s)s,"
                " SESSION lock_wait_timeout = %(lock_s)s",
                {"lock_s": lock_s},
            )
            if mariadb:
                wrapped.execute(
                    "SET SESSION max_statement_time = %(s)s", {"s": statement_timeout_ms / 1000}
                )
            if mariadb and numbers >= (10, 3, 5):
                # Standard UPDATE semantics: every SET expression reads the old row.
                wrapped.execute(
                    "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode,"
                    " 'SIMULTANEOUS_ASSIGNMENT')"
                )
            elif numbers >= (5, 7, 8):
                wrapped.execute(
                    "SET SESSION max_execution_time = %(ms)s", {"ms": int(statement_timeout_ms)}
                )
            wrapped.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            wrapped.execute("START TRANSACTION READ ONLY" if read_only else "START TRANSACTION")
            yield wrapped
            try:
                conn.commit()
            except pymysql.MySQLError as exc:
                raise translate_mysql_error(exc, target=self._name, secret=self._secret) from exc
        except BaseException:
            with suppress(pymysql.MySQLError):  # a lost connection is rolled back by the server
                conn.rollback()
            raise
        finally:
            with suppress(pymysql.MySQLError):
                conn.close()

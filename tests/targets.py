"""One fresh target database per test on each dialect: PostgreSQL, MariaDB, SQLite.

:class:`TargetDb` gives a test what it needs to set a target up and look at it through
the raw driver (never through the adapter under test): ``sql()`` runs statements in
autocommit with ``%(name)s`` parameters, ``ddl()`` fills a schema template's type
tokens for the dialect, ``ago(seconds)`` is a timestamp expression on the server's own
clock, ``connect()`` opens another raw connection (a worker holding row locks, a
pooled connection holding a lock). ``target`` is the adapter the bot would build from
``url``.

MariaDB is found through ``TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/mysql``);
when it is unreachable its tests are skipped locally, and with ``CI=true`` the run fails.
"""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql
import pymysql.cursors
from psycopg import sql

from bot.actions.target import TargetDatabase
from bot.adapters.targets.factory import open_target

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/mysql"
DIALECTS = ("postgresql", "mariadb", "sqlite")

# Type tokens a schema template may use, per dialect.
_TYPES: dict[str, dict[str, str]] = {
    "postgresql": {
        "pk": "bigserial PRIMARY KEY",
        "uuid": "uuid",
        "text": "text",
        "ts": "timestamptz",
        "now": "now()",
        "int": "integer",
    },
    "mariadb": {
        "pk": "BIGINT AUTO_INCREMENT PRIMARY KEY",
        "uuid": "CHAR(36)",
        "text": "VARCHAR(255)",
        "ts": "DATETIME(6)",
        "now": "CURRENT_TIMESTAMP(6)",
        "int": "INT",
    },
    "sqlite": {
        # D1-shaped: INTEGER PRIMARY KEY (the rowid), TEXT timestamps from datetime('now').
        "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "uuid": "TEXT",
        "text": "TEXT",
        "ts": "TEXT",
        "now": "(datetime('now'))",
        "int": "INTEGER",
    },
}


def mysql_admin_url() -> str:
    return os.environ.get("TEST_MYSQL_URL") or DEFAULT_MYSQL_URL


def mysql_connect(url: str, **kwargs: Any) -> pymysql.Connection[Any]:
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
        autocommit=True,
        connect_timeout=3,
        **kwargs,
    )


def probe_mysql() -> str | None:
    """None when MariaDB/MySQL answers at TEST_MYSQL_URL, else why not."""
    try:
        with mysql_connect(mysql_admin_url()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return None
    except (pymysql.MySQLError, OSError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


@dataclass
class TargetDb:
    """A fresh target database of one dialect (see the module doc)."""

    dialect: str
    url: str
    _connect: Callable[[], Any]
    _admin: Any = None
    opened: list[Any] = field(default_factory=list)

    @property
    def target(self) -> TargetDatabase:
        return open_target(self.url, name="jobs_db")

    def ddl(self, template: str) -> str:
        return template.format(**_TYPES[self.dialect])

    def ago(self, seconds: int) -> str:
        """A timestamp ``seconds`` before the server's now, in the column's own form."""
        n = int(seconds)
        if self.dialect == "postgresql":
            return f"now() - interval '{n} seconds'"
        if self.dialect == "mariadb":
            return f"NOW(6) - INTERVAL {n} SECOND"
        return f"datetime('now', '-{n} seconds')"

    def connect(self) -> Any:
        conn = self._connect()
        self.opened.append(conn)
        return conn

    @property
    def admin(self) -> Any:
        if self._admin is None:
            self._admin = self.connect()
        return self._admin

    def sql(self, text: str, params: dict[str, Any] | None = None, conn: Any = None) -> list[Any]:
        """Run ``text`` (``;``-separated statements allowed without params) and return the
        last statement's rows as tuples."""
        conn = conn or self.admin
        if self.dialect == "postgresql":
            cur = conn.execute(text, params)
            return list(cur.fetchall()) if cur.description else []
        statements = [s for s in text.split(";") if s.strip()] if params is None else [text]
        rows: list[Any] = []
        for statement in statements:
            if self.dialect == "mariadb":
                with conn.cursor() as cur:
                    cur.execute(statement, params)
                    rows = list(cur.fetchall()) if cur.description else []
            else:
                named = re.sub(r"%\((\w+)\)s", r":\1", statement)
                cur = conn.execute(named, params or {})
                rows = list(cur.fetchall()) if cur.description else []
        return rows

    def close(self) -> None:
        for conn in self.opened:
            with suppress(Exception):  # already closed or killed by the test
                conn.close()


def _sqlite_connect(path: Path) -> Callable[[], Any]:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, timeout=10)

    return connect


@dataclass
class TargetFactory:
    """Creates and drops the per-test databases."""

    pg_admin_dsn: str | None
    mysql_url: str | None
    tmp_path: Path

    def create(self, dialect: str) -> Iterator[TargetDb]:
        name = f"bot_test_{uuid.uuid4().hex[:12]}"
        if dialect == "postgresql":
            assert self.pg_admin_dsn is not None
            with psycopg.connect(self.pg_admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            dsn = psycopg.conninfo.make_conninfo(self.pg_admin_dsn, dbname=name)
            db = TargetDb(dialect, dsn, lambda: psycopg.connect(dsn, autocommit=True))
            try:
                yield db
            finally:
                db.close()
                with psycopg.connect(self.pg_admin_dsn, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
        elif dialect == "mariadb":
            assert self.mysql_url is not None
            with mysql_connect(self.mysql_url) as conn, conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            parts = urlsplit(self.mysql_url)
            url = parts._replace(path=f"/{name}").geturl()
            db = TargetDb(dialect, url, lambda: mysql_connect(url))
            try:
                yield db
            finally:
                db.close()
                with mysql_connect(self.mysql_url) as conn, conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            path = self.tmp_path / f"{name}.db"
            sqlite3.connect(path).close()
            db = TargetDb(dialect, f"sqlite:///{path}", _sqlite_connect(path))
            try:
                yield db
            finally:
                db.close()

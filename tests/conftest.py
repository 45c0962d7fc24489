"""Shared fixtures: a real PostgreSQL (fresh database per test), clean environment, clock.

PostgreSQL is found through ``TEST_DATABASE_URL`` (default: the local server). When it
is unreachable, PostgreSQL tests are skipped locally, but with ``CI=true`` the whole
run fails loudly: a green CI must never mean "the database tests did not run".
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot.clock import FakeClock
from tests.targets import DIALECTS, TargetDb, TargetFactory, mysql_admin_url, probe_mysql

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_BOT_ENV_PREFIXES = ("SENTRY_", "BOT_", "GITHUB_", "SLACK_")


def _admin_dsn() -> str:
    return os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DSN


def _probe() -> str | None:
    try:
        with psycopg.connect(_admin_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


_PG_PROBLEM: str | None = None
_MYSQL_PROBLEM: str | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _PG_PROBLEM, _MYSQL_PROBLEM
    _PG_PROBLEM = _probe()
    _MYSQL_PROBLEM = probe_mysql()
    if _PG_PROBLEM and os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(
            f"CI=true but PostgreSQL at TEST_DATABASE_URL is unreachable: {_PG_PROBLEM}"
        )
    if _MYSQL_PROBLEM and os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(
            f"CI=true but MariaDB at TEST_MYSQL_URL is unreachable: {_MYSQL_PROBLEM}"
        )


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
    if _PG_PROBLEM:
        pytest.skip(f"PostgreSQL unreachable: {_PG_PROBLEM}")
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
    """A libpq DSN/URL as a SQLAlchemy URL using the psycopg 3 driver."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    user = info.get("user", "postgres")
    host = info.get("host", "127.0.0.1")
    port = info.get("port", "5432")
    password = info.get("password")
    auth = f"{user}:{password}" if password else f"{user}"
    return f"postgresql+psycopg://{auth}@{host}:{port}/{info.get('dbname', 'postgres')}"


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

"""Fixtures shared by the engine's integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot.clock import FakeClock
from bot.store.db import Store
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import World, make_world


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The bot's state store, upgraded to head, on each backend: a fresh SQLite file and
    a fresh real PostgreSQL database (so a fake cannot hide a backend difference)."""
    url = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if request.param == "sqlite"
        else sqlalchemy_url(request.getfixturevalue("pg_dsn"))
    )
    db = Store(url)
    db.upgrade()
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def world(pg_dsn: str, clock: FakeClock) -> Iterator[World]:
    """A PostgreSQL store and target (one fresh database), the FakeClock, an event log."""
    w = make_world(sqlalchemy_url(pg_dsn), pg_dsn, clock)
    yield w
    w.store.dispose()


@pytest.fixture
def victim_role(pg_admin_dsn: str) -> Iterator[str]:
    """A normal (non-superuser) login role; PUBLIC already has CONNECT on new databases."""
    role = f"bot_victim_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

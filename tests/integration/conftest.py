"""Fixtures shared by the engine's integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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

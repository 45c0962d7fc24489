"""Fixtures shared by the engine's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.clock import FakeClock
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import World, make_world


@pytest.fixture
def world(pg_dsn: str, clock: FakeClock) -> Iterator[World]:
    """A PostgreSQL store and target (one fresh database), the FakeClock, an event log."""
    w = make_world(sqlalchemy_url(pg_dsn), pg_dsn, clock)
    yield w
    w.store.dispose()

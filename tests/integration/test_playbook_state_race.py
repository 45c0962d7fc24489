"""The circuit breaker's per-playbook row under concurrency, on a real PostgreSQL store.

The first two verifications of a new playbook can happen at once (two replicas, the
webhook workers of ``serve``): both used to INSERT the missing ``playbook_state`` row and
the second failed with a unique violation. Now the row is created with ON CONFLICT DO
NOTHING and read FOR UPDATE, so the second waits for the first and both count.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from bot.pipeline.guards import record_verification
from bot.store.db import Store
from bot.store.models import PlaybookState
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import build_playbook, make_store

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def waiting_backends(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_first_verifications_of_a_new_playbook_both_count(pg_dsn: str) -> None:
    store: Store = make_store(sqlalchemy_url(pg_dsn))
    pb = build_playbook()
    first_inside, release_first = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with store.session() as session:
                record_verification(session, pb, False, NOW)
                first_inside.set()
                assert release_first.wait(60)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def second() -> None:
        try:
            with store.session() as session:
                record_verification(session, pb, False, NOW)
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    assert first_inside.wait(60)
    b = threading.Thread(target=second)
    b.start()
    # The second transaction is now blocked on the first's uncommitted row (a real lock
    # wait the server reports), not racing it by luck.
    for _ in range(600):
        if waiting_backends(pg_dsn):
            break
        threading.Event().wait(0.05)
    assert waiting_backends(pg_dsn) == 1
    release_first.set()
    a.join(60)
    b.join(60)

    assert errors == []
    with store.session() as session:
        row = session.get(PlaybookState, pb.id)
    assert row is not None and row.consecutive_failures == 2
    store.dispose()

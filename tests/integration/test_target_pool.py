"""PgTarget's small connection pool on a real PostgreSQL: one connection serves the
preview, execution and verification of a run; nothing of a session crosses over."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import psycopg
import pytest

from bot.adapters.targets.postgres import PgTarget
from bot.errors import RemediationError

pytestmark = pytest.mark.postgres


@pytest.fixture
def target(pg_dsn: str) -> Iterator[PgTarget]:
    t = PgTarget(pg_dsn, name="jobs_db")
    yield t
    t.close()


def _pid(target: PgTarget, *, read_only: bool = False) -> int:
    with target.transaction(5_000, 500, read_only=read_only) as conn:
        return int(conn.fetch_all("SELECT pg_backend_pid() AS pid")[0]["pid"])


def test_preview_execute_verify_share_one_connection(target: PgTarget) -> None:
    pids = {_pid(target, read_only=True), _pid(target), _pid(target, read_only=True)}
    assert len(pids) == 1


def test_pool_size_zero_opens_a_connection_per_transaction(pg_dsn: str) -> None:
    target = PgTarget(pg_dsn, pool_size=0)
    assert _pid(target) != _pid(target)


def test_a_failed_transaction_closes_its_connection(target: PgTarget) -> None:
    first = _pid(target)
    with pytest.raises(RemediationError), target.transaction(5_000, 500) as conn:
        conn.execute("SELECT 1 / 0")
    assert _pid(target) != first


def test_session_state_is_reset_before_reuse(target: PgTarget) -> None:
    # Seed 001: a session-scoped advisory lock left on a pooled connection. The pool must
    # never hand the next remediation a connection still holding one, nor a changed
    # session setting.
    with target.transaction(5_000, 500) as conn:
        conn.execute("SELECT pg_advisory_lock(20260417)")
        conn.execute("SET search_path TO pg_catalog")
        pid = conn.fetch_all("SELECT pg_backend_pid() AS pid")[0]["pid"]
    with target.transaction(5_000, 500, read_only=True) as conn:
        row = conn.fetch_all(
            "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "  AND pid = pg_backend_pid()) AS locks"
        )[0]
    assert row["pid"] == pid  # reused
    assert row["locks"] == 0
    assert row["path"] != "pg_catalog"


def test_a_connection_the_server_ended_is_not_reused(target: PgTarget, pg_dsn: str) -> None:
    first = _pid(target)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # Wait (bounded) until the backend is really gone.
        for _ in range(500):
            gone = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)
            ).fetchone()
            if gone is not None and gone[0] == 0:
                break
            admin.execute("SELECT pg_sleep(0.01)")
    # The next transaction runs on a fresh connection instead of failing.
    assert _pid(target) != first


def test_idle_connections_older_than_max_idle_are_not_reused(pg_dsn: str) -> None:
    target = PgTarget(pg_dsn, max_idle_s=0.0)
    try:
        first = _pid(target)
        assert _pid(target) != first
    finally:
        target.close()


def test_close_and_garbage_collection_close_idle_connections(pg_dsn: str) -> None:
    def backends() -> int:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'sentry-remediation-bot'"
            ).fetchone()
            return int(row[0]) if row else -1

    def settles_at(n: int) -> bool:
        # A closed backend leaves pg_stat_activity shortly after: poll, bounded.
        deadline = time.monotonic() + 30
        while backends() != n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    target = PgTarget(pg_dsn)
    _pid(target)
    assert settles_at(1)
    target.close()
    assert settles_at(0)
    target = PgTarget(pg_dsn)
    _pid(target)
    assert settles_at(1)
    del target
    gc.collect()  # no ResourceWarning (the suite turns warnings into errors)
    assert settles_at(0)


def test_a_transaction_the_server_rolled_back_is_never_reported_committed(
    target: PgTarget,
) -> None:
    # PostgreSQL answers COMMIT with ROLLBACK (no error) when a statement inside the
    # transaction failed; psycopg passes that on silently. If the failure was handled
    # inside (caught, no savepoint), the write did NOT happen: say so, loudly.
    with target.transaction(5_000, 500) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_check (x integer)")
    with (
        pytest.raises(RemediationError, match="rolled back"),
        target.transaction(5_000, 500) as conn,
    ):
        conn.execute("INSERT INTO commit_check VALUES (1)")
        with pytest.raises(RemediationError):
            conn.execute("SELECT 1 / 0")
    with target.transaction(5_000, 500, read_only=True) as conn:
        assert conn.fetch_all("SELECT count(*) AS n FROM commit_check")[0]["n"] == 0

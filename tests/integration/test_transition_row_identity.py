"""Row identity and catalog freshness of the state transition, on a real PostgreSQL.

- A candidate updated by another session after our statement's snapshot but before our
  ``FOR UPDATE SKIP LOCKED`` reaches it: the lock follows the update chain to the newest
  version and re-checks the condition on it (EvalPlanQual, PostgreSQL docs 13.2.1 "Read
  Committed Isolation Level"; src/backend/executor/nodeLockRows.c). The candidates CTE
  then carries that version's ``ctid``, which our own snapshot cannot see: an UPDATE
  joined on ``(tableoid, ctid)`` finds nothing and leaves the row locked but stuck, while
  the primary-key join finds the snapshot's version and follows the chain again in the
  UPDATE (EvalPlanQual in ExecUpdate). These tests pin the primary-key behaviour, on a
  plain and on a partitioned table.
- The catalog is read for every execution: an ALTER between two executions on the same
  pooled connection gets SQL for the new schema (a type change, a new NOT NULL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bot.actions.base import Limits
from bot.actions.requeue import ACTION, RequeueSettings
from bot.adapters.targets.postgres import PgTarget
from bot.errors import RemediationError

pytestmark = pytest.mark.postgres

LIMITS = Limits(max_rows=50, statement_timeout_ms=10_000, lock_timeout_ms=2_000, batch_size=10)

# The staleness test reads the worker heartbeats through a view that sleeps once per
# scan: the first candidate's filter builds the (hashed) NOT IN set, so our statement has
# taken its snapshot and waits there, before it locks any row.
WORKERS = """
CREATE TABLE workers (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
INSERT INTO workers VALUES ('w-dead', now() - interval '1 hour'), ('w-live', now());
CREATE VIEW slow_workers AS SELECT w.* FROM workers AS w, pg_sleep(0.5) AS s;
"""
PLAIN = """
CREATE TABLE jobs (queue text NOT NULL, id integer NOT NULL, state text NOT NULL,
                   worker_id text, note text, PRIMARY KEY (queue, id));
"""
# pg-boss's shape: partitioned by queue name, so each partition's first row has ctid (0,1).
PARTITIONED = """
CREATE TABLE jobs (queue text NOT NULL, id integer NOT NULL, state text NOT NULL,
                   worker_id text, note text, PRIMARY KEY (queue, id)) PARTITION BY LIST (queue);
CREATE TABLE jobs_a PARTITION OF jobs FOR VALUES IN ('a');
CREATE TABLE jobs_b PARTITION OF jobs FOR VALUES IN ('b');
"""
ROWS = """
INSERT INTO jobs VALUES ('a', 1, 'active', 'w-dead', 'seen'), ('b', 1, 'active', 'w-dead', 'seen'),
                        ('a', 2, 'active', 'w-live', 'seen');
"""


@pytest.fixture(params=["plain", "partitioned"])
def db(request: pytest.FixtureRequest, pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(WORKERS)
        conn.execute(PLAIN if request.param == "plain" else PARTITIONED)
        conn.execute(ROWS)
        yield conn


def settings(workers: str = "slow_workers", **overrides: Any) -> RequeueSettings:
    values: dict[str, Any] = {
        "table": "jobs",
        "status_column": "state",
        "running_values": ["active"],
        "stale": {
            "owner_heartbeat": {
                "table": workers,
                "owner_column": "worker_id",
                "heartbeat_column": "last_heartbeat",
                "seconds": 60,
            }
        },
        "set": {"state": "retry", "note": "requeued"},
    }
    return RequeueSettings.model_validate(values | overrides)


def rows(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT queue, id, state, note FROM jobs ORDER BY queue, id").fetchall()


def test_a_candidate_updated_after_the_snapshot_is_requeued_on_its_newest_version(
    db: psycopg.Connection[Any], pg_dsn: str
) -> None:
    before_ctid = db.execute("SELECT ctid::text FROM jobs WHERE (queue, id) = ('a', 1)").fetchone()
    touched = threading.Event()

    def touch_once_our_statement_sleeps() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                sleeping = other.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                    " AND query LIKE %s",
                    ("%candidates%",),
                ).fetchone()
                if sleeping and sleeping[0]:
                    # Still stuck (owner dead, state active): only the note changes.
                    other.execute("UPDATE jobs SET note = 'touched' WHERE (queue, id) = ('a', 1)")
                    touched.set()
                    return
                time.sleep(0.01)

    toucher = threading.Thread(target=touch_once_our_statement_sleeps)
    toucher.start()
    target = PgTarget(pg_dsn, name="jobs_db")
    with target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
    toucher.join()

    assert touched.is_set()
    after_ctid = db.execute("SELECT ctid::text FROM jobs WHERE (queue, id) = ('a', 1)").fetchone()
    assert after_ctid != before_ctid
    assert rows(db) == [
        ("a", 1, "retry", "requeued"),
        ("a", 2, "active", "seen"),  # its worker is alive
        ("b", 1, "retry", "requeued"),
    ]
    # The before-image is the version we locked and changed: the other session's note.
    assert sorted(outcome.before_image, key=lambda b: (b["queue"], b["id"])) == [
        {"queue": "a", "id": 1, "state": "active", "note": "touched"},
        {"queue": "b", "id": 1, "state": "active", "note": "seen"},
    ]


def test_an_alter_between_two_executions_gets_sql_for_the_new_schema(
    db: psycopg.Connection[Any], pg_dsn: str
) -> None:
    target = PgTarget(pg_dsn, name="jobs_db", pool_size=1)  # the same connection twice
    fast = settings(workers="workers")
    with target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn:
        first = ACTION.execute(conn, fast, {}, LIMITS)
        pid = conn.fetch_all("SELECT pg_backend_pid() AS pid")[0]["pid"]
    assert first.rows_affected == 2

    db.execute("CREATE TYPE job_state AS ENUM ('active', 'retry', 'failed')")
    db.execute("ALTER TABLE jobs ALTER COLUMN state TYPE job_state USING state::job_state")
    db.execute("UPDATE jobs SET state = 'active', note = 'seen'")
    with target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn:
        assert conn.fetch_all("SELECT pg_backend_pid() AS pid")[0]["pid"] == pid
        # A text-typed value into the enum column would be refused by PostgreSQL
        # ("column "state" is of type job_state but expression is of type text").
        second = ACTION.execute(conn, fast, {}, LIMITS)
    assert second.rows_affected == 2
    assert [r[2] for r in rows(db)] == ["retry", "active", "retry"]

    db.execute("UPDATE jobs SET state = 'active'")
    db.execute("UPDATE jobs SET note = '' WHERE note IS NULL")
    db.execute("ALTER TABLE jobs ALTER COLUMN note SET NOT NULL")
    with (
        pytest.raises(RemediationError, match="NOT NULL"),
        target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn,
    ):
        assert conn.fetch_all("SELECT pg_backend_pid() AS pid")[0]["pid"] == pid
        ACTION.execute(
            conn, settings(workers="workers", set={"state": "retry", "note": None}), {}, LIMITS
        )
    assert [r[2] for r in rows(db)] == ["active", "active", "active"]

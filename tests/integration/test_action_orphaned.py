"""fail_orphaned_tasks on a real PostgreSQL: seed 000 BLUE-BANDED-BEE-3Y (job removed
while its tasks were still running)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bot.actions.base import Limits, Outcome
from bot.actions.orphaned import ACTION, OrphanedSettings
from bot.adapters.targets.postgres import PgTarget
from bot.errors import LockTimeout, TooManyRows

pytestmark = pytest.mark.postgres

LIVE_JOB = "11111111-2222-4333-8444-555555555555"
GONE_JOB = "0bf5a3fc-4cae-4e2b-9d1a-6f2b7c1d0e11"
LIMITS = Limits(max_rows=10, statement_timeout_ms=5_000, lock_timeout_ms=500)


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE jobs (id uuid PRIMARY KEY);"
            "CREATE TABLE tasks (id bigserial PRIMARY KEY, job_id uuid, status text NOT NULL,"
            " failure_reason text, updated_at timestamptz NOT NULL DEFAULT now() - interval '1h')"
        )
        conn.execute("INSERT INTO jobs VALUES (%s)", (LIVE_JOB,))
        yield conn


def add(db: Any, job: str | None, status: str = "running") -> int:
    row = db.execute(
        "INSERT INTO tasks (job_id, status) VALUES (%s, %s) RETURNING id", (job, status)
    ).fetchone()
    return int(row[0])


def state(db: Any, task_id: int) -> tuple[str, str | None]:
    row = db.execute("SELECT status, failure_reason FROM tasks WHERE id = %s", (task_id,))
    return tuple(row.fetchone())  # type: ignore[return-value]


SETTINGS = OrphanedSettings(reason_column="failure_reason", set_now_columns=("updated_at",))


def test_fails_active_tasks_of_removed_jobs_only(db: Any, pg_dsn: str) -> None:
    running, pending = add(db, GONE_JOB), add(db, GONE_JOB, "pending")
    done = add(db, GONE_JOB, "done")
    live = add(db, LIVE_JOB)
    no_job = add(db, None)
    target = PgTarget(pg_dsn)

    with target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, SETTINGS, {}, LIMITS)

    assert outcome.details["ids"] == [running, pending]
    assert state(db, running) == ("failed", "job_removed")
    assert state(db, pending) == ("failed", "job_removed")
    assert state(db, done) == ("done", None)
    assert state(db, live) == ("running", None)
    assert state(db, no_job) == ("running", None)
    assert outcome.before_image[0]["status"] == "running"
    assert outcome.before_image[0]["failure_reason"] is None
    assert outcome.before_image[0]["job_id"] == GONE_JOB
    with target.transaction(5_000, 500) as conn:
        assert ACTION.verify(conn, SETTINGS, {}, outcome).ok
        assert ACTION.preview(conn, SETTINGS, {}, LIMITS).count == 0


def test_max_rows_exceeded_changes_nothing(db: Any, pg_dsn: str) -> None:
    ids = [add(db, GONE_JOB) for _ in range(3)]
    with pytest.raises(TooManyRows), PgTarget(pg_dsn).transaction(5_000, 500) as conn:
        ACTION.execute(conn, SETTINGS, {}, Limits(max_rows=2))
    assert {state(db, i) for i in ids} == {("running", None)}


def test_scope_and_hostile_param(db: Any, pg_dsn: str) -> None:
    task = add(db, GONE_JOB)
    scoped = OrphanedSettings(reason_column="failure_reason", scope={"job_id": "job_id"})
    target = PgTarget(pg_dsn)
    with target.transaction(5_000, 500) as conn:
        assert ACTION.execute(conn, scoped, {"job_id": LIVE_JOB}, LIMITS).rows_affected == 0
    assert state(db, task) == ("running", None)
    with target.transaction(5_000, 500) as conn:
        assert ACTION.execute(conn, scoped, {"job_id": GONE_JOB}, LIMITS).rows_affected == 1


def test_row_locked_by_worker_is_skipped(db: Any, pg_dsn: str) -> None:
    held, free = add(db, GONE_JOB), add(db, GONE_JOB)
    with psycopg.connect(pg_dsn) as worker:
        worker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (held,))
        with PgTarget(pg_dsn).transaction(5_000, 500) as conn:
            outcome = ACTION.execute(conn, SETTINGS, {}, LIMITS)
        worker.rollback()
    assert outcome.details["ids"] == [free]
    assert state(db, held) == ("running", None)


def test_lock_timeout_rolls_back(db: Any, pg_dsn: str) -> None:
    task = add(db, GONE_JOB)
    with psycopg.connect(pg_dsn) as other:
        other.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(LockTimeout), PgTarget(pg_dsn).transaction(5_000, 300) as conn:
            ACTION.execute(conn, SETTINGS, {}, LIMITS)
        other.rollback()
    assert state(db, task) == ("running", None)


def test_verify_detects_still_orphaned(db: Any, pg_dsn: str) -> None:
    task = add(db, GONE_JOB)
    with PgTarget(pg_dsn).transaction(5_000, 500, read_only=True) as conn:
        check = ACTION.verify(conn, SETTINGS, {}, Outcome(1, details={"ids": [task]}))
    assert not check.ok

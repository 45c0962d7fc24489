"""requeue_stuck_tasks on a real PostgreSQL: seed 000 (stuck task, dead worker) and seed
004 bug 1 (never write NULL into started_at NOT NULL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from bot.actions.base import Limits
from bot.actions.requeue import ACTION, RequeueSettings
from bot.adapters.targets.postgres import PgTarget
from bot.errors import LockTimeout, RemediationError, TooManyRows

pytestmark = pytest.mark.postgres

SCHEMA = """
CREATE TABLE workers (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    queue text NOT NULL DEFAULT 'default',
    status text NOT NULL,
    worker_id text,
    requeue_count integer NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""
JOB = "0bf5a3fc-4cae-4e2b-9d1a-6f2b7c1d0e11"
OTHER_JOB = "11111111-2222-4333-8444-555555555555"
LIMITS = Limits(max_rows=100, statement_timeout_ms=5_000, lock_timeout_ms=500, batch_size=50)


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO workers VALUES ('w-dead', now() - interval '1 hour'), ('w-live', now())"
        )
        yield conn


@pytest.fixture
def target(pg_dsn: str) -> PgTarget:
    return PgTarget(pg_dsn, name="jobs_db")


def add_task(
    db: psycopg.Connection[Any],
    *,
    status: str = "running",
    worker: str | None = "w-dead",
    job: str = JOB,
    queue: str = "default",
    requeues: int = 0,
    started_ago: str = "2 hours",
) -> int:
    row = db.execute(
        "INSERT INTO tasks (job_id, queue, status, worker_id, requeue_count, started_at,"
        " updated_at) VALUES (%s, %s, %s, %s, %s, now() - %s::interval,"
        " now() - %s::interval) RETURNING id",
        (job, queue, status, worker, requeues, started_ago, started_ago),
    ).fetchone()
    assert row is not None
    return int(row[0])


def task(db: psycopg.Connection[Any], task_id: int) -> dict[str, Any]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def heartbeat_settings(**overrides: Any) -> RequeueSettings:
    values: dict[str, Any] = {
        "table": "tasks",
        "mode": "owner_heartbeat",
        "worker_table": "workers",
        "worker_id_column": "worker_id",
        "worker_heartbeat_column": "last_heartbeat",
        "lease_seconds": 30,
        "requeue_count_column": "requeue_count",
        "max_requeues": 3,
        "reason_column": "error",
        "set_now_columns": ["updated_at"],
    }
    return RequeueSettings.model_validate(values | overrides)


def run(
    target: PgTarget,
    settings: RequeueSettings,
    params: dict[str, Any] | None = None,
    limits: Limits = LIMITS,
) -> Any:
    with target.transaction(limits.statement_timeout_ms, limits.lock_timeout_ms) as conn:
        return ACTION.execute(conn, settings, params or {}, limits)


def test_requeues_tasks_of_dead_or_missing_workers_only(db: Any, target: PgTarget) -> None:
    dead = add_task(db, worker="w-dead")
    missing = add_task(db, worker="w-gone")
    live = add_task(db, worker="w-live")
    finished = add_task(db, status="done", worker="w-dead")
    before = task(db, dead)

    outcome = run(target, heartbeat_settings())

    assert sorted(outcome.details["ids"]) == sorted([dead, missing])
    assert outcome.rows_affected == 2
    after = task(db, dead)
    assert after["status"] == "pending"
    assert after["requeue_count"] == 1
    assert after["started_at"] == before["started_at"]  # seed 004 bug 1: untouched
    assert after["updated_at"] > before["updated_at"]
    assert task(db, live)["status"] == "running"
    assert task(db, finished)["status"] == "done"
    image = next(b for b in outcome.before_image if b["id"] == dead)
    assert image["status"] == "running"
    assert image["requeue_count"] == "0"  # old values in PostgreSQL's text form
    assert datetime.fromisoformat(image["updated_at"]) == before["updated_at"]
    assert "started_at" not in image

    with target.transaction(5_000, 500) as conn:
        check = ACTION.verify(conn, heartbeat_settings(), {}, outcome)
    assert check.ok, check.summary
    assert run(target, heartbeat_settings()).rows_affected == 0  # idempotent


def test_lease_timeout_on_not_null_started_at_never_writes_null(db: Any, target: PgTarget) -> None:
    # Seed 004: resource_backups.started_at is TIMESTAMPTZ NOT NULL.
    db.execute(
        "CREATE TABLE resource_backups (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " status text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(),"
        " finished_at timestamptz)"
    )
    db.execute(
        "INSERT INTO resource_backups (status, started_at) VALUES"
        " ('running', now() - interval '2 hours'), ('running', now() - interval '1 minute')"
    )
    old = db.execute("SELECT id, started_at FROM resource_backups ORDER BY started_at").fetchall()
    settings = RequeueSettings(
        table="resource_backups",
        mode="lease_timeout",
        lease_column="started_at",
        timeout_seconds=600,
    )

    outcome = run(target, settings)

    assert outcome.details["ids"] == [str(old[0][0])]
    rows = dict(db.execute("SELECT id, status FROM resource_backups").fetchall())
    assert rows == {old[0][0]: "pending", old[1][0]: "running"}
    assert db.execute("SELECT id, started_at FROM resource_backups ORDER BY id").fetchall() == (
        sorted(old)
    )


def test_max_rows_exceeded_changes_nothing(db: Any, target: PgTarget) -> None:
    ids = [add_task(db) for _ in range(5)]
    with pytest.raises(TooManyRows):
        run(target, heartbeat_settings(), limits=Limits(max_rows=4))
    assert {task(db, i)["status"] for i in ids} == {"running"}
    assert {task(db, i)["requeue_count"] for i in ids} == {0}


def test_dead_letters_past_the_cap_with_a_reason(db: Any, target: PgTarget) -> None:
    capped = add_task(db, requeues=3)
    under = add_task(db, requeues=2)

    outcome = run(target, heartbeat_settings(max_requeues=3, dead_letter_reason="requeue_cap"))

    assert task(db, capped)["status"] == "failed"
    assert task(db, capped)["error"] == "requeue_cap"
    assert task(db, capped)["requeue_count"] == 3
    assert task(db, under)["status"] == "pending"
    assert task(db, under)["requeue_count"] == 3
    assert task(db, under)["error"] is None
    assert outcome.details["dead_lettered"] == 1
    assert outcome.details["requeued"] == 1


def test_before_image_is_exactly_id_and_old_values_across_batches(
    db: Any, target: PgTarget
) -> None:
    # Rows come back from the database already shaped as image entries; the dead-letter
    # flag must be taken out, and batches (here 3 of at most 2 rows) must add up.
    capped = add_task(db, requeues=3)
    others = [add_task(db, requeues=1) for _ in range(4)]

    outcome = run(target, heartbeat_settings(), limits=Limits(max_rows=10, batch_size=2))

    assert sorted(outcome.details["ids"]) == sorted([capped, *others])
    assert (outcome.details["requeued"], outcome.details["dead_lettered"]) == (4, 1)
    keys = {"id", "status", "requeue_count", "error", "updated_at"}
    assert all(set(entry) == keys for entry in outcome.before_image)
    image = {entry["id"]: entry for entry in outcome.before_image}
    assert image[capped]["requeue_count"] == "3"
    assert image[capped]["error"] is None
    assert {image[i]["requeue_count"] for i in others} == {"1"}
    assert task(db, capped)["status"] == "failed"


def test_scope_binds_the_extracted_param(db: Any, target: PgTarget) -> None:
    mine = add_task(db, job=JOB)
    other = add_task(db, job=OTHER_JOB)
    settings = heartbeat_settings(scope={"job_id": "job_id"})

    outcome = run(target, settings, {"job_id": JOB})

    assert outcome.details["ids"] == [mine]
    assert task(db, other)["status"] == "running"
    with pytest.raises(RemediationError, match="job_id"):
        run(target, settings, {})  # a missing scope param never widens the update
    assert task(db, other)["status"] == "running"


@pytest.mark.parametrize("hostile", ["'; DROP TABLE tasks; --", "x" * 10_000, "default' OR '1'='1"])
def test_hostile_param_values_are_bound(db: Any, target: PgTarget, hostile: str) -> None:
    stuck = add_task(db, queue="default")
    outcome = run(target, heartbeat_settings(scope={"queue": "queue"}), {"queue": hostile})
    assert outcome.rows_affected == 0
    assert task(db, stuck)["status"] == "running"
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_row_locked_by_a_worker_is_skipped_not_waited_on(
    db: Any, target: PgTarget, pg_dsn: str
) -> None:
    held = add_task(db)
    free = add_task(db)
    with psycopg.connect(pg_dsn) as worker:
        worker.execute("SELECT * FROM tasks WHERE id = %s FOR UPDATE", (held,))
        # lock_timeout is 500 ms: waiting on the held row would raise LockTimeout.
        outcome = run(target, heartbeat_settings())
        worker.rollback()
    assert outcome.details["ids"] == [free]
    assert task(db, held)["status"] == "running"
    assert task(db, held)["requeue_count"] == 0


def test_table_lock_times_out_and_rolls_back(db: Any, target: PgTarget, pg_dsn: str) -> None:
    stuck = add_task(db)
    with psycopg.connect(pg_dsn) as other:
        other.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(LockTimeout):
            run(target, heartbeat_settings())
        other.rollback()
    assert task(db, stuck)["status"] == "running"


def test_concurrent_executions_requeue_each_row_exactly_once(db: Any, target: PgTarget) -> None:
    ids = [add_task(db) for _ in range(120)]
    limits = Limits(max_rows=500, lock_timeout_ms=2_000, batch_size=7)
    barrier = threading.Barrier(3)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(run(target, heartbeat_settings(), limits=limits))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sum(r.rows_affected for r in results) == len(ids)
    counts = db.execute("SELECT requeue_count, count(*) FROM tasks GROUP BY 1").fetchall()
    assert counts == [(1, len(ids))]


def test_verify_reports_rows_still_stuck(db: Any, target: PgTarget) -> None:
    stuck = add_task(db)
    from bot.actions.base import Outcome

    with target.transaction(5_000, 500, read_only=True) as conn:
        check = ACTION.verify(conn, heartbeat_settings(), {}, Outcome(1, details={"ids": [stuck]}))
    assert not check.ok
    assert check.details["still_stuck"] == [stuck]


def test_preview_runs_the_statement_and_rolls_it_back(db: Any, target: PgTarget) -> None:
    stuck = add_task(db)
    capped = add_task(db, requeues=3)
    # A committing transaction: the preview's own savepoint is what keeps it harmless.
    with target.transaction(5_000, 500) as conn:
        preview = ACTION.preview(conn, heartbeat_settings(), {}, LIMITS)
    assert preview.count == 2
    assert "requeue 1 and dead-letter 1" in preview.summary
    assert {r["id"] for r in preview.rows} == {stuck, capped}
    assert task(db, stuck)["status"] == "running"
    assert task(db, capped)["status"] == "running"
    assert task(db, stuck)["requeue_count"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"table": "tasks; DROP TABLE tasks"},
        {"set_now_columns": ["status"]},
        {"mode": "lease_timeout"},
        {"lease_column": "started_at"},
        {"requeue_count_column": None},
        {"unknown_key": 1},
    ],
)
def test_settings_reject_bad_playbooks(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        heartbeat_settings(**overrides)

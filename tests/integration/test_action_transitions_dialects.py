"""requeue_stuck_tasks and fail_orphaned_tasks over PostgreSQL, MariaDB and SQLite: the
cases of the PostgreSQL suites (seed 000 stuck tasks and removed jobs, seed 004 bug 1
never writing NULL), each on a fresh database of every dialect. Typed values: the status
column is an enum (PostgreSQL enum type, MariaDB ENUM, SQLite CHECK), timestamps are
each engine's own (timestamptz, DATETIME(6), D1's datetime('now') TEXT)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from bot.actions.base import Limits, Outcome
from bot.actions.orphaned import ACTION as ORPHANED
from bot.actions.orphaned import OrphanedSettings
from bot.actions.requeue import ACTION as REQUEUE
from bot.actions.requeue import RequeueSettings
from bot.errors import LockTimeout, RemediationError, TooManyRows
from tests.targets import TargetDb

JOB = "0bf5a3fc-4cae-4e2b-9d1a-6f2b7c1d0e11"
OTHER_JOB = "11111111-2222-4333-8444-555555555555"
LIMITS = Limits(max_rows=100, statement_timeout_ms=10_000, lock_timeout_ms=500, batch_size=50)
STATES = ("pending", "running", "done", "failed")
STATUS = {
    "postgresql": "task_status NOT NULL",
    "mariadb": "ENUM('pending','running','done','failed') NOT NULL",
    "sqlite": "TEXT NOT NULL CHECK (status IN ('pending','running','done','failed'))",
}
SCHEMA = (
    "CREATE TABLE workers (id {text} PRIMARY KEY, last_heartbeat {ts} NOT NULL);"
    "CREATE TABLE jobs (id {uuid} PRIMARY KEY);"
    "CREATE TABLE tasks (id {pk}, job_id {uuid}, queue {text} NOT NULL DEFAULT 'default',"
    " status {status}, worker_id {text}, requeue_count {int} NOT NULL DEFAULT 0,"
    " error TEXT, started_at {ts} NOT NULL, updated_at {ts} NOT NULL DEFAULT {now})"
)


@pytest.fixture
def db(target_db: TargetDb) -> TargetDb:
    if target_db.dialect == "postgresql":
        target_db.sql("CREATE TYPE task_status AS ENUM ('pending', 'running', 'done', 'failed')")
    target_db.sql(target_db.ddl(SCHEMA.replace("{status}", STATUS[target_db.dialect])))
    target_db.sql(
        f"INSERT INTO workers VALUES ('w-dead', {target_db.ago(3600)})"  # noqa: S608
    )
    target_db.sql(f"INSERT INTO workers VALUES ('w-live', {target_db.ago(0)})")  # noqa: S608
    target_db.sql("INSERT INTO jobs VALUES (%(j)s)", {"j": OTHER_JOB})
    return target_db


def add_task(
    db: TargetDb,
    *,
    status: str = "running",
    worker: str | None = "w-dead",
    job: str | None = JOB,
    queue: str = "default",
    requeues: int = 0,
    ago: int = 7200,
) -> int:
    db.sql(
        "INSERT INTO tasks (job_id, queue, status, worker_id, requeue_count, started_at,"  # noqa: S608
        f" updated_at) VALUES (%(j)s, %(q)s, %(s)s, %(w)s, %(r)s, {db.ago(ago)}, {db.ago(ago)})",
        {"j": job, "q": queue, "s": status, "w": worker, "r": requeues},
    )
    return int(db.sql("SELECT max(id) FROM tasks")[0][0])


def task(db: TargetDb, task_id: int) -> dict[str, Any]:
    cols = ("status", "requeue_count", "error", "started_at", "updated_at")
    row = db.sql(f"SELECT {', '.join(cols)} FROM tasks WHERE id = %(i)s", {"i": task_id})  # noqa: S608
    return dict(zip(cols, row[0], strict=True))


def statuses(db: TargetDb) -> list[str]:
    return [str(r[0]) for r in db.sql("SELECT status FROM tasks ORDER BY id")]


def heartbeat(**overrides: Any) -> RequeueSettings:
    return RequeueSettings.model_validate(
        {
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
        | overrides
    )


def run(db: TargetDb, settings: Any, params: dict[str, Any] | None = None, **kw: Any) -> Outcome:
    limits: Limits = kw.get("limits", LIMITS)
    action = kw.get("action", REQUEUE)
    with db.target.transaction(limits.statement_timeout_ms, limits.lock_timeout_ms) as conn:
        outcome: Outcome = action.execute(conn, settings, params or {}, limits)
    return outcome


def test_requeues_tasks_of_dead_or_missing_workers_only(db: TargetDb) -> None:
    dead, missing = add_task(db, worker="w-dead"), add_task(db, worker="w-gone")
    live, finished = add_task(db, worker="w-live"), add_task(db, status="done")
    before = task(db, dead)

    with db.target.transaction(10_000, 500) as conn:
        preview = REQUEUE.preview(conn, heartbeat(), {}, LIMITS)
    outcome = run(db, heartbeat())

    assert sorted(outcome.details["ids"]) == [dead, missing]
    assert preview.rows == outcome.before_image  # preview == execute
    after = task(db, dead)
    assert (after["status"], after["requeue_count"]) == ("pending", 1)
    assert after["started_at"] == before["started_at"]  # seed 004 bug 1: untouched
    assert after["updated_at"] != before["updated_at"]
    assert task(db, live)["status"] == "running"
    assert task(db, finished)["status"] == "done"
    image = next(b for b in outcome.before_image if b["id"] == dead)
    assert (image["status"], str(image["requeue_count"])) == ("running", "0")
    with db.target.transaction(10_000, 500, read_only=True) as conn:
        assert REQUEUE.verify(conn, heartbeat(), {}, outcome).ok
    assert run(db, heartbeat()).rows_affected == 0  # idempotent


def test_lease_timeout_on_not_null_started_at_never_writes_null(db: TargetDb) -> None:
    old, fresh = add_task(db, ago=7200), add_task(db, ago=60)
    starts = {i: task(db, i)["started_at"] for i in (old, fresh)}
    settings = RequeueSettings(
        table="tasks", mode="lease_timeout", lease_column="started_at", timeout_seconds=600
    )
    assert run(db, settings).details["ids"] == [old]
    assert statuses(db) == ["pending", "running"]
    assert {i: task(db, i)["started_at"] for i in (old, fresh)} == starts


def test_a_null_into_a_not_null_column_is_refused_by_the_catalog(db: TargetDb) -> None:
    stuck = add_task(db)
    settings = RequeueSettings.model_validate(
        {
            "table": "tasks",
            "status_column": "status",
            "running_values": ["running"],
            "stale": {
                "age": {
                    "column": "updated_at",
                    "seconds": 600,
                    "no_liveness_signal": "a test of the NOT NULL refusal",
                }
            },
            "set": {"status": "pending", "started_at": None},
        }
    )
    with pytest.raises(RemediationError, match="NOT NULL"):
        run(db, settings)
    assert task(db, stuck)["status"] == "running"


def test_a_value_the_column_type_refuses_rolls_back(db: TargetDb) -> None:
    stuck = add_task(db)
    with pytest.raises(RemediationError):
        run(db, heartbeat(pending_value="not-a-state"))
    assert task(db, stuck)["status"] == "running"


def test_max_rows_exceeded_changes_nothing(db: TargetDb) -> None:
    ids = [add_task(db) for _ in range(5)]
    with pytest.raises(TooManyRows):
        run(db, heartbeat(), limits=Limits(max_rows=4, batch_size=2))
    assert {task(db, i)["status"] for i in ids} == {"running"}
    assert {task(db, i)["requeue_count"] for i in ids} == {0}


def test_dead_letters_past_the_cap_with_a_reason(db: TargetDb) -> None:
    capped, under = add_task(db, requeues=3), add_task(db, requeues=2)
    outcome = run(db, heartbeat(dead_letter_reason="requeue_cap"))
    assert (task(db, capped)["status"], task(db, capped)["error"]) == ("failed", "requeue_cap")
    assert task(db, capped)["requeue_count"] == 3
    assert (task(db, under)["status"], task(db, under)["requeue_count"]) == ("pending", 3)
    assert (outcome.details["dead_lettered"], outcome.details["changed"]) == (1, 1)


@pytest.mark.parametrize(
    "hostile", ["'; DROP TABLE tasks; --", "default' OR '1'='1", "x\\' OR 1=1 -- ", "ü" * 300]
)
def test_hostile_scope_values_are_bound(db: TargetDb, hostile: str) -> None:
    stuck = add_task(db, queue="default")
    outcome = run(db, heartbeat(scope={"queue": "queue"}), {"queue": hostile})
    assert outcome.rows_affected == 0
    assert task(db, stuck)["status"] == "running"
    assert db.sql("SELECT count(*) FROM tasks")[0][0] == 1


def test_scope_narrows_and_a_missing_scope_param_never_widens(db: TargetDb) -> None:
    mine, other = add_task(db, job=JOB), add_task(db, job=OTHER_JOB)
    settings = heartbeat(scope={"job_id": "job_id"})
    assert run(db, settings, {"job_id": JOB}).details["ids"] == [mine]
    with pytest.raises(RemediationError, match="job_id"):
        run(db, settings, {})
    assert task(db, other)["status"] == "running"


def test_a_row_a_worker_holds_is_skipped_or_the_run_times_out(db: TargetDb) -> None:
    held, free = add_task(db), add_task(db)
    worker = db.connect()
    if db.dialect == "sqlite":
        db.sql("BEGIN IMMEDIATE", conn=worker)  # a writer holds the whole file
        with pytest.raises(LockTimeout):
            run(db, heartbeat(), limits=Limits(lock_timeout_ms=300))
        db.sql("ROLLBACK", conn=worker)
        assert statuses(db) == ["running", "running"]
        return
    db.sql("BEGIN", conn=worker)
    db.sql("SELECT id FROM tasks WHERE id = %(i)s FOR UPDATE", {"i": held}, worker)
    outcome = run(db, heartbeat())  # lock_timeout 500 ms: waiting would raise
    db.sql("ROLLBACK", conn=worker)
    assert outcome.details["ids"] == [free]
    assert task(db, held)["status"] == "running"


def test_a_table_lock_times_out_and_rolls_back(db: TargetDb) -> None:
    stuck = add_task(db)
    other = db.connect()
    lock = {
        "postgresql": "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE",
        "mariadb": "LOCK TABLES tasks WRITE",
        "sqlite": "BEGIN EXCLUSIVE",
    }[db.dialect]
    db.sql(lock, conn=other)
    with pytest.raises(LockTimeout):
        run(db, heartbeat(), limits=Limits(lock_timeout_ms=300))
    db.sql("UNLOCK TABLES" if db.dialect == "mariadb" else "ROLLBACK", conn=other)
    assert task(db, stuck)["status"] == "running"


def test_concurrent_runs_requeue_each_row_exactly_once(db: TargetDb) -> None:
    ids = [add_task(db) for _ in range(40)]
    limits = Limits(max_rows=500, statement_timeout_ms=30_000, lock_timeout_ms=20_000, batch_size=7)
    barrier = threading.Barrier(3)
    results: list[Outcome] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(run(db, heartbeat(), limits=limits))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(i for r in results for i in r.details["ids"]) == ids
    assert db.sql("SELECT requeue_count, count(*) FROM tasks GROUP BY requeue_count") == [
        (1, len(ids))
    ]


def test_fail_orphaned_tasks_of_removed_jobs_only(db: TargetDb) -> None:
    running, pending = add_task(db, job=JOB), add_task(db, job=JOB, status="pending")
    done, live = add_task(db, job=JOB, status="done"), add_task(db, job=OTHER_JOB)
    no_job = add_task(db, job=None)
    settings = OrphanedSettings(reason_column="error", set_now_columns=("updated_at",))
    with db.target.transaction(10_000, 500) as conn:
        preview = ORPHANED.preview(conn, settings, {}, LIMITS)
    outcome = run(db, settings, action=ORPHANED)
    assert sorted(outcome.details["ids"]) == [running, pending]
    assert preview.rows == outcome.before_image
    assert [(task(db, i)["status"], task(db, i)["error"]) for i in (running, pending)] == [
        ("failed", "job_removed"),
        ("failed", "job_removed"),
    ]
    assert [task(db, i)["status"] for i in (done, live, no_job)] == ["done", "running", "running"]
    late = add_task(db, job=JOB)  # orphaned after the run: verify must notice it
    with db.target.transaction(10_000, 500, read_only=True) as conn:
        assert ORPHANED.verify(conn, settings, {}, outcome).ok
        assert not ORPHANED.verify(conn, settings, {}, Outcome(1, details={"ids": [late]})).ok


def test_fail_orphaned_max_rows_and_hostile_scope(db: TargetDb) -> None:
    ids = [add_task(db, job=JOB) for _ in range(3)]
    settings = OrphanedSettings(reason_column="error")
    with pytest.raises(TooManyRows):
        run(db, settings, action=ORPHANED, limits=Limits(max_rows=2))
    scoped = OrphanedSettings(reason_column="error", scope={"queue": "queue"})
    assert run(db, scoped, {"queue": "default' OR '1'='1"}, action=ORPHANED).rows_affected == 0
    assert {task(db, i)["status"] for i in ids} == {"running"}


def test_uuid_ids_are_compared_as_the_column_stores_them(db: TargetDb) -> None:
    # The scope binds a uuid string against uuid / CHAR(36) / TEXT columns alike.
    stuck = add_task(db, job=str(uuid.UUID(JOB)))
    assert run(db, heartbeat(scope={"job_id": "job_id"}), {"job_id": JOB}).details["ids"] == [stuck]

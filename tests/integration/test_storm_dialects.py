"""Storm mode on every target dialect (PostgreSQL, MariaDB, SQLite): the same batch.

The schema and tasks of tests/integration/test_action_transitions_dialects.py (an enum
status column, each engine's own timestamps); a lease-timeout requeue scoped to the
extracted job, ``max_rows: 2``. Seven matched issues go to ``Executor.storm`` as the
cycle hands them over: six jobs with one stale task each, and one job with three (over
``max_rows``). On PostgreSQL the storm must remedy the six in one batch (one target
transaction, its id journaled) and hand the seventh back. MariaDB and SQLite cannot say
afterwards whether a transaction committed (no ``txid_status``), so recovery could not
finish a storm a crash interrupted: there every issue goes to the single-run planner.
Either way the six end requeued once and the seventh is refused with nothing changed.

Also at the action level, every dialect: two runs of ONE scope whose rows together
exceed ``max_rows`` while each batch is smaller than it are refused, as one at a time.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.actions.base import Limits
from bot.actions.requeue import ACTION as REQUEUE
from bot.actions.requeue import RequeueSettings
from bot.clock import FakeClock
from bot.errors import RunRefused, TooManyRows
from bot.pipeline.execute import Executor
from bot.store.models import RunStatus
from tests.helpers_engine import all_runs, build_playbook, make_store, match, track_issue
from tests.integration.test_action_transitions_dialects import SCHEMA, STATUS, add_task
from tests.targets import TargetDb


@pytest.fixture
def db(target_db: TargetDb) -> TargetDb:
    if target_db.dialect == "postgresql":
        target_db.sql("CREATE TYPE task_status AS ENUM ('pending', 'running', 'done', 'failed')")
    target_db.sql(target_db.ddl(SCHEMA.replace("{status}", STATUS[target_db.dialect])))
    return target_db


def test_a_storm_remedies_the_batch_and_hands_back_the_refused_run(
    db: TargetDb, tmp_path: Path, clock: FakeClock
) -> None:
    store = make_store(f"sqlite:///{tmp_path}/store.db")
    # breaker_failures 10: the first chunk of a storm holds up to 10 runs (one batch).
    pb = build_playbook(guards={"max_rows": 2, "max_runs_per_hour": 100, "breaker_failures": 10})
    target = db.target
    executor = Executor(store, {pb.id: pb}, lambda name: target, clock)
    jobs = [str(uuid.uuid4()) for _ in range(7)]
    tasks = {job: [add_task(db, job=job)] for job in jobs[:6]}
    tasks[jobs[6]] = [add_task(db, job=jobs[6]) for _ in range(3)]
    batch = [
        (track_issue(store, clock, issue_id=str(9000 + n), job=job), match(pb, job))
        for n, job in enumerate(jobs)
    ]

    result = executor.storm(pb, batch)

    if db.dialect != "postgresql":
        assert [i for i, _ in result.single] == [i for i, _ in batch] and not result.outcomes
        singles = [executor.plan(issue_id, m) for issue_id, m in batch]
        assert [o.status for o in singles] == [RunStatus.SUCCEEDED.value] * 6 + [
            RunStatus.FAILED.value
        ]
    else:
        assert [issue_id for issue_id, _ in result.single] == [batch[6][0]]
        assert len(result.outcomes) == 6
        assert {o.status for o in result.outcomes} == {RunStatus.SUCCEEDED.value}
        assert all(o.verify and o.rows_affected == 1 for o in result.outcomes)
        xids = {r.target_xid for r in all_runs(store) if r.issue_id != batch[6][0]}
        assert len(xids) == 1 and None not in xids  # one batch, its transaction journaled
        # The refused one, planned on its own: refused by max_rows, nothing changed.
        single = executor.plan(batch[6][0], batch[6][1])
        assert single.status == RunStatus.FAILED.value and "max_rows" in single.note
    for job in jobs[:6]:
        row = db.sql(
            "SELECT status, requeue_count FROM tasks WHERE id = %(i)s", {"i": tasks[job][0]}
        )
        assert (str(row[0][0]), int(row[0][1])) == ("pending", 1)
    left = db.sql("SELECT status, requeue_count FROM tasks WHERE job_id = %(j)s", {"j": jobs[6]})
    assert [(str(s), int(c)) for s, c in left] == [("running", 0)] * 3


def test_two_runs_of_one_scope_over_max_rows_are_refused_as_one_at_a_time(
    db: TargetDb,
) -> None:
    """batch_size <= max_rows: a run's first statement may not finish it, so the runs
    must not interleave (each would take a share under the cap)."""
    job = str(uuid.uuid4())
    for _ in range(5):
        add_task(db, job=job)
    settings = RequeueSettings.model_validate(
        {
            "table": "tasks",
            "mode": "lease_timeout",
            "lease_column": "updated_at",
            "timeout_seconds": 600,
            "requeue_count_column": "requeue_count",
            "scope": {"job_id": "job_id"},
        }
    )
    limits = Limits(max_rows=3, statement_timeout_ms=10_000, lock_timeout_ms=1_000, batch_size=2)
    with pytest.raises(RunRefused) as refused, db.target.transaction(10_000, 1_000) as conn:
        REQUEUE.run_each_in(conn, settings, [{"job_id": job}, {"job_id": job}], limits)
    assert refused.value.index == 0 and isinstance(refused.value.cause, TooManyRows)
    rows = db.sql("SELECT status, requeue_count FROM tasks WHERE job_id = %(j)s", {"j": job})
    assert [(str(s), int(c)) for s, c in rows] == [("running", 0)] * 5

"""Storm mode on every target dialect (PostgreSQL, MariaDB, SQLite): the same batch.

The schema and tasks of tests/integration/test_action_transitions_dialects.py (an enum
status column, each engine's own timestamps); a lease-timeout requeue scoped to the
extracted job, ``max_rows: 2``. Seven matched issues go to ``Executor.storm`` as the
cycle hands them over: six jobs with one stale task each, and one job with three (over
``max_rows``). The storm must remedy the six in one batch (one target transaction: on
PostgreSQL one journaled transaction id; MariaDB has no ``UPDATE ... RETURNING`` and takes
the portable path) and hand the seventh back, whose single run is then refused with
nothing changed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.clock import FakeClock
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
    pb = build_playbook(guards={"max_rows": 2, "max_runs_per_hour": 100})
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

    assert [issue_id for issue_id, _ in result.single] == [batch[6][0]]
    assert len(result.outcomes) == 6
    assert {o.status for o in result.outcomes} == {RunStatus.SUCCEEDED.value}
    assert all(o.verify and o.rows_affected == 1 for o in result.outcomes)
    runs = {r.issue_id: r for r in all_runs(store)}
    assert len(runs) == 6
    xids = {r.target_xid for r in runs.values()}
    assert len(xids) == 1  # one batch; PostgreSQL journals its transaction id
    assert (None in xids) == (db.dialect != "postgresql")
    for job in jobs[:6]:
        row = db.sql(
            "SELECT status, requeue_count FROM tasks WHERE id = %(i)s", {"i": tasks[job][0]}
        )
        assert (str(row[0][0]), int(row[0][1])) == ("pending", 1)
    # The refused one, planned on its own: journaled, refused by max_rows, nothing changed.
    single = executor.plan(batch[6][0], batch[6][1])
    assert single.status == RunStatus.FAILED.value and "max_rows" in single.note
    left = db.sql("SELECT status, requeue_count FROM tasks WHERE job_id = %(j)s", {"j": jobs[6]})
    assert [(str(s), int(c)) for s, c in left] == [("running", 0)] * 3

"""Two replicas plan the same match at the same moment: exactly one run executes.

Each thread has its own :class:`Store` (its own connection pool), as two bot processes
would, on one PostgreSQL state store; the target ``tasks`` table is the proof: every
requeue counter goes up by one, never two.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bot.pipeline.execute import Executor, PlanOutcome
from bot.store.models import RunStatus
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import (
    World,
    add_tasks,
    all_runs,
    build_playbook,
    get_issue,
    make_store,
    match,
    tasks,
    track_issue,
)

pytestmark = pytest.mark.postgres


def _race(executors: list[Executor], issue_id: str, pb: Any) -> list[PlanOutcome]:
    barrier = threading.Barrier(len(executors))
    results: list[PlanOutcome] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(ex: Executor) -> None:
        try:
            barrier.wait(timeout=10)
            out = ex.plan(issue_id, match(pb))
            with lock:
                results.append(out)
        except BaseException as exc:  # surfaced below: a thread must not swallow it
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ex,)) for ex in executors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.parametrize("cooldown", [0, 30])
def test_two_replicas_planning_at_once_execute_exactly_one_run(
    world: World, pg_dsn: str, cooldown: int
) -> None:
    ids = add_tasks(world.target_dsn, 5)
    pb = build_playbook(guards={"cooldown_minutes": cooldown})
    issue = track_issue(world.store, world.clock)
    # Each replica: its own Store (engine, pool, connections) on the same database.
    stores = [make_store(sqlalchemy_url(pg_dsn)) for _ in range(2)]
    executors = [world.executor(pb) for _ in stores]
    for ex, store in zip(executors, stores, strict=True):
        ex.store = store
    try:
        for attempt in range(5):
            results = _race(executors, issue, pb)
            # A no-op reports the existing run's status, but never rows it changed.
            executed = [r for r in results if r.rows_affected is not None]
            if attempt == 0:
                assert len(executed) == 1, [(r.status, r.note) for r in results]
                assert executed[0].status == RunStatus.SUCCEEDED.value
                loser = next(r for r in results if r is not executed[0])
                assert "already journaled" in loser.note or "cooldown" in loser.note
            else:
                assert executed == []  # the same window: nothing runs again
    finally:
        for store in stores:
            store.dispose()

    [run] = all_runs(world.store)
    assert run.status == RunStatus.SUCCEEDED.value and run.rows_affected == 5
    after = tasks(world.target_dsn)
    assert [r["id"] for r in after] == ids
    assert [(r["status"], r["requeue_count"]) for r in after] == [("pending", 1)] * 5
    assert get_issue(world.store, issue).state == "watching"

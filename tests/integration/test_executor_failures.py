"""Executor failures on a real PostgreSQL target: nothing half-done, everything said.

max_rows exceeded and lock timeouts roll the target transaction back, fail the run,
escalate the issue and count towards the circuit breaker; a target that is not
configured is a clear note, never a crash and never a blind execution.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from bot.store.models import LifecycleState, PlaybookState, RunStatus
from tests.helpers_engine import (
    World,
    add_tasks,
    all_runs,
    build_playbook,
    get_issue,
    match,
    states,
    story,
    tasks,
    track_issue,
)

pytestmark = pytest.mark.postgres


def _failures(world: World, playbook_id: str) -> int:
    with world.store.session() as session:
        row = session.get(PlaybookState, playbook_id)
        return row.consecutive_failures if row else 0


def test_max_rows_exceeded_fails_the_run_and_changes_nothing(world: World) -> None:
    add_tasks(world.target_dsn, 4)
    before = tasks(world.target_dsn)
    pb = build_playbook(guards={"max_rows": 3})
    issue = track_issue(world.store, world.clock)

    out = world.executor(pb).plan(issue, match(pb))

    assert out.status == RunStatus.FAILED.value and out.rows_affected == 0
    assert out.preview is not None and "execute would refuse" in out.preview.summary
    [run] = all_runs(world.store)
    assert run.status == RunStatus.FAILED.value and run.rows_affected == 0
    assert run.error is not None and run.error.startswith("TooManyRows:")
    assert "max_rows=3" in run.error
    assert tasks(world.target_dsn) == before  # rolled back, not partly applied
    assert states(world.store, issue)[-3:] == ["remediating", "failed", "escalated"]
    assert "rolled back: TooManyRows" in story(world.store, issue)[-2][2]
    assert get_issue(world.store, issue).escalated_at is not None
    assert _failures(world, pb.id) == 1
    assert world.events.kinds() == ["failed"]


def test_lock_timeout_rolls_back_and_is_reported(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    before = tasks(world.target_dsn)
    pb = build_playbook(guards={"mode": "approval", "lock_timeout_ms": 200})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)
    planned = ex.plan(issue, match(pb))
    assert planned.run_id is not None

    # SKIP LOCKED would step around row locks; a table lock cannot be stepped around.
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(world.target_dsn) as conn:
            conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(timeout=30)
            conn.rollback()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        out = ex.approve(planned.run_id, "alice")
    finally:
        release.set()
        holder.join(timeout=30)

    assert out.status == RunStatus.FAILED.value
    [run] = all_runs(world.store)
    assert run.status == RunStatus.FAILED.value
    assert run.error is not None and run.error.startswith("LockTimeout:")
    assert "lock timeout" in run.error
    assert tasks(world.target_dsn) == before
    assert states(world.store, issue)[-2:] == ["failed", "escalated"]
    assert _failures(world, pb.id) == 1


def test_target_not_configured_is_a_clear_note_not_a_crash(world: World) -> None:
    add_tasks(world.target_dsn, 1)
    before = tasks(world.target_dsn)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb, targets=lambda name: None)

    out = ex.plan(issue, match(pb))

    assert out.status == RunStatus.BLOCKED.value
    assert "BOT_TARGET_JOBS_DB_URL" in out.note
    assert all_runs(world.store) == []  # nothing journaled: no run without a preview
    assert tasks(world.target_dsn) == before
    row = get_issue(world.store, issue)
    # Left matched, so the next cycle tries again once the DSN is set; not escalated,
    # and the breaker is not charged for a configuration problem.
    assert row.state == LifecycleState.MATCHED.value
    assert _failures(world, pb.id) == 0
    assert world.events.kinds() == []

    fixed = world.executor(pb).plan(issue, match(pb))
    assert fixed.status == RunStatus.SUCCEEDED.value and fixed.rows_affected == 1


def test_shadow_without_a_target_journals_the_note(world: World) -> None:
    pb = build_playbook(guards={"mode": "shadow"})
    issue = track_issue(world.store, world.clock)

    out = world.executor(pb, targets=lambda name: None).plan(issue, match(pb))

    assert out.status == RunStatus.SHADOW.value and out.preview is None
    [run] = all_runs(world.store)
    assert "BOT_TARGET_JOBS_DB_URL" in run.preview["summary"]


def test_unreachable_target_blocks_instead_of_executing_blind(world: World) -> None:
    from bot.adapters.targets.postgres import PgTarget

    add_tasks(world.target_dsn, 1)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)
    dead = PgTarget("postgresql://postgres@127.0.0.1:1/nowhere", name="jobs_db")

    out = world.executor(pb, targets=lambda name: dead).plan(issue, match(pb))

    assert out.status == RunStatus.BLOCKED.value
    assert "preview failed" in out.note and "cannot connect" in out.note
    assert all_runs(world.store) == []
    assert get_issue(world.store, issue).state == LifecycleState.MATCHED.value

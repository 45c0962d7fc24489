"""Executor modes on a real PostgreSQL target: shadow, approval (and expiry), auto.

The store runs on PostgreSQL and on SQLite (same code); the target is always PostgreSQL
with a real ``tasks`` table, so "changed nothing" and "requeued" are read back from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import FakeClock, ensure_utc
from bot.errors import BotError
from bot.store.models import LifecycleState, RemediationRun, RunStatus
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import (
    JOB,
    OTHER_JOB,
    World,
    add_tasks,
    all_runs,
    build_playbook,
    get_issue,
    make_world,
    match,
    states,
    story,
    tasks,
    track_issue,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql", "sqlite"])
def world(
    request: pytest.FixtureRequest, pg_dsn: str, clock: FakeClock, tmp_path: Path
) -> Iterator[World]:
    url = sqlalchemy_url(pg_dsn) if request.param == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    w = make_world(url, pg_dsn, clock)
    yield w
    w.store.dispose()


def test_shadow_journals_the_preview_and_changes_nothing(world: World) -> None:
    ids = add_tasks(world.target_dsn, 3)
    add_tasks(world.target_dsn, 2, job=OTHER_JOB)
    before = tasks(world.target_dsn)
    pb = build_playbook(guards={"mode": "shadow"})
    issue = track_issue(world.store, world.clock)

    out = world.executor(pb).plan(issue, match(pb))

    assert out.status == RunStatus.SHADOW.value
    assert out.preview is not None and out.preview.count == 3
    [run] = all_runs(world.store)
    assert run.status == RunStatus.SHADOW.value and run.mode == "shadow"
    assert sorted(r["id"] for r in run.preview["rows"]) == ids  # only the matched job
    assert "would requeue 3" in run.preview["summary"]
    assert run.started_at is None and run.rows_affected is None
    assert tasks(world.target_dsn) == before
    assert states(world.store, issue) == ["new", "matched", "planned", "watching"]
    assert "shadow mode" in story(world.store, issue)[-1][2]


def test_shadow_only_overrides_an_auto_playbook(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    before = tasks(world.target_dsn)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)

    out = world.executor(pb).plan(issue, match(pb), shadow_only=True)

    assert (out.mode, out.status) == ("shadow", RunStatus.SHADOW.value)
    assert tasks(world.target_dsn) == before


def test_approval_waits_then_approve_executes_and_verifies(world: World) -> None:
    ids = add_tasks(world.target_dsn, 2)
    pb = build_playbook(guards={"mode": "approval", "approval_ttl_minutes": 60})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)

    out = ex.plan(issue, match(pb))

    assert out.status == RunStatus.AWAITING_APPROVAL.value and out.run_id
    [run] = all_runs(world.store)
    assert run.expires_at is not None
    assert ensure_utc(run.expires_at) == world.clock.now() + timedelta(minutes=60)
    assert [r["status"] for r in tasks(world.target_dsn)] == ["running", "running"]
    assert world.events.kinds() == ["plan_awaiting_approval"]

    world.clock.advance(minutes=10)
    done = ex.approve(out.run_id, "alice")

    assert done.status == RunStatus.SUCCEEDED.value and done.rows_affected == 2
    [run] = all_runs(world.store)
    assert run.approved_by == "alice" and run.verify["ok"] is True
    assert sorted(b["id"] for b in run.before_image["rows"]) == ids
    after = tasks(world.target_dsn)
    assert [(r["status"], r["requeue_count"]) for r in after] == [("pending", 1)] * 2
    assert states(world.store, issue) == [
        "new",
        "matched",
        "planned",
        "approved",
        "remediating",
        "remediated",
        "watching",
    ]
    assert "approved by alice" in story(world.store, issue)[3][2]
    with pytest.raises(BotError, match="not awaiting approval"):
        ex.approve(out.run_id, "bob")  # a second approve cannot run it again
    assert [r["requeue_count"] for r in tasks(world.target_dsn)] == [1, 1]


def test_expired_approval_cannot_be_executed(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    before = tasks(world.target_dsn)
    pb = build_playbook(guards={"mode": "approval", "approval_ttl_minutes": 30})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)
    out = ex.plan(issue, match(pb))
    assert out.run_id

    world.clock.advance(minutes=29)
    assert ex.expire_approvals() == 0
    world.clock.advance(minutes=2)
    assert ex.expire_approvals() == 1

    [run] = all_runs(world.store)
    assert run.status == RunStatus.EXPIRED.value
    # Not left 'planned' (re-matched every cycle into the same expired run): watched, and a
    # new event (a new idempotency window) plans it again.
    assert get_issue(world.store, issue).state == LifecycleState.WATCHING.value
    with pytest.raises(BotError, match="expired"):
        ex.approve(out.run_id, "alice")
    assert tasks(world.target_dsn) == before
    assert all_runs(world.store)[0].status == RunStatus.EXPIRED.value


def test_approve_after_ttl_marks_expired_even_before_housekeeping(world: World) -> None:
    add_tasks(world.target_dsn, 1)
    before = tasks(world.target_dsn)
    pb = build_playbook(guards={"mode": "approval", "approval_ttl_minutes": 5})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)
    out = ex.plan(issue, match(pb))
    assert out.run_id
    world.clock.advance(minutes=6)

    with pytest.raises(BotError, match="expired"):
        ex.approve(out.run_id, "alice")

    assert all_runs(world.store)[0].status == RunStatus.EXPIRED.value
    assert tasks(world.target_dsn) == before


def test_auto_executes_at_once_verifies_and_tells_the_story(world: World) -> None:
    ids = add_tasks(world.target_dsn, 3)
    other = add_tasks(world.target_dsn, 1, job=OTHER_JOB)
    fresh = add_tasks(world.target_dsn, 1, stale=False)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)

    out = world.executor(pb).plan(issue, match(pb))

    assert out.mode == "auto" and out.status == RunStatus.SUCCEEDED.value
    assert out.rows_affected == 3 and out.verify is not None
    [run] = all_runs(world.store)
    assert run.status == RunStatus.SUCCEEDED.value and run.started_at is not None
    assert run.verify == {"ok": True, "summary": out.verify, "details": {}}
    assert sorted(b["id"] for b in run.before_image["rows"]) == ids
    by_id = {r["id"]: r for r in tasks(world.target_dsn)}
    assert all(by_id[i]["status"] == "pending" and by_id[i]["requeue_count"] == 1 for i in ids)
    assert by_id[other[0]]["status"] == "running"  # another job: out of scope
    assert by_id[fresh[0]]["status"] == "running"  # lease still fresh: a live worker
    transitions = story(world.store, issue)
    assert [(f, t) for f, t, _ in transitions] == [
        (None, "new"),
        ("new", "matched"),
        ("matched", "planned"),
        ("planned", "remediating"),
        ("remediating", "remediated"),
        ("remediated", "watching"),
    ]
    reasons = [r for _, _, r in transitions]
    assert "matched playbook stuck-tasks" in reasons[1]
    assert "auto mode" in reasons[2] and "would requeue 3" in reasons[2]
    assert "requeue_stuck_tasks" in reasons[3]
    assert "changed 3 rows" in reasons[4] and "verified" in reasons[4]
    assert get_issue(world.store, issue).quiet_since is not None
    assert world.events.kinds() == ["remediated"]


def test_same_match_twice_in_one_window_is_journaled_once(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)

    first = ex.plan(issue, match(pb))
    add_tasks(world.target_dsn, 1)  # a new stuck task: the second call must still not run
    world.clock.advance(minutes=5)
    second = ex.plan(issue, match(pb))

    assert first.status == RunStatus.SUCCEEDED.value
    assert second.run_id == first.run_id
    assert "already journaled" in second.note
    assert len(all_runs(world.store)) == 1
    assert sorted(r["requeue_count"] for r in tasks(world.target_dsn)) == [0, 1, 1]
    # The no-op leaves the issue where it was: still watching (else it never resolves).
    assert states(world.store, issue)[-1] == "watching"
    assert len(story(world.store, issue)) == 6


def test_a_shadow_plan_is_not_repeated_either(world: World) -> None:
    add_tasks(world.target_dsn, 1)
    pb = build_playbook(guards={"mode": "shadow"})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)

    ex.plan(issue, match(pb))
    again = ex.plan(issue, match(pb))

    assert "already journaled" in again.note
    assert len(all_runs(world.store)) == 1


def test_different_params_are_different_runs(world: World) -> None:
    add_tasks(world.target_dsn, 1)
    add_tasks(world.target_dsn, 1, job=OTHER_JOB)
    pb = build_playbook()
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)

    ex.plan(issue, match(pb, JOB))
    ex.plan(issue, match(pb, OTHER_JOB))

    runs: list[RemediationRun] = all_runs(world.store)
    assert len({r.idempotency_key for r in runs}) == 2
    assert [r["status"] for r in tasks(world.target_dsn)] == ["pending", "pending"]


def test_verification_waits_the_playbook_delay_on_the_injected_clock(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    pb = build_playbook(verify={"delay_seconds": 20})
    issue = track_issue(world.store, world.clock)
    started = world.clock.now()

    out = world.executor(pb).plan(issue, match(pb))

    assert out.status == RunStatus.SUCCEEDED.value and out.verify is not None
    assert world.clock.sleeps == [20]
    [run] = all_runs(world.store)
    assert run.finished_at is not None and run.finished_at < started + timedelta(seconds=20)

"""Guardrails around execution, on a real PostgreSQL store and target.

Pause, cooldown, runs per hour, circuit breaker (failed runs and failed verifications),
hidden debt, and "a regressed issue needs approval". Time only moves through the
FakeClock; a new Sentry ``lastSeen`` window is a re-tracked issue snapshot.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bot.interfaces.app import App
from bot.pipeline.cycle import handle_regressions
from bot.pipeline.guards import set_paused
from bot.settings import Settings
from bot.store.models import LifecycleState, RunStatus
from tests.helpers_engine import (
    JOB,
    OTHER_JOB,
    T0,
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


def test_global_pause_blocks_execution_but_shadow_still_previews(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    before = tasks(world.target_dsn)
    auto = build_playbook()
    issue = track_issue(world.store, world.clock)
    with world.store.session() as session:
        set_paused(session, "incident 42 in progress", world.clock.now())
    ex = world.executor(auto)

    blocked = ex.plan(issue, match(auto))
    shadow = ex.plan(issue, match(auto), shadow_only=True)

    assert blocked.status == RunStatus.BLOCKED.value
    assert "paused: incident 42 in progress" in blocked.note
    assert shadow.status == RunStatus.SHADOW.value
    assert shadow.preview is not None and shadow.preview.count == 2
    assert [r.status for r in all_runs(world.store)] == [RunStatus.SHADOW.value]
    assert tasks(world.target_dsn) == before

    with world.store.session() as session:
        set_paused(session, None, world.clock.now())
    world.clock.advance(minutes=1)
    track_issue(world.store, world.clock, last_seen=T0 + timedelta(hours=1))
    resumed = ex.plan(issue, match(auto))
    assert resumed.status == RunStatus.SUCCEEDED.value and resumed.rows_affected == 2


def test_cooldown_blocks_a_second_run_until_it_has_passed(world: World) -> None:
    add_tasks(world.target_dsn, 1)
    pb = build_playbook(guards={"cooldown_minutes": 30})
    issue = track_issue(world.store, world.clock)
    ex = world.executor(pb)
    assert ex.plan(issue, match(pb)).status == RunStatus.SUCCEEDED.value

    # The problem comes back 20 minutes later, in a new lastSeen window.
    world.clock.advance(minutes=20)
    add_tasks(world.target_dsn, 1)
    track_issue(world.store, world.clock, last_seen=T0 + timedelta(hours=1, minutes=5))
    blocked = ex.plan(issue, match(pb))
    assert blocked.status == RunStatus.BLOCKED.value
    assert "cooldown" in blocked.note and "30 min" in blocked.note
    assert len(all_runs(world.store)) == 1

    world.clock.advance(minutes=11)  # 31 minutes after the first run started
    again = ex.plan(issue, match(pb))
    assert again.status == RunStatus.SUCCEEDED.value and again.rows_affected == 1
    assert len(all_runs(world.store)) == 2
    assert [r["status"] for r in tasks(world.target_dsn)] == ["pending", "pending"]


def test_max_runs_per_hour_caps_a_playbook_across_issues(world: World) -> None:
    pb = build_playbook(guards={"max_runs_per_hour": 2})
    ex = world.executor(pb)
    issues = [track_issue(world.store, world.clock, issue_id=str(n)) for n in (1, 2, 3)]
    add_tasks(world.target_dsn, 1)

    outs = []
    for issue in issues:
        outs.append(ex.plan(issue, match(pb)))
        world.clock.advance(minutes=1)

    # The second issue's run finds nothing left to do: it still counts as a run.
    assert [o.status for o in outs[:2]] == [RunStatus.SUCCEEDED.value, RunStatus.NOOP.value]
    assert outs[2].status == RunStatus.BLOCKED.value
    assert "max_runs_per_hour=2" in outs[2].note
    assert len(all_runs(world.store)) == 2

    world.clock.advance(minutes=59)  # the first run is now more than an hour old
    assert ex.plan(issues[2], match(pb)).status == RunStatus.NOOP.value
    assert len(all_runs(world.store)) == 3


def test_breaker_opens_after_failed_runs_and_closes_after_its_cooldown(world: World) -> None:
    add_tasks(world.target_dsn, 3)  # more than max_rows: every run refuses
    pb = build_playbook(
        guards={"max_rows": 2, "breaker_failures": 2, "breaker_cooldown_minutes": 60}
    )
    ex = world.executor(pb)
    issues = [track_issue(world.store, world.clock, issue_id=str(n)) for n in (1, 2, 3)]

    first = ex.plan(issues[0], match(pb))
    second = ex.plan(issues[1], match(pb))
    third = ex.plan(issues[2], match(pb))

    assert [first.status, second.status] == [RunStatus.FAILED.value] * 2
    assert [e[3]["breaker_opened"] for e in world.events.events] == [False, True]
    assert third.status == RunStatus.BLOCKED.value
    assert "circuit breaker open for stuck-tasks" in third.note
    assert len(all_runs(world.store)) == 2

    world.clock.advance(minutes=59)
    assert ex.plan(issues[2], match(pb)).status == RunStatus.BLOCKED.value
    world.clock.advance(minutes=2)
    with psycopg.connect(world.target_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM tasks WHERE id = (SELECT min(id) FROM tasks)")
    after = ex.plan(issues[2], match(pb))
    assert after.status == RunStatus.SUCCEEDED.value and after.rows_affected == 2


ZOMBIE_TRIGGER = """
CREATE FUNCTION keep_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.status := OLD.status; RETURN NEW; END $$;
CREATE TRIGGER zombie BEFORE UPDATE ON tasks FOR EACH ROW
WHEN (OLD.job_id = '11111111-2222-4333-8444-555555555555') EXECUTE FUNCTION keep_running();
"""


def test_breaker_counts_failed_verifications_and_a_success_resets_it(world: World) -> None:
    # A worker that grabs its rows straight back: the update "succeeds", the verification
    # finds the rows still stuck. Only OTHER_JOB's rows behave like that.
    with psycopg.connect(world.target_dsn, autocommit=True) as conn:
        conn.execute(ZOMBIE_TRIGGER)
    pb = build_playbook(guards={"breaker_failures": 2, "max_runs_per_hour": 10})
    ex = world.executor(pb)
    add_tasks(world.target_dsn, 1, job=OTHER_JOB)

    def plan(n: int, job: str) -> str:
        issue = track_issue(world.store, world.clock, issue_id=str(n), job=job)
        world.clock.advance(minutes=1)
        return ex.plan(issue, match(pb, job)).status

    assert plan(1, OTHER_JOB) == RunStatus.VERIFY_FAILED.value
    add_tasks(world.target_dsn, 1)
    assert plan(2, JOB) == RunStatus.SUCCEEDED.value
    assert plan(3, OTHER_JOB) == RunStatus.VERIFY_FAILED.value  # 1 in a row, not 2
    assert plan(4, OTHER_JOB) == RunStatus.VERIFY_FAILED.value  # 2 in a row: opens
    assert plan(5, OTHER_JOB) == RunStatus.BLOCKED.value
    assert get_issue(world.store, "1").state == LifecycleState.ESCALATED.value
    reasons = [r for _, _, r in story(world.store, "1")]
    assert any("verification failed: 1 row(s) still stuck" in r for r in reasons)
    assert world.events.kinds().count("failed") == 3


def test_hidden_debt_escalates_instead_of_running_a_fourth_time(world: World) -> None:
    pb = build_playbook(guards={"max_runs_per_hour": 10})
    ex = world.executor(pb, hidden_debt_runs=3, hidden_debt_hours=24)
    issue = track_issue(world.store, world.clock)
    outs = []
    for n in range(5):
        add_tasks(world.target_dsn, 1)
        track_issue(world.store, world.clock, last_seen=T0 + timedelta(hours=n))
        outs.append(ex.plan(issue, match(pb)))
        world.clock.advance(hours=1, minutes=1)

    assert [o.status for o in outs[:3]] == [RunStatus.SUCCEEDED.value] * 3
    assert [o.status for o in outs[3:]] == [RunStatus.BLOCKED.value] * 2
    assert "hidden debt: remediated 3 times in 24 h" in outs[3].note
    assert len(all_runs(world.store)) == 3
    assert world.events.kinds().count("hidden_debt") == 1  # told once, not every cycle
    row = get_issue(world.store, issue)
    assert row.state == LifecycleState.ESCALATED.value and row.escalated_at is not None
    assert "hidden debt" in story(world.store, issue)[-1][2]
    assert sorted(r["status"] for r in tasks(world.target_dsn)) == ["pending"] * 3 + ["running"] * 2

    # A day after the first run, the window has moved on: remediation may run again.
    world.clock.set(T0 + timedelta(hours=24, minutes=30))
    track_issue(world.store, world.clock, last_seen=T0 + timedelta(hours=24))
    assert ex.plan(issue, match(pb)).status == RunStatus.SUCCEEDED.value


def test_a_regressed_issue_needs_approval_even_for_an_auto_playbook(world: World) -> None:
    add_tasks(world.target_dsn, 2)
    before = tasks(world.target_dsn)
    pb = build_playbook()  # guards.mode: auto
    issue = track_issue(world.store, world.clock)
    app = App(settings=Settings.model_validate({}), store=world.store, clock=world.clock)

    assert handle_regressions(app.store, app.clock, [issue], world.events) == ["QUEUE-4711"]
    ex = world.executor(pb)
    out = ex.plan(issue, match(pb))

    assert (out.mode, out.status) == ("approval", RunStatus.AWAITING_APPROVAL.value)
    assert tasks(world.target_dsn) == before
    assert states(world.store, issue)[-2:] == ["matched", "planned"]
    assert out.run_id is not None
    done = ex.approve(out.run_id, "oncall")
    assert done.status == RunStatus.SUCCEEDED.value
    assert get_issue(world.store, issue).requires_approval is False
    assert "regressed" in world.events.kinds()

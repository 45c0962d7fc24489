"""Issue #4, the whole story of BLUE-BANDED-BEE-42, driven by the clock through run_cycle.

An issue appears → remediated automatically on the real target → its fix PR is found
and commented → events stop → 47 h after the last event it is still open → at 49 h
it is resolved in the PR's merge commit and the PR comment is edited in place (still
one comment) → every Slack message arrives exactly once however often the outbox
runs. An event at 30 h restarts the quiet clock. An event after the resolve is a
regression: escalated, announced once, and the next plan waits for approval.

Everything is asserted on the fakes' own records (what Sentry, GitHub and the
webhook received), on the target's rows and on the bot's store. See conftest.py for
the world these tests run in.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bot.clock import ensure_utc
from bot.store.models import LifecycleState, RunStatus
from tests.acceptance.conftest import JOB_ID, MERGE_SHA, REPO, World

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KINDS = ("remediated", "resolved", "regressed", "escalated", "plan_awaiting_approval")


def _deliveries(world: World) -> dict[str, int]:
    return {kind: len(world.delivered(kind)) for kind in KINDS}


def _notes(world: World) -> list[str]:
    """The kinds of the bot's notes on the Sentry issue, in order."""
    prefix = "sentry-remediation-bot: "
    return [
        c.removeprefix(prefix).split(";")[0]
        for c in world.sentry.comments(world.issue_id)
        if c.startswith(prefix)
    ]


def _comment_writes(world: World) -> tuple[int, int]:
    """(comments created, comments edited) on the fix PR, from GitHub's request log."""
    created = world.github.requests_to(f"/repos/{REPO}/issues/", "POST")
    edited = world.github.requests_to(f"/repos/{REPO}/issues/comments/", "PATCH")
    return len(created), len(edited)


def _add_stuck_task(world: World) -> int:
    """The bug strikes again: a task left running by the dead worker."""
    with psycopg.connect(world.target_dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tasks (job_id, status, worker_id, started_at, updated_at) "
            "VALUES (%s, 'running', 'worker-3f7e21', now() - interval '1 hour', "
            "now() - interval '1 hour') RETURNING id",
            (JOB_ID,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_remediate_link_quiet_resolve_in_commit_then_regress(world: World) -> None:
    last_event = world.sentry_last_seen()
    before = {t["id"]: t for t in world.tasks()}

    # t0: the issue appears and the auto playbook remediates it on the real target.
    report = world.cycle()
    [plan] = report.plans
    assert (plan.mode, plan.status, plan.rows_affected) == ("auto", "succeeded", 3)
    assert plan.params == {"job_id": JOB_ID}
    after = {t["id"]: t for t in world.tasks()}
    stuck = [i for i, t in before.items() if t["job_id"] == JOB_ID and t["status"] == "running"]
    assert [(after[i]["status"], after[i]["requeue_count"]) for i in stuck] == [
        ("pending", 1),
        ("pending", 2),
        ("failed", 3),  # past the cap: dead-lettered, not requeued a fourth time
    ]
    untouched = {i: t for i, t in before.items() if i not in stuck}
    assert {i: after[i] for i in untouched} == untouched
    issue = world.tracked()
    assert issue.state == LifecycleState.WATCHING.value
    # ...and in the same cycle the merged fix PR is found and gets the bot's comment.
    [comment] = world.pr_comments()
    assert comment.user == "sentry-remediation-bot"
    assert "| Status | watching |" in comment.body
    watching_body = comment.body

    # Events stop. The scheduler keeps cycling; 47 h after the last event: still open.
    world.cycles_until(last_event + timedelta(hours=47))
    world.cycle()
    assert world.sentry_issue()["status"] == "unresolved"
    assert world.tracked().state == LifecycleState.WATCHING.value
    assert world.tasks() == list(after.values())  # remediated once, never again
    assert len(world.runs()) == 1
    assert [c.body for c in world.pr_comments()] == [watching_body]
    assert _comment_writes(world) == (1, 0)  # an unchanged body is not sent again

    # 49 h: quiet by both signals → resolved in the fix PR's merge commit.
    world.cycles_until(last_event + timedelta(hours=49), every=timedelta(hours=1))
    world.cycle()
    sentry_issue = world.sentry_issue()
    assert sentry_issue["status"] == "resolved"
    assert sentry_issue["statusDetails"] == {"inCommit": MERGE_SHA}
    resolved = world.tracked()
    assert resolved.state == LifecycleState.RESOLVED.value
    assert resolved.resolved_in_commit == MERGE_SHA
    # The PR comment is edited in place: still one comment, now saying resolved.
    [edited] = world.pr_comments()
    assert edited.id == comment.id
    assert "**resolved**" in edited.body and MERGE_SHA[:12] in edited.body
    assert _comment_writes(world) == (1, 1)

    # The outbox runs many more times; nothing is delivered twice.
    for _ in range(4):
        world.clock.advance(hours=1)
        world.cycle()
    assert _deliveries(world) == {
        "remediated": 1,
        "resolved": 1,
        "regressed": 0,
        "escalated": 0,
        "plan_awaiting_approval": 0,
    }
    [resolved_msg] = world.delivered("resolved")
    assert MERGE_SHA in str(resolved_msg["blocks"])  # says which commit fixed it
    assert _notes(world) == ["remediated", "resolved"]

    # An event after the bot resolved it: a regression, escalated, never auto-remediated.
    new_task = _add_stuck_task(world)
    world.event()
    assert world.sentry_issue()["substatus"] == "regressed"
    report = world.cycle()
    assert report.regressed == [world.tracked().short_id]
    regressed = world.tracked()
    assert regressed.requires_approval
    states = world.states()
    assert states[states.index("resolved") :] == [
        "resolved",
        "regressed",
        "escalated",
        "matched",
        "planned",  # planned in approval mode: waits for `sentry-bot approve`
    ]
    [first_run, next_run] = world.runs()
    assert first_run.status == RunStatus.SUCCEEDED.value
    assert (next_run.mode, next_run.status) == ("approval", RunStatus.AWAITING_APPROVAL.value)
    assert [r["id"] for r in next_run.preview["rows"]] == [new_task]
    # Another poll cycle: the plan still waits for a human, and nothing ran.
    world.clock.advance(minutes=5)
    world.cycle()
    assert [(r.id, r.status) for r in world.runs()] == [
        (first_run.id, RunStatus.SUCCEEDED.value),
        (next_run.id, RunStatus.AWAITING_APPROVAL.value),
    ]
    [task] = [t for t in world.tasks() if t["id"] == new_task]
    assert (task["status"], task["requeue_count"]) == ("running", 0)
    assert _deliveries(world) == {
        "remediated": 1,
        "resolved": 1,
        "regressed": 1,
        "escalated": 0,
        "plan_awaiting_approval": 1,
    }
    assert _notes(world) == ["remediated", "resolved", "regressed", "plan awaiting approval"]
    [final] = world.pr_comments()
    assert final.id == comment.id and "**regressed**" in final.body
    # Every message the webhook was sent was accepted on the first try.
    assert world.hook.attempts == len(world.hook.delivered) == 4


def test_an_event_at_30_hours_restarts_the_quiet_clock(world: World) -> None:
    first_event = world.sentry_last_seen()
    world.cycle()
    assert world.tracked().state == LifecycleState.WATCHING.value
    tasks_after_remedy = world.tasks()

    world.cycles_until(first_event + timedelta(hours=30))
    world.event()
    second_event = world.clock.now()
    world.cycle()
    watching = world.tracked()
    assert watching.state == LifecycleState.WATCHING.value
    assert watching.quiet_since is not None
    assert ensure_utc(watching.quiet_since) == second_event

    # 49 h after the first quiet start: the old clock would have resolved it by now.
    world.cycles_until(first_event + timedelta(hours=49), every=timedelta(hours=1))
    world.cycle()
    assert world.sentry_issue()["status"] == "unresolved"
    world.cycles_until(second_event + timedelta(hours=47))
    world.cycle()
    assert world.sentry_issue()["status"] == "unresolved"
    assert world.tracked().state == LifecycleState.WATCHING.value

    # 48+ h after the event at 30 h: resolved, in the merge commit.
    world.cycles_until(second_event + timedelta(hours=49), every=timedelta(hours=1))
    world.cycle()
    assert world.sentry_issue()["status"] == "resolved"
    assert world.sentry_issue()["statusDetails"] == {"inCommit": MERGE_SHA}
    assert world.tracked().state == LifecycleState.RESOLVED.value
    assert len(world.delivered("resolved")) == 1
    # The monitor's second event found nothing stuck: the rows were requeued only once.
    assert world.tasks() == tasks_after_remedy
    assert [r.rows_affected for r in world.runs()] == [3, 0]
    # ...and that empty re-run is not announced as a second "remediated".
    assert len(world.delivered("remediated")) == 1

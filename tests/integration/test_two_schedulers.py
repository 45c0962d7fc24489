"""Two replicas on one PostgreSQL state store: only the leader's steps run, the other
takes over when the leader stops, and a remediation planned by both runs once.

Each replica has its own :class:`Store` (its own connection pool), as two processes
would. The lease clock is a FakeClock that never moves, so leadership changes only
through a clean stop (release), never through timing; APScheduler itself runs on the
real clock with intervals of a few tens of milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.heartbeat import health_status
from bot.interfaces.scheduler import JOBS, SchedulerConfig, run_scheduler
from bot.pipeline.execute import Executor, PlanOutcome
from bot.playbooks.loader import parse_playbook
from bot.playbooks.matcher import MatchResult
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import (
    LifecycleState,
    RemediationRun,
    RunStatus,
    TrackedIssue,
    Transition,
)
from bot.testing import RecordingSteps
from tests.conftest import sqlalchemy_url

pytestmark = pytest.mark.postgres

FAST = SchedulerConfig(intervals={name: 0.03 for name in JOBS}, lease_ttl=timedelta(minutes=5))


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``condition`` (bounded wait for background threads; not a timing assertion)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        done.wait(0.02)
    return condition()


class Replica:
    """One bot process: its own App/Store, steps, stop event and scheduler thread."""

    def __init__(self, url: str, name: str, clock: FakeClock) -> None:
        settings = load_settings(environ={"BOT_DATABASE_URL": url, "BOT_INSTANCE_ID": name})
        self.app = App.from_settings(settings, clock=clock)
        self.steps = RecordingSteps(name)
        self.stop_event = threading.Event()
        self.codes: list[int] = []
        self.thread = threading.Thread(target=self._run, name=f"replica-{name}")

    def _run(self) -> None:
        self.codes.append(
            run_scheduler(self.app, steps=self.steps, stop_event=self.stop_event, config=FAST)
        )

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.codes == [0]


@pytest.fixture
def url(pg_dsn: str) -> str:
    u = sqlalchemy_url(pg_dsn)
    store = Store(u)
    store.upgrade()
    store.dispose()
    return u


def test_only_the_leader_runs_steps_and_the_other_takes_over(url: str, clock: FakeClock) -> None:
    a, b = Replica(url, "a", clock), Replica(url, "b", clock)
    try:
        a.thread.start()
        assert a.steps.wait_for(1, "poll")
        b.thread.start()
        # b is up and standing by: it has written a heartbeat as a non-leader
        assert wait_until(
            lambda: health_status(b.app.store, clock, timedelta(minutes=1), instance="b")[0]
        )
        before = a.steps.count("poll")
        assert a.steps.wait_for(before + 5, "poll")
        for name in JOBS:
            assert a.steps.wait_for(1, name)
        assert b.steps.calls == []  # many ticks on both replicas, only a acted

        a.stop()
        a_total = a.steps.count()
        assert b.steps.wait_for(3, "poll")  # b took over after a released the lease
        for name in JOBS:
            assert b.steps.wait_for(1, name)
        assert a.steps.count() == a_total  # a did nothing after its stop
    finally:
        for r in (a, b):
            if r.thread.is_alive():
                r.stop()
            r.app.close()


# --- the real executor on two stores ---------------------------------------------------

PLAYBOOK_YAML = """\
id: notify-stuck-tasks
priority: 10
match:
  title: "stuck tasks"
action:
  type: notify_only
  settings:
    note: follow the stuck-tasks runbook
guards:
  mode: auto
  cooldown_minutes: 60
  max_runs_per_hour: 50
"""


def track(store: Store, clock: FakeClock, n: int) -> list[str]:
    now = clock.now()
    ids = []
    with store.session() as session:
        for i in range(n):
            issue_id = str(9000 + i)
            raw = {
                "id": issue_id,
                "shortId": f"QUEUE-{i}",
                "title": "Found 3 stuck tasks",
                "count": "12",
                "userCount": 0,
                "lastSeen": now.isoformat(),
            }
            session.add(
                TrackedIssue(
                    id=issue_id,
                    short_id=f"QUEUE-{i}",
                    title="Found 3 stuck tasks",
                    raw=raw,
                    count=12,
                    last_seen=now - timedelta(minutes=1),
                    first_seen=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            ids.append(issue_id)
    return ids


@pytest.fixture
def stores(url: str) -> Iterator[tuple[Store, Store]]:
    s1, s2 = Store(url), Store(url)
    yield s1, s2
    s1.dispose()
    s2.dispose()


def test_two_replicas_planning_the_same_match_execute_it_once(
    stores: tuple[Store, Store], clock: FakeClock
) -> None:
    playbook, errors, _ = parse_playbook(PLAYBOOK_YAML, Path("notify-stuck-tasks.yaml"))
    assert errors == [] and playbook is not None
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def sink(_s: Session, kind: str, issue: TrackedIssue, *_rest: Any) -> None:
        with lock:
            events.append((kind, issue.id))

    def no_target(_name: str) -> None:
        raise AssertionError("notify_only needs no target")

    executors = [
        Executor(s, {playbook.id: playbook}, no_target, clock, on_event=sink) for s in stores
    ]
    issue_ids = track(stores[0], clock, 6)
    outcomes: dict[str, list[PlanOutcome]] = {i: [] for i in issue_ids}
    failures: list[BaseException] = []

    for issue_id in issue_ids:
        barrier = threading.Barrier(2)

        def plan(ex: Executor, issue_id: str = issue_id, barrier: Any = barrier) -> None:
            try:
                barrier.wait()
                out = ex.plan(issue_id, MatchResult(playbook=playbook, params={}))
                with lock:
                    outcomes[issue_id].append(out)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=plan, args=(ex,)) for ex in executors]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    assert failures == []
    with stores[1].session() as session:
        runs = session.exec(select(RemediationRun)).all()
        remediating = session.exec(
            select(Transition.issue_id).where(
                col(Transition.to_state) == LifecycleState.REMEDIATING.value
            )
        ).all()
        states = {row.id: row.state for row in session.exec(select(TrackedIssue))}
    assert sorted(r.issue_id for r in runs) == sorted(issue_ids)  # one journaled run each
    assert all(r.status == RunStatus.NOOP.value and r.mode == "auto" for r in runs)
    assert sorted(remediating) == sorted(issue_ids)  # executed exactly once each
    assert sorted(i for kind, i in events if kind == "remediated") == sorted(issue_ids)
    assert set(states.values()) == {LifecycleState.WATCHING.value}
    for issue_id, pair in outcomes.items():
        assert len(pair) == 2
        assert {o.run_id for o in pair} == {next(r.id for r in runs if r.issue_id == issue_id)}
        executed = [o for o in pair if o.verify is not None]
        assert len(executed) == 1 and executed[0].status == RunStatus.NOOP.value

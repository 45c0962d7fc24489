"""The scheduler's jobs with fake steps on a SQLite store: leadership, heartbeat, health,
clean stop (in-thread and by SIGTERM to a subprocess), and the CycleSteps adapter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.heartbeat import (
    JobResult,
    health_status,
    heartbeat_key,
    read_heartbeat,
    write_heartbeat,
)
from bot.interfaces.leader import LeaseElector
from bot.interfaces.scheduler import (
    JOBS,
    BotScheduler,
    CycleSteps,
    SchedulerConfig,
    Stages,
    run_scheduler,
)
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import Lease, Setting
from bot.testing import RecordingSteps

FAST = SchedulerConfig(intervals={name: 0.05 for name in JOBS}, lease_ttl=timedelta(seconds=60))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    s.upgrade()
    yield s
    s.dispose()


def make(store: Store, clock: FakeClock, holder: str, steps: Any = None) -> BotScheduler:
    elector = LeaseElector(store, holder=holder, ttl=FAST.lease_ttl, clock=clock)
    return BotScheduler(store, steps or RecordingSteps(holder), elector, clock, FAST)


def beat(store: Store, instance: str) -> dict[str, Any]:
    with store.session() as session:
        row = session.get(Setting, heartbeat_key(instance))
    assert row is not None
    data: dict[str, Any] = json.loads(row.value)
    return data


def test_leader_runs_each_step_and_writes_a_heartbeat(store: Store, clock: FakeClock) -> None:
    steps = RecordingSteps("a")
    sched = make(store, clock, "a", steps)
    for name in JOBS:
        result = sched.run_job(name)
        assert result == JobResult(name, ran=True, leader=True, summary=f"a {name} done")
    assert steps.calls == list(JOBS)
    hb = beat(store, "a")
    assert hb["job"] == "outbox" and hb["leader"] is True and hb["ok"] is True
    assert hb["at"] == clock.now().isoformat()


def test_follower_skips_steps_but_still_beats(store: Store, clock: FakeClock) -> None:
    a_steps, b_steps = RecordingSteps("a"), RecordingSteps("b")
    a, b = make(store, clock, "a", a_steps), make(store, clock, "b", b_steps)
    assert a.run_job("poll").ran
    result = b.run_job("poll")
    assert result.ran is False and result.leader is False
    assert b_steps.calls == []
    assert beat(store, "b")["leader"] is False
    ok, message = health_status(store, clock, timedelta(minutes=1), instance="b")
    assert ok and "standby" in message


def test_failing_step_is_contained_and_reported_in_the_heartbeat(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    steps = RecordingSteps("a", fail={"poll"})
    sched = make(store, clock, "a", steps)
    result = sched.run_job("poll")
    assert result.ran and result.error == "BotError: poll failed on purpose"
    assert beat(store, "a")["ok"] is False
    assert "poll step failed" in caplog.text
    assert sched.run_job("outbox").error is None  # the next job runs normally


def test_leadership_moves_when_the_leader_stops_renewing(store: Store, clock: FakeClock) -> None:
    a_steps, b_steps = RecordingSteps("a"), RecordingSteps("b")
    a, b = make(store, clock, "a", a_steps), make(store, clock, "b", b_steps)
    assert a.run_job("poll").ran
    clock.advance(seconds=59)
    assert not b.run_job("poll").ran
    clock.advance(seconds=2)  # a crashed: its lease expired
    assert b.run_job("poll").ran
    assert not a.run_job("poll").ran  # a came back: it is the follower now
    assert (a_steps.count(), b_steps.count()) == (1, 1)


def test_a_stopping_scheduler_starts_no_new_step(store: Store, clock: FakeClock) -> None:
    steps = RecordingSteps("a")
    sched = make(store, clock, "a", steps)
    sched.stopping.set()
    assert sched.run_job("poll").summary == "stopping"
    assert sched.renew_lease() is False
    assert steps.calls == []


def test_store_failure_during_leadership_check_means_standby(
    tmp_path: Path, clock: FakeClock
) -> None:
    broken = Store(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: every query fails
    steps = RecordingSteps()
    result = make(broken, clock, "a", steps).run_job("poll")
    assert result.ran is False and steps.calls == []
    broken.dispose()


# --- health ---------------------------------------------------------------------------


def test_health_truth_table(store: Store, clock: FakeClock) -> None:
    max_age = timedelta(minutes=5)
    ok, message = health_status(store, clock, max_age)
    assert not ok and "no heartbeat" in message
    write_heartbeat(store, "a", clock, JobResult("poll", ran=True, leader=True, summary="x"))
    ok, message = health_status(store, clock, max_age)
    assert ok and message.startswith("alive: a (leader) last ran poll 0s ago")
    clock.advance(minutes=5)
    assert health_status(store, clock, max_age)[0]  # exactly max_age old: still fine
    clock.advance(seconds=1)
    ok, message = health_status(store, clock, max_age)
    assert not ok and message.startswith("stale:")
    write_heartbeat(store, "b", clock, JobResult("outbox", ran=False, leader=False))
    assert health_status(store, clock, max_age)[0]  # any replica alive
    assert not health_status(store, clock, max_age, instance="a")[0]
    assert not health_status(store, clock, max_age, instance="nobody")[0]


def test_heartbeat_keeps_every_jobs_last_run(store: Store, clock: FakeClock) -> None:
    """A later job's beat must not hide an earlier job's run (the old flaky run test)."""
    write_heartbeat(store, "a", clock, JobResult("poll", ran=True, leader=True, summary="p"))
    clock.advance(seconds=10)
    write_heartbeat(store, "a", clock, JobResult("outbox", ran=True, leader=True, error="boom"))
    beat = read_heartbeat(store, "a")
    assert beat is not None and beat["job"] == "outbox" and beat["ok"] is False
    assert sorted(beat["jobs"]) == ["outbox", "poll"]
    assert (beat["jobs"]["poll"]["summary"], beat["jobs"]["poll"]["ok"]) == ("p", True)
    ok, message = health_status(store, clock, timedelta(minutes=1), instance="a")
    assert ok and "[jobs: outbox 0s ago failed, poll 10s ago ok]" in message
    assert read_heartbeat(store, "nobody") is None


def test_health_with_an_unusable_store_is_not_ok(tmp_path: Path, clock: FakeClock) -> None:
    broken = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    ok, message = health_status(broken, clock, timedelta(minutes=5))
    assert not ok and message.startswith("state store unreachable")
    broken.dispose()


def test_long_instance_ids_fit_the_key_column() -> None:
    assert heartbeat_key("bot-1") == "heartbeat:bot-1"
    long = heartbeat_key("h" * 128)
    assert len(long) <= 64 and long != heartbeat_key("h" * 127)


# --- the real APScheduler loop ----------------------------------------------------------


def make_app(store_path: Path, clock: FakeClock, instance: str) -> App:
    settings = load_settings(
        environ={"BOT_DATABASE_URL": f"sqlite:///{store_path}", "BOT_INSTANCE_ID": instance}
    )
    app = App.from_settings(settings, clock=clock)
    app.store.upgrade()
    return app


def test_run_scheduler_runs_every_job_then_stops_cleanly(tmp_path: Path, clock: FakeClock) -> None:
    app = make_app(tmp_path / "bot.db", clock, "solo")
    steps, stop = RecordingSteps(), threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(run_scheduler(app, steps=steps, stop_event=stop, config=FAST))
    )
    thread.start()
    try:
        for name in JOBS:
            assert steps.wait_for(2, name), f"{name} did not run twice"
    finally:
        stop.set()
        thread.join(30)
    assert codes == [0]
    with app.store.session() as session:
        assert session.get(Lease, "scheduler") is None  # released on the way out
    assert beat(app.store, "solo")["leader"] is True
    app.close()


def test_stop_lets_the_running_step_finish_and_starts_no_other(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = make_app(tmp_path / "bot.db", clock, "solo")
    gate, stop = threading.Event(), threading.Event()
    steps = RecordingSteps(gate=gate)
    slow = SchedulerConfig(
        intervals={"poll": 0.05, "lifecycle": 3600, "fixlinks": 3600, "outbox": 3600},
        run_at_start=False,
    )
    thread = threading.Thread(
        target=run_scheduler,
        args=(app,),
        kwargs={"steps": steps, "stop_event": stop, "config": slow},
    )
    thread.start()
    assert steps.started.wait(10)  # poll is running, blocked on the gate
    stop.set()
    thread.join(0.3)
    assert thread.is_alive()  # waiting for the step, not abandoning it
    with app.store.session() as session:
        assert session.get(Lease, "scheduler") is not None  # still ours mid-step
    gate.set()
    thread.join(30)
    assert not thread.is_alive()
    assert steps.calls == ["poll"]  # finished, and nothing started after the stop
    with app.store.session() as session:
        assert session.get(Lease, "scheduler") is None
    app.close()


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from datetime import timedelta
    from bot.interfaces.scheduler import JOBS, SchedulerConfig, run_scheduler
    from bot.testing import RecordingSteps
    from bot.settings import load_settings
    from bot.interfaces.app import App

    class Steps(RecordingSteps):
        def _call(self, name):
            out = super()._call(name)
            print("ran", name, flush=True)
            return out

    settings = load_settings(environ={"BOT_DATABASE_URL": sys.argv[1],
                                      "BOT_INSTANCE_ID": "sub"})
    app = App.from_settings(settings)
    app.store.upgrade()
    config = SchedulerConfig(intervals={n: 0.05 for n in JOBS})
    code = run_scheduler(app, steps=Steps(), config=config)
    print("exit", code, flush=True)
    sys.exit(code)
    """
)


def test_sigterm_stops_the_process_with_exit_code_0(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "SENTRY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ran "), proc.stderr.read() if proc.stderr else first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip().endswith("exit 0")
    check = Store(url)
    with check.session() as session:
        assert session.get(Lease, "scheduler") is None
    check.dispose()


# --- the real steps adapter -------------------------------------------------------------


class FakeReport:
    def as_dict(self) -> dict[str, Any]:
        return {"polled": 5, "new": 2, "changed": 1, "plans": [{}], "errors": []}


def test_cycle_steps_call_the_poll_and_side_step_functions() -> None:
    calls: list[tuple[str, Any]] = []
    parts, delivery = object(), object()

    def poll_step(a: Any) -> FakeReport:
        calls.append(("poll_step", a))
        return FakeReport()

    def side(name: str) -> Any:
        def step(a: Any) -> str:
            calls.append((name, a))
            return f"{name} done"

        return step

    stages = Stages(
        poll=poll_step,
        lifecycle=side("lifecycle_step"),
        fixlinks=side("fixlinks_step"),
        outbox=side("outbox_step"),
    )
    steps = CycleSteps(lambda: parts, lambda: delivery, stages)
    assert steps.poll() == "polled 5 (2 new, 1 changed), 1 plans, 0 errors"
    assert steps.lifecycle() == "lifecycle_step done"
    assert steps.fixlinks() == "fixlinks_step done"
    assert steps.outbox() == "outbox_step done"
    assert calls == [
        ("poll_step", parts),
        ("lifecycle_step", parts),
        ("fixlinks_step", delivery),
        ("outbox_step", delivery),
    ]


def test_config_from_settings_uses_the_interval_settings() -> None:
    settings = load_settings(
        environ={"BOT_POLL_INTERVAL_SECONDS": "30", "BOT_OUTBOX_INTERVAL_SECONDS": "5"}
    )
    config = SchedulerConfig.from_settings(settings)
    assert config.intervals == {"poll": 30, "lifecycle": 300, "fixlinks": 900, "outbox": 5}
    assert config.renew_seconds == 20

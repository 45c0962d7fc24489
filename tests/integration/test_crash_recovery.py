"""kill -9 at any point: a restart neither repeats a finished run nor loses an interrupted one.

A throwaway child process plans an auto-mode requeue against the real PostgreSQL store
and target and SIGKILLs itself at a chosen point (hooks live only in the child script).
The test process then plays "the bot restarted": the FakeClock moves past the stale
cutoff, ``recover_interrupted()`` runs, and a later ``plan()`` of the same match in the
same window must not execute again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.store.models import LifecycleState, RunStatus
from tests.helpers_engine import (
    T0,
    World,
    add_tasks,
    all_runs,
    build_playbook,
    get_issue,
    match,
    playbook_data,
    tasks,
    track_issue,
)

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from contextlib import contextmanager
    from datetime import datetime
    from pathlib import Path

    from bot.adapters.targets.postgres import PgTarget
    from bot.clock import FakeClock
    from bot.pipeline.execute import Executor
    from bot.playbooks.loader import parse_playbook
    from bot.playbooks.matcher import MatchResult
    from bot.store.db import Store

    store_url, target_dsn, pb_file, issue_id, job, point, now = sys.argv[1:]

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    class KillingTarget:
        name = "jobs_db"

        def __init__(self):
            self.real = PgTarget(target_dsn, name="jobs_db")
            self.opened = 0

        @contextmanager
        def transaction(self, statement_ms, lock_ms, *, read_only=False):
            # The first transaction is the plan's preview (read-write since it runs the
            # real statement and rolls it back); the failpoints are on the execution.
            self.opened += 1
            if read_only or self.opened == 1:
                with self.real.transaction(statement_ms, lock_ms, read_only=read_only) as conn:
                    yield conn
                return
            if point == "before_target":
                die()
            with self.real.transaction(statement_ms, lock_ms) as conn:
                yield conn
                if point == "before_commit":  # the action ran; COMMIT not yet sent
                    die()
            if point == "after_commit":  # committed; the journal does not know yet
                die()

    class KillingExecutor(Executor):
        def execute_run(self, run_id):
            if point == "before_claim":  # journaled as approved, never claimed
                die()
            return super().execute_run(run_id)

    pb, errors, _ = parse_playbook(Path(pb_file).read_text(), Path(pb_file))
    assert pb is not None, errors
    target = KillingTarget()
    ex = KillingExecutor(
        Store(store_url), {pb.id: pb}, lambda name: target, FakeClock(datetime.fromisoformat(now))
    )
    out = ex.plan(issue_id, MatchResult(pb, {"job_id": job}))
    print(out.status, out.rows_affected)
    """
)


def _child(world: World, tmp_path: Path, point: str, issue: str, job: str) -> Any:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    pb_file = tmp_path / "stuck.yaml"
    pb_file.write_text(yaml.safe_dump(playbook_data()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            str(script),
            str(world.store.engine.url.render_as_string(hide_password=False)),
            world.target_dsn,
            str(pb_file),
            issue,
            job,
            point,
            T0.isoformat(),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# point -> (run status right after the kill, rows requeued by then, status after recovery)
# Nothing reached the target before the first three points, so recovery executes the run
# (once: it is claimed by compare-and-set); after the commit it only verifies.
POINTS = {
    "before_claim": (RunStatus.APPROVED.value, False, RunStatus.SUCCEEDED.value),
    "before_target": (RunStatus.RUNNING.value, False, RunStatus.SUCCEEDED.value),
    "before_commit": (RunStatus.RUNNING.value, False, RunStatus.SUCCEEDED.value),
    "after_commit": (RunStatus.RUNNING.value, True, RunStatus.INTERRUPTED.value),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_run_killed_mid_way_is_recovered_once_and_never_repeated(
    world: World, tmp_path: Path, point: str
) -> None:
    status_after_kill, requeued, recovered_status = POINTS[point]
    ids = add_tasks(world.target_dsn, 3)
    before = tasks(world.target_dsn)
    issue = track_issue(world.store, world.clock)
    pb = build_playbook()

    child = _child(world, tmp_path, point, issue, match(pb).params["job_id"].__str__())

    assert child.returncode == -signal.SIGKILL, child.stderr
    [run] = all_runs(world.store)
    assert run.status == status_after_kill
    after_kill = tasks(world.target_dsn)
    if requeued:
        assert [(r["status"], r["requeue_count"]) for r in after_kill] == [("pending", 1)] * 3
        assert run.target_xid is not None  # journaled before the action ran
    else:
        assert after_kill == before  # never started, or rolled back with the connection

    ex = world.executor(pb)
    # Right after the crash the run might still be alive in another process: hands off.
    assert ex.recover_interrupted() == []
    assert all_runs(world.store)[0].status == status_after_kill

    world.clock.advance(minutes=6)  # past statement_timeout + the 5-minute margin
    assert ex.recover_interrupted() == [run.id]

    [run] = all_runs(world.store)
    assert run.status == recovered_status
    assert run.verify["ok"] is True, run.verify
    if recovered_status == RunStatus.INTERRUPTED.value:
        assert run.error is not None and "process died" in run.error
        assert "committed" in run.error
    assert get_issue(world.store, issue).state == LifecycleState.WATCHING.value
    assert ex.recover_interrupted() == []  # recovered once

    # The same match in the same window, after the restart: journaled, so a no-op.
    again = ex.plan(issue, match(pb))
    assert again.run_id == run.id and "already journaled" in again.note
    assert len(all_runs(world.store)) == 1
    final = tasks(world.target_dsn)
    assert [r["id"] for r in final] == ids
    # Every stuck row requeued exactly once, whichever point the crash hit.
    assert [(r["status"], r["requeue_count"]) for r in final] == [("pending", 1)] * 3


def test_a_finished_run_is_never_repeated_after_a_restart(world: World, tmp_path: Path) -> None:
    add_tasks(world.target_dsn, 2)
    issue = track_issue(world.store, world.clock)
    pb = build_playbook()

    child = _child(world, tmp_path, "none", issue, match(pb).params["job_id"].__str__())

    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [RunStatus.SUCCEEDED.value, "2"]
    finished = tasks(world.target_dsn)
    assert [r["requeue_count"] for r in finished] == [1, 1]

    ex = world.executor(pb)  # the restarted bot
    world.clock.advance(hours=2)
    assert ex.recover_interrupted() == []
    again = ex.plan(issue, match(pb))
    [run] = all_runs(world.store)
    assert run.status == RunStatus.SUCCEEDED.value
    assert again.run_id == run.id and "already journaled" in again.note
    assert tasks(world.target_dsn) == finished

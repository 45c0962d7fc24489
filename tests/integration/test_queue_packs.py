"""The queue packs (examples/packs/) on the real queues (issue #13).

For each of procrastinate 3.10 (PyPI), pg-boss 10 and graphile-worker 0.17 (npm, in
tests/queues/node/, installed by scripts/test.sh): the queue's own migrator creates its
schema in a fresh database; a real worker takes job A and is SIGKILLed mid-job; a healthy
job B runs on a live worker; the pack, with only its ``match`` replaced and ``mode:
auto``, goes through the bot (real loader, matcher, executor, target ``queue_db``, no
extracted parameter) and requeues A only, with no SQL written by the test; a fresh real
worker completes A; B is untouched and completes once; the queue's own invariants hold.

Every wait polls the database (or a marker file) against a generous deadline: the host
is slow and shared, and nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from bot.adapters.targets.postgres import PgTarget
from bot.clock import FakeClock
from bot.pipeline.execute import Executor, PlanOutcome
from bot.pipeline.track import track
from bot.playbooks.matcher import Matcher
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from tests.helpers_engine import build_playbook, issue_json, make_store

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "examples" / "packs"
NODE = ROOT / "tests" / "queues" / "node"
PROCRASTINATE_WORKER = ROOT / "tests" / "queues" / "procrastinate_worker.py"
DEADLINE_S = 150.0
TITLE = "Jobs are stuck in the queue"

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Processes:
    """Subprocesses of one test: logs in ``tmp``, every one killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.started.append(proc)
        return proc

    def run(self, name: str, *cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, cwd=ROOT, timeout=DEADLINE_S, check=False)
        assert done.returncode == 0, f"{name}: {done.stdout!r} {done.stderr!r}"
        return done.stdout.decode().strip()

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def control(tmp_path: Path) -> Path:
    """Where jobs write ``<name>.started`` and wait for ``<name>.release``."""
    path = tmp_path / "control"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = make_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.dispose()


def node() -> str:
    exe = shutil.which("node")
    if exe is None or not (NODE / "node_modules").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node and tests/queues/node/node_modules are required in CI")
        pytest.skip("node packages not installed (scripts/test.sh runs npm ci)")
    return exe


def url(dsn: str) -> str:
    """A libpq keyword DSN as the postgresql:// URL node-postgres understands."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    auth = str(info.get("user", "postgres"))
    if info.get("password"):
        auth += f":{info['password']}"
    host, port = str(info.get("host", "127.0.0.1")), info.get("port", "5432")
    if host.startswith("/"):  # a Unix-socket directory (the embedded test server's)
        host = urllib.parse.quote(host, safe="")  # pg-connection-string decodes it
    return f"postgresql://{auth}@{host}:{port}/{info['dbname']}"


def started(control: Path, name: str) -> int:
    marker = control / f"{name}.started"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def release(control: Path, name: str) -> None:
    (control / f"{name}.release").touch()


def one(dsn: str, query: str, *args: Any) -> dict[str, Any] | None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, args).fetchone()


def run_pack(pack: str, dsn: str, store: Store, clock: FakeClock) -> PlanOutcome:
    """The shipped pack, ``match`` replaced and ``mode: auto``, through the real bot."""
    data = yaml.safe_load((PACKS / pack).read_text())
    data["match"] = {"title": f"^{TITLE}$"}
    data["guards"]["mode"] = "auto"
    playbook = build_playbook(data)
    assert playbook.extract == {}
    issue = SentryIssue.model_validate(issue_json("9001", title=TITLE))
    with store.session() as session:
        track(session, [issue], clock)
    found = Matcher([playbook]).match(issue, None)
    assert found is not None and found.params == {}
    executor = Executor(
        store,
        {playbook.id: playbook},
        lambda name: PgTarget(dsn, name=name) if name == "queue_db" else None,
        clock,
    )
    return executor.plan(issue.id, found)


def assert_remedied(outcome: PlanOutcome, n: int = 1) -> None:
    assert outcome.status == "succeeded", (outcome.status, outcome.note, outcome.verify)
    assert outcome.rows_affected == n
    assert outcome.verify is not None and "requeued" in outcome.verify


# --- procrastinate --------------------------------------------------------------------


def test_procrastinate_pack_retries_the_job_of_a_killed_worker_only(
    pg_dsn: str, procs: Processes, control: Path, store: Store, clock: FakeClock
) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=pg_dsn))
    with app.open():
        app.schema_manager.apply_schema()  # procrastinate's own schema
        job_a = app.configure_task("hold", queue="a").defer(name="A")
        job_b = app.configure_task("hold", queue="b").defer(name="B")

    def status(job: int) -> dict[str, Any]:
        row = one(
            pg_dsn,
            "SELECT status::text, worker_id, attempts FROM procrastinate_jobs WHERE id = %s",
            job,
        )
        assert row is not None
        return row

    py = sys.executable
    worker_a = procs.start("worker-a", py, str(PROCRASTINATE_WORKER), pg_dsn, "a", str(control))
    wait_for("A to start on worker a", lambda: started(control, "A"))
    assert status(job_a)["status"] == "doing"
    procs.kill(worker_a)  # SIGKILL mid-job: no graceful stop, the job stays 'doing'
    procs.start("worker-b", py, str(PROCRASTINATE_WORKER), pg_dsn, "b", str(control))
    wait_for("B to start on worker b", lambda: started(control, "B"))
    b_before = status(job_b)
    assert b_before["status"] == "doing"

    # procrastinate's own definition: stalled once the worker's heartbeat is older than
    # stalled_worker_timeout (30 s); wait for the database to say so, then run the bot.
    wait_for(
        "worker a's heartbeat to go stale (30 s)",
        lambda: one(
            pg_dsn,
            "SELECT 1 FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w"
            " ON w.id = j.worker_id WHERE j.id = %s AND (w.id IS NULL"
            " OR w.last_heartbeat < now() - interval '30 seconds')",
            job_a,
        ),
        deadline_s=DEADLINE_S + 30,
    )
    outcome = run_pack("procrastinate.yaml", pg_dsn, store, clock)

    assert_remedied(outcome)
    assert outcome.preview is not None and outcome.preview.count == 1
    assert status(job_a)["status"] == "todo"
    assert status(job_a)["attempts"] == 1  # procrastinate_retry_job_v2 counted the retry
    assert status(job_b) == b_before  # untouched: same status, worker, attempts

    release(control, "A")
    procs.start("worker-a2", py, str(PROCRASTINATE_WORKER), pg_dsn, "a", str(control))
    wait_for("a fresh worker to complete A", lambda: status(job_a)["status"] == "succeeded")
    release(control, "B")
    wait_for("B to complete on its own worker", lambda: status(job_b)["status"] == "succeeded")

    # The queue's own invariants: its status trigger wrote every transition as an event.
    with psycopg.connect(pg_dsn) as conn:
        events = {
            job: [
                r[0]
                for r in conn.execute(
                    "SELECT type::text FROM procrastinate_events WHERE job_id = %s ORDER BY id",
                    (job,),
                )
            ]
            for job in (job_a, job_b)
        }
    # procrastinate/sql/schema.sql triggers: the retry function's UPDATE writes
    # 'scheduled' (scheduled_at set, status todo) and 'deferred_for_retry' (doing -> todo);
    # 'scheduled' repeats whenever a todo job is updated again (e.g. the fresh worker's
    # start-up prune of the dead worker sets worker_id NULL), so transitions are compared
    # without it.
    transitions = [e for e in events[job_a] if e != "scheduled"]
    assert transitions == ["deferred", "started", "deferred_for_retry", "started", "succeeded"]
    assert "scheduled" in events[job_a]
    assert events[job_b] == ["deferred", "started", "succeeded"]
    assert (started(control, "A"), started(control, "B")) == (2, 1)


# --- pg-boss ----------------------------------------------------------------------------


def _pgboss(procs: Processes, *args: str) -> str:
    return procs.run("pg-boss", node(), str(NODE / "pgboss-cli.js"), *args)


def test_pg_boss_pack_expires_only_the_job_past_its_own_expire_in(
    pg_dsn: str, procs: Processes, control: Path, store: Store, clock: FakeClock
) -> None:
    exe, dsn = node(), url(pg_dsn)
    _pgboss(procs, "migrate", dsn, "a", "b")  # pg-boss's own migrator
    job_b = _pgboss(procs, "send", dsn, "b", "B", "3600")  # healthy: long expire_in
    job_a = _pgboss(procs, "send", dsn, "a", "A", "2")

    def job(job_id: str) -> dict[str, Any]:
        row = one(
            pg_dsn,
            "SELECT state::text, retry_count, started_on, completed_on, output"
            " FROM pgboss.job WHERE id = %s",
            job_id,
        )
        assert row is not None
        return row

    # B starts first, so by the time A has expired B has run LONGER than A, yet within its
    # own expire_in: a fixed-age rule would take B too (issue #13: B ran twice at once).
    procs.start("worker-b", exe, str(NODE / "pgboss-cli.js"), "work", dsn, "b", str(control))
    wait_for("B to start", lambda: started(control, "B"))
    worker_a = procs.start(
        "worker-a", exe, str(NODE / "pgboss-cli.js"), "work", dsn, "a", str(control)
    )
    wait_for("A to start", lambda: started(control, "A"))
    procs.kill(worker_a)
    b_before = job(job_b)
    assert job(job_a)["state"] == "active" and b_before["state"] == "active"
    wait_for(
        "A's own expire_in (2 s) to pass",
        lambda: one(
            pg_dsn,
            "SELECT 1 FROM pgboss.job WHERE id = %s AND started_on + expire_in < now()",
            job_a,
        ),
    )
    assert job(job_b)["started_on"] < job(job_a)["started_on"]

    outcome = run_pack("pg-boss.yaml", pg_dsn, store, clock)

    assert_remedied(outcome)
    after = job(job_a)
    assert after["state"] == "retry"
    assert after["retry_count"] == 0  # pg-boss counts the retry itself, when it fetches
    assert after["output"] == {"value": {"message": "job failed by timeout in active state"}}
    assert job(job_b) == b_before

    release(control, "A")
    procs.start("worker-a2", exe, str(NODE / "pgboss-cli.js"), "work", dsn, "a", str(control))
    wait_for("a fresh worker to complete A", lambda: job(job_a)["state"] == "completed")
    assert job(job_a)["retry_count"] == 1  # counted once, by pg-boss, not twice
    release(control, "B")
    wait_for("B to complete", lambda: job(job_b)["state"] == "completed")
    assert job(job_b)["retry_count"] == 0
    assert (started(control, "A"), started(control, "B")) == (2, 1)


def test_pg_boss_partitions_with_the_same_ctid_are_named_once_each(
    pg_dsn: str, procs: Processes, control: Path, store: Store, clock: FakeClock
) -> None:
    exe, dsn = node(), url(pg_dsn)
    _pgboss(procs, "migrate", dsn, "a", "c")
    # Job C may not be retried (retry_limit 0): past its own cap it is dead-lettered.
    ids = {
        q: _pgboss(procs, "send", dsn, q, q.upper(), "2", limit)
        for q, limit in (("a", "2"), ("c", "0"))
    }
    workers = [
        procs.start(f"worker-{q}", exe, str(NODE / "pgboss-cli.js"), "work", dsn, q, str(control))
        for q in ids
    ]
    for q in ids:
        wait_for(f"{q} to start", lambda q=q: started(control, q.upper()))
    for w in workers:
        procs.kill(w)
    with psycopg.connect(pg_dsn) as conn:
        ctids = [
            r[0]
            for r in conn.execute(
                "SELECT ctid::text FROM pgboss.job WHERE id = ANY(%s::uuid[])",
                (list(ids.values()),),
            )
        ]
    assert len(set(ctids)) == 1, ctids  # the first row of each partition: same ctid
    wait_for(
        "both jobs to expire",
        lambda: one(
            pg_dsn,
            "SELECT 1 WHERE (SELECT count(*) FROM pgboss.job WHERE state = 'active'"
            " AND started_on + expire_in < now()) = 2",
        ),
    )

    outcome = run_pack("pg-boss.yaml", pg_dsn, store, clock)

    assert_remedied(outcome, n=2)
    [run] = _runs(store)
    assert run.before_image["details"]["dead_lettered"] == 1
    states = {
        q: one(
            pg_dsn,
            "SELECT state::text, completed_on IS NOT NULL AS done, output"
            " FROM pgboss.job WHERE id = %s",
            job_id,
        )
        for q, job_id in ids.items()
    }
    message = {"value": {"message": "job failed by timeout in active state"}}
    assert states["a"] == {"state": "retry", "done": False, "output": message}
    assert states["c"] == {"state": "failed", "done": True, "output": message}
    named = sorted((row["name"], row["id"]) for row in run.before_image["rows"])
    assert named == sorted(ids.items())
    assert run.before_image["details"]["keys"] == [
        {"name": n, "id": i}
        for n, i in ((row["name"], row["id"]) for row in run.before_image["rows"])
    ]


def _runs(store: Store) -> list[Any]:
    from tests.helpers_engine import all_runs

    return all_runs(store)


# --- graphile-worker --------------------------------------------------------------------


def test_graphile_worker_pack_unlocks_the_crashed_job_and_its_queue_only(
    pg_dsn: str, procs: Processes, control: Path, store: Store, clock: FakeClock
) -> None:
    exe, dsn = node(), url(pg_dsn)
    cli = str(NODE / "graphile-cli.js")
    procs.run("graphile-worker", exe, cli, "migrate", dsn)  # its own migrator
    job_b = int(procs.run("graphile-worker", exe, cli, "add", dsn, "qb", "B"))
    procs.start("worker-b", exe, cli, "work", dsn, str(control))
    wait_for("B to start", lambda: started(control, "B"))
    job_a = int(procs.run("graphile-worker", exe, cli, "add", dsn, "qa", "A"))
    worker_a = procs.start("worker-a", exe, cli, "work", dsn, str(control))
    wait_for("A to start", lambda: started(control, "A"))
    procs.kill(worker_a)

    def locks(job: int) -> dict[str, Any] | None:
        return one(
            pg_dsn,
            "SELECT j.locked_by AS job_locked_by, j.attempts, q.queue_name,"
            " q.locked_by AS queue_locked_by FROM graphile_worker._private_jobs j"
            " JOIN graphile_worker._private_job_queues q ON q.id = j.job_queue_id"
            " WHERE j.id = %s",
            job,
        )

    a_before, b_before = locks(job_a), locks(job_b)
    assert a_before is not None and b_before is not None
    assert a_before["job_locked_by"] == a_before["queue_locked_by"] is not None
    # graphile-worker's own rule is "locked for 4 hours" (resetLockedAt); the test cannot
    # wait 4 hours, so it moves A's lock times (job and queue) 5 hours into the past, the
    # way the clock would. B and its queue keep their real lock times. This is the only
    # SQL the test writes, and it is not the remedy.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE graphile_worker._private_jobs SET locked_at = locked_at - interval '5 hours'"
            " WHERE id = %s",
            (job_a,),
        )
        conn.execute(
            "UPDATE graphile_worker._private_job_queues SET locked_at = locked_at"
            " - interval '5 hours' WHERE queue_name = 'qa'"
        )

    outcome = run_pack("graphile-worker.yaml", pg_dsn, store, clock)

    assert_remedied(outcome)
    a_after = locks(job_a)
    assert a_after is not None
    assert (a_after["job_locked_by"], a_after["queue_locked_by"]) == (None, None)
    assert a_after["attempts"] == a_before["attempts"] == 1  # graphile counted it at lock
    assert locks(job_b) == b_before  # the live worker's job and queue stay locked
    [run] = _runs(store)
    [image] = run.before_image["rows"]
    assert (image["id"], image["locked_by"]) == (job_a, a_before["job_locked_by"])
    [queue_image] = run.before_image["details"]["companions"]["graphile_worker._private_job_queues"]
    assert queue_image["locked_by"] == a_before["job_locked_by"]

    release(control, "A")
    procs.start("worker-a2", exe, cli, "work", dsn, str(control))
    gone = "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM graphile_worker._private_jobs WHERE id = %s)"
    wait_for(
        "a fresh worker to complete A (graphile deletes done jobs)",
        lambda: one(pg_dsn, gone, job_a),
    )
    release(control, "B")
    wait_for("B to complete", lambda: one(pg_dsn, gone, job_b))
    # The queue's own invariants: no queue left locked, each job ran exactly as expected.
    assert (
        one(pg_dsn, "SELECT 1 FROM graphile_worker._private_job_queues WHERE locked_by IS NOT NULL")
        is None
    )
    assert (started(control, "A"), started(control, "B")) == (2, 1)

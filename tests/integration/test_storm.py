"""Storm mode (issue #12): a burst of one playbook's matches remedied as one batch.

A real PostgreSQL target (a fresh database per test) holds tasks left ``running`` by a
dead worker, one Sentry issue per task (FakeSentry through the real HTTP client), and an
auto-mode ``requeue_stuck_tasks`` playbook scoped to the issue's ``job_id``. Each test
runs one poll step and checks what a batch must keep of the single-run path: one run per
issue, journaled with a preview of exactly its own rows, executed once, verified, and
refused by the same guards; and what it shares: ONE target transaction for the batch
(every run journals the same ``txid_current()``, which PostgreSQL reports committed).
The store is SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from sqlmodel import col, select

from bot.actions.port import Dialect, Params, Row, SqlQuery, TargetConnection, TargetDatabase
from bot.adapters.sentry.client import HttpSentryClient
from bot.adapters.targets.factory import open_target
from bot.clock import FakeClock
from bot.errors import RemediationError, TargetUnavailable
from bot.interfaces.app import App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import plan_matches, poll_step
from bot.pipeline.cycle_report import CycleReport
from bot.pipeline.poll import poll_and_track
from bot.sentry.models import SentryIssue
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import RemediationRun, RunStatus, TrackedIssue, Transition
from bot.testing.sentry import FakeSentry

pytestmark = pytest.mark.postgres

TOKEN = "sntrys_storm_" + "s" * 24


def playbook(**guards: object) -> dict[str, Any]:
    return {
        "id": "storm-requeue",
        "priority": 10,
        "match": {"title": "^Task stuck: job_id="},
        "extract": {
            "job_id": {
                "from": "title",
                "regex": "job_id=(?P<job_id>[0-9a-f-]{36})",
                "type": "uuid",
            }
        },
        "action": {
            "type": "requeue_stuck_tasks",
            "target": "jobs_db",
            "settings": {
                "table": "tasks",
                "status_column": "status",
                "running_values": ["running"],
                "pending_value": "pending",
                "failed_value": "failed",
                "mode": "owner_heartbeat",
                "worker_table": "workers",
                "worker_id_column": "worker_id",
                "worker_key_column": "id",
                "worker_heartbeat_column": "last_heartbeat",
                "lease_seconds": 300,
                "requeue_count_column": "requeue_count",
                "max_requeues": 3,
                "reason_column": "failure_reason",
                "scope": {"job_id": "job_id"},
            },
        },
        # breaker_failures 100: a storm's first chunk is up to 100 runs (see
        # test_a_remedy_that_does_not_hold_stops_at_the_breakers_bound for the chunks).
        "guards": {
            "mode": "auto",
            "max_rows": 5,
            "max_runs_per_hour": 500,
            "breaker_failures": 100,
            **guards,
        },
    }


SCHEMA = """
CREATE TABLE workers (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    status text NOT NULL,
    worker_id text REFERENCES workers (id),
    requeue_count integer NOT NULL DEFAULT 0,
    failure_reason text
);
INSERT INTO workers VALUES ('w-dead', now() - interval '1 hour'), ('w-live', now());
"""


class Bed:
    """The target, FakeSentry and a way to build a bot over one store."""

    def __init__(self, pg_dsn: str, store: Store, clock: FakeClock, tmp: Path) -> None:
        self.dsn, self.store, self.clock, self.tmp = pg_dsn, store, clock, tmp
        self.fake = FakeSentry(clock=clock, token=TOKEN, org="acme", rate_limit=10**9)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
        self.jobs: list[str] = []

    def stuck(self, n: int, *, rows: int = 1) -> list[str]:
        """``n`` new issues, each with ``rows`` tasks stuck on the dead worker, plus one
        task of the same job on the live worker (never to be touched)."""
        jobs = [str(uuid.uuid4()) for _ in range(n)]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for job in jobs:
                for _ in range(rows):
                    conn.execute(
                        "INSERT INTO tasks (job_id, status, worker_id)"
                        " VALUES (%s, 'running', 'w-dead')",
                        (job,),
                    )
                conn.execute(
                    "INSERT INTO tasks (job_id, status, worker_id)"
                    " VALUES (%s, 'running', 'w-live')",
                    (job,),
                )
        for job in jobs:
            self.fake.add_issue(project="worker", title=f"Task stuck: job_id={job}")
        self.jobs += jobs
        return jobs

    def app(self, pb: dict[str, Any], targets: TargetDatabase | None = None) -> App:
        playbooks = self.tmp / "playbooks"
        playbooks.mkdir(exist_ok=True)
        (playbooks / "storm.yaml").write_text(yaml.safe_dump(pb))
        settings = Settings.model_validate(
            {
                "SENTRY_AUTH_TOKEN": TOKEN,
                "SENTRY_ORG": "acme",
                "BOT_DATABASE_URL": self.store.engine.url.render_as_string(hide_password=False),
                "BOT_PLAYBOOKS_DIR": str(playbooks),
                "BOT_REPORTS_DIR": None,
                "targets": {"jobs_db": self.dsn},
            }
        )
        app = App(settings=settings, store=self.store, clock=self.clock)
        app._sentry = HttpSentryClient(
            org="acme",
            token=TOKEN,
            clock=self.clock,
            transport=httpx.MockTransport(self.fake.handler),
        )
        if targets is not None:
            app.targets["jobs_db"] = targets
        return app

    def tasks(self) -> dict[str, list[tuple[str, str, int]]]:
        """job_id -> [(worker, status, requeue_count)] from the target, by the raw driver."""
        out: dict[str, list[tuple[str, str, int]]] = {}
        with psycopg.connect(self.dsn) as conn:
            for job, worker, status, count in conn.execute(
                "SELECT job_id::text, worker_id, status, requeue_count FROM tasks ORDER BY id"
            ):
                out.setdefault(job, []).append((worker, status, count))
        return out

    def txid_status(self, xid: str) -> str:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT txid_status(%s::bigint)", (xid,)).fetchone()
        assert row is not None
        return str(row[0])


@pytest.fixture
def bed(pg_dsn: str, store: Store, clock: FakeClock, tmp_path: Path) -> Bed:
    return Bed(pg_dsn, store, clock, tmp_path)


def runs(store: Store) -> list[RemediationRun]:
    with store.session() as session:
        return list(session.exec(select(RemediationRun)).all())


def run_step(app: App) -> CycleReport:
    try:
        return poll_step(build_cycle(app))
    finally:
        app.close()


def test_a_burst_is_one_target_transaction_and_every_run_keeps_its_own_journal(
    bed: Bed,
) -> None:
    jobs = bed.stuck(25)
    report = run_step(bed.app(playbook()))
    assert report.errors == []
    found = runs(bed.store)
    assert len(found) == 25 and len({r.issue_id for r in found}) == 25
    assert {r.status for r in found} == {RunStatus.SUCCEEDED.value}
    assert all(r.verify and r.verify["ok"] for r in found)
    # One batch: every run journaled the same target transaction, which committed.
    xids = {r.target_xid for r in found}
    assert len(xids) == 1 and None not in xids
    assert bed.txid_status(str(xids.pop())) == "committed"
    with bed.store.session() as session:
        issues = {i.id: i for i in session.exec(select(TrackedIssue)).all()}
        steps = session.exec(select(Transition).order_by(col(Transition.id))).all()
    for run in found:
        job = str(run.params["job_id"])
        # Each preview names exactly its own stuck row, not its neighbours'.
        assert len(run.preview["rows"]) == 1, run.preview
        assert run.rows_affected == 1
        assert job in issues[run.issue_id].title
        trail = [s.to_state for s in steps if s.issue_id == run.issue_id]
        assert trail[-5:] == ["matched", "planned", "remediating", "remediated", "watching"]
        assert issues[run.issue_id].state == "watching"
    # Exactly the dead worker's row of each job, exactly once; the live one untouched.
    state = bed.tasks()
    for job in jobs:
        assert state[job] == [("w-dead", "pending", 1), ("w-live", "running", 0)]
    # A second step (nothing new) changes nothing.
    again = run_step(bed.app(playbook()))
    assert again.errors == [] and len(runs(bed.store)) == 25
    assert bed.tasks() == state


def test_a_run_over_max_rows_is_refused_alone_and_the_rest_are_remedied(bed: Bed) -> None:
    jobs = bed.stuck(6)
    (big,) = bed.stuck(1, rows=7)  # max_rows is 5
    report = run_step(bed.app(playbook()))
    by_job = {str(r.params["job_id"]): r for r in runs(bed.store)}
    assert by_job[big].status == RunStatus.FAILED.value
    assert "max_rows" in (by_job[big].error or "")
    assert "execute would refuse" in by_job[big].preview["summary"]
    assert {by_job[j].status for j in jobs} == {RunStatus.SUCCEEDED.value}
    # The six ran in one batch; the refused one alone (no shared transaction id).
    assert len({by_job[j].target_xid for j in jobs}) == 1
    assert by_job[big].target_xid not in {by_job[j].target_xid for j in jobs}
    state = bed.tasks()
    assert [s for _, s, _ in state[big]] == ["running"] * 8  # nothing of it changed
    assert all(state[j][0] == ("w-dead", "pending", 1) for j in jobs)
    (refused,) = [p for p in report.plans if p.params.get("job_id") == big]
    assert refused.status == RunStatus.FAILED.value


def test_the_rate_cap_counts_the_batchs_own_runs(bed: Bed) -> None:
    jobs = bed.stuck(15)
    report = run_step(bed.app(playbook(max_runs_per_hour=10)))
    found = runs(bed.store)
    assert len(found) == 10 and {r.status for r in found} == {RunStatus.SUCCEEDED.value}
    blocked = [p for p in report.plans if p.status == RunStatus.BLOCKED.value]
    assert len(blocked) == 5
    assert all(p.note.startswith("rate cap: 10 runs in the last hour") for p in blocked)
    state = bed.tasks()
    assert sum(state[j][0][1] == "pending" for j in jobs) == 10
    # The next hour the five left are remedied, once.
    bed.clock.advance(minutes=61)
    run_step(bed.app(playbook(max_runs_per_hour=10)))
    assert all(bed.tasks()[j][0] == ("w-dead", "pending", 1) for j in jobs)
    assert len(runs(bed.store)) == 15


class _FailingTarget:
    """The real target, whose ``n``-th transaction refuses every statement bound to the
    value ``poison`` (the database refusing one run's statements), or, with no
    ``poison``, fails at its COMMIT (the transaction rolls back instead; the bot cannot
    tell it from a lost connection)."""

    def __init__(self, real: TargetDatabase, n: int, poison: str | None) -> None:
        self.real, self.n, self.poison, self.count = real, n, poison, 0

    @property
    def name(self) -> str:
        return self.real.name

    def transaction(
        self, statement_timeout_ms: int, lock_timeout_ms: int, *, read_only: bool = False
    ) -> AbstractContextManager[TargetConnection]:
        self.count += 1
        return self._tx(statement_timeout_ms, lock_timeout_ms, read_only, self.count == self.n)

    @contextmanager
    def _tx(self, st: int, lt: int, ro: bool, fail: bool) -> Iterator[TargetConnection]:
        with self.real.transaction(st, lt, read_only=ro) as conn:
            yield _Failing(conn, self.poison if fail else None)
            if fail and self.poison is None:
                raise TargetUnavailable("injected: connection lost during COMMIT")


class _Failing:
    """A connection without pipelining (statements one by one), refusing ``poison``."""

    def __init__(self, conn: TargetConnection, poison: str | None) -> None:
        self.conn, self.poison = conn, poison

    @property
    def dialect(self) -> Dialect:
        return self.conn.dialect

    @property
    def memo(self) -> dict[object, object]:
        return self.conn.memo

    def _check(self, params: Params | None) -> None:
        if self.poison is not None and self.poison in map(str, (params or {}).values()):
            raise RemediationError("injected: the database refused this statement")

    def fetch_all(self, query: SqlQuery, params: Params | None = None) -> list[Row]:
        self._check(params)
        return self.conn.fetch_all(query, params)

    def execute(self, query: SqlQuery, params: Params | None = None) -> int:
        self._check(params)
        return self.conn.execute(query, params)


def test_a_run_refused_inside_the_batch_goes_alone_and_the_rest_commit_together(
    bed: Bed,
) -> None:
    jobs = bed.stuck(8)
    # The batch's transaction refuses the third run's statement (and only in it).
    failing = _FailingTarget(open_target(bed.dsn, name="jobs_db"), n=1, poison=jobs[2])
    report = run_step(bed.app(playbook(), targets=failing))
    assert report.errors == []
    by_job = {str(r.params["job_id"]): r for r in runs(bed.store)}
    assert len(by_job) == 8 and {r.status for r in by_job.values()} == {"succeeded"}
    refused = jobs[2]
    batch = {by_job[j].target_xid for j in jobs if j != refused}
    assert len(batch) == 1  # the other seven: one transaction, started again without it
    assert by_job[refused].target_xid not in batch  # it ran alone, planned as usual
    # Nothing of the refused attempt remained: every row requeued exactly once.
    assert all(bed.tasks()[j] == [("w-dead", "pending", 1), ("w-live", "running", 0)] for j in jobs)


def test_a_run_the_database_refuses_is_found_and_the_rest_commit_together(bed: Bed) -> None:
    """A real refusal through the real adapter: a trigger rejects the UPDATE of one
    job's task. The batch's first statements go out in one pipeline, the error names no
    run, so the attempt is rolled back and run again one run at a time to find it."""
    jobs = bed.stuck(6)
    bad = jobs[3]
    with psycopg.connect(bed.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.job_id = '{bad}' THEN RAISE EXCEPTION 'refused by policy';"
            " END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_one BEFORE UPDATE ON tasks"
            " FOR EACH ROW EXECUTE FUNCTION refuse_one()"
        )
    report = run_step(bed.app(playbook()))
    by_job = {str(r.params["job_id"]): r for r in runs(bed.store)}
    assert set(by_job) == set(jobs) - {bad}  # the refused one: no preview, no run
    assert {r.status for r in by_job.values()} == {RunStatus.SUCCEEDED.value}
    assert len({r.target_xid for r in by_job.values()}) == 1
    (blocked,) = [p for p in report.plans if p.params.get("job_id") == bad]
    assert blocked.status == RunStatus.BLOCKED.value and "refused by policy" in blocked.note
    state = bed.tasks()
    assert state[bad] == [("w-dead", "running", 0), ("w-live", "running", 0)]
    assert all(
        state[j] == [("w-dead", "pending", 1), ("w-live", "running", 0)] for j in jobs if j != bad
    )


def test_a_remedy_that_does_not_hold_stops_at_the_breakers_bound(bed: Bed) -> None:
    """A trigger keeps every task running (the UPDATE "succeeds", nothing changes): each
    verification fails. One run at a time, the breaker (3 failures) stops the playbook
    after 3 runs; a storm must not apply the broken remedy to the whole batch: its first
    chunk is 3 runs, verified, the breaker opens, the rest are refused."""
    jobs = bed.stuck(10)
    with psycopg.connect(bed.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION keep_running() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN NEW.status := OLD.status; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER keep_running BEFORE UPDATE ON tasks"
            " FOR EACH ROW EXECUTE FUNCTION keep_running()"
        )
    report = run_step(bed.app(playbook(breaker_failures=3)))
    found = runs(bed.store)
    assert len(found) == 3 and {r.status for r in found} == {RunStatus.VERIFY_FAILED.value}
    assert len({r.target_xid for r in found}) == 1  # the first chunk: one transaction
    blocked = [p for p in report.plans if p.status == RunStatus.BLOCKED.value]
    assert len(blocked) == 7
    assert all(p.note.startswith("circuit breaker open for storm-requeue") for p in blocked)
    assert {s for j in jobs for _, s, _ in bed.tasks()[j]} == {"running"}


def test_a_remedy_that_starts_failing_mid_storm_stops_within_the_chunk_in_flight(
    bed: Bed,
) -> None:
    """The first chunk (3 runs) verifies clean, so the next doubles (6); from the 4th
    job on the trigger keeps tasks running: that chunk's 6 runs fail verification, the
    breaker opens, and the 3 issues left are refused, never run."""
    jobs = bed.stuck(12)
    poisoned = ", ".join(f"'{j}'" for j in jobs[3:])
    with psycopg.connect(bed.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION keep_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.job_id::text IN ({poisoned}) THEN NEW.status := OLD.status; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER keep_some BEFORE UPDATE ON tasks"
            " FOR EACH ROW EXECUTE FUNCTION keep_some()"
        )
    report = run_step(bed.app(playbook(breaker_failures=3)))
    by_job = {str(r.params["job_id"]): r for r in runs(bed.store)}
    assert [by_job[j].status for j in jobs[:3]] == [RunStatus.SUCCEEDED.value] * 3
    assert [by_job[j].status for j in jobs[3:9]] == [RunStatus.VERIFY_FAILED.value] * 6
    assert not set(jobs[9:]) & set(by_job)  # never run
    blocked = [p for p in report.plans if p.status == RunStatus.BLOCKED.value]
    assert sorted(str(p.params["job_id"]) for p in blocked) == sorted(jobs[9:])


def test_a_big_storm_runs_in_chunks_that_double(bed: Bed) -> None:
    bed.stuck(60)
    run_step(bed.app(playbook(breaker_failures=5)))
    found = runs(bed.store)
    assert len(found) == 60 and {r.status for r in found} == {RunStatus.SUCCEEDED.value}
    sizes = sorted(Counter(r.target_xid for r in found).values())
    assert sizes == sorted([5, 10, 20, 25])  # 5, then doubling, the rest last


def test_a_commit_in_doubt_is_left_to_recovery_which_runs_each_once(bed: Bed) -> None:
    jobs = bed.stuck(5)
    failing = _FailingTarget(open_target(bed.dsn, name="jobs_db"), n=1, poison=None)
    report = run_step(bed.app(playbook(), targets=failing))
    # Journaled before the COMMIT, which failed: the runs stay running (never guessed).
    found = runs(bed.store)
    assert len(found) == 5 and {r.status for r in found} == {RunStatus.RUNNING.value}
    assert all(p.note.startswith("in doubt") for p in report.plans)
    assert all(r.target_xid for r in found)
    assert {s for j in jobs for _, s, _ in bed.tasks()[j]} == {"running"}
    # Later (past the stale cutoff) recovery asks the target: the transaction aborted,
    # so each run executes once, on its own.
    bed.clock.advance(minutes=30)
    again = run_step(bed.app(playbook()))
    assert sorted(again.recovered_runs) == sorted(r.id for r in found)
    found = runs(bed.store)
    assert len(found) == 5 and {r.status for r in found} == {RunStatus.SUCCEEDED.value}
    assert all(bed.tasks()[j] == [("w-dead", "pending", 1), ("w-live", "running", 0)] for j in jobs)


def test_two_replicas_storming_the_same_burst_requeue_each_row_once(bed: Bed) -> None:
    """Two planners (one store) take the same tracked burst at the same moment (another
    replica, or a webhook worker beside the poller): the planning lock and the
    idempotency keys let one journal each run. On SQLite both are threads of one
    process (the store is one process's)."""
    jobs = bed.stuck(40)
    apps = [bed.app(playbook()), bed.app(playbook())]
    parts = [build_cycle(a) for a in apps]
    tracked = poll_and_track(bed.store, parts[0].source, bed.clock).tracked.new
    with bed.store.session() as session:
        rows = {r.id: r for r in session.exec(select(TrackedIssue)).all()}
    matched = []
    for issue_id in tracked:
        issue = SentryIssue.model_validate(rows[issue_id].raw)
        result = parts[0].matcher.match(issue)
        assert result is not None
        matched.append((issue_id, issue.short_id, result))
    reports = [CycleReport(), CycleReport()]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def go(n: int) -> None:
        try:
            barrier.wait()
            plan_matches(parts[n], matched, reports[n], shadow_only=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    assert errors == [], [str(e)[:600] for e in errors]
    assert reports[0].errors == [] and reports[1].errors == []
    found = runs(bed.store)
    assert len(found) == 40 and len({r.issue_id for r in found}) == 40
    assert {r.status for r in found} == {RunStatus.SUCCEEDED.value}
    assert all(bed.tasks()[j] == [("w-dead", "pending", 1), ("w-live", "running", 0)] for j in jobs)

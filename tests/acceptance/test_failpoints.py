"""Crash safety at every failpoint: the real ``sentry-bot cycle`` dies there, then restarts.

Per failpoint: three Sentry issues (FakeSentry on loopback, through the real HTTP client),
each with three tasks stuck on a dead worker in a real PostgreSQL target, an auto-mode
requeue playbook with one quiet hour, a real PostgreSQL store, and a Slack webhook on
loopback (RecordingWebhook). The issues were last seen two hours ago, so one healthy
cycle goes all the way: remediate, verify, announce, resolve in Sentry, announce.

1. ``python -m bot cycle`` with ``BOT_FAILPOINT=<name>`` must die with that failpoint's
   exit status (so the point is really on the path).
2. "The operator restarts it later": every lease and staleness timestamp in the store is
   moved an hour back (the recovery sweep leaves work younger than statement timeout +
   5 minutes alone, as it may belong to a live replica), then one plain cycle runs.
3. Then: every stuck row requeued exactly once, nothing else touched, every issue
   ``resolved`` (a steady state), one run per issue, verified, each announced exactly
   once on Slack; the only duplicate allowed is the documented at-least-once window of
   the outbox (``after-send``: the message in flight is sent again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.rows import dict_row

from bot.clock import SystemClock
from bot.failpoints import FAILPOINTS, exit_code
from bot.store.db import Store
from bot.testing.sentry import FakeSentry
from bot.testing.webhook import RecordingWebhook
from tests.conftest import sqlalchemy_url

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TARGETS_SQL = ROOT / "examples" / "targets.sql"
TOKEN = "sntrys_failpoint_" + "k" * 24
ISSUES = 3
ROWS = 3  # stuck rows per issue
REMEDIATED = ":white_check_mark: Remediated"
RESOLVED = ":tada: Resolved"
# The one documented at-least-once window: killed after the receiver accepted, before
# the row was marked sent (bot/pipeline/outbox.py), the message in flight goes twice.
AT_LEAST_ONCE = {"after-send"}

PLAYBOOK: dict[str, Any] = {
    "id": "requeue-stuck",
    "priority": 10,
    "match": {"title": r"^Found \d+ stuck tasks", "level": ["error"]},
    "extract": {
        "job_id": {"from": "title", "regex": r"job_id=(?P<job_id>[0-9a-f-]{36})", "type": "uuid"}
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
            "heartbeat_multiplier": 2,
            "requeue_count_column": "requeue_count",
            "max_requeues": 3,
            "scope": {"job_id": "job_id"},
        },
    },
    # The soak remedies 23 issues within the hour: lift the default runs-per-hour cap (4).
    "guards": {"mode": "auto", "max_rows": 50, "max_runs_per_hour": 100},
    "resolve": {"quiet_hours": 1, "in_commit": False},
}


def _create_db(admin: str, template: str | None = None) -> str:
    name = f"bot_fp_{uuid.uuid4().hex[:12]}"
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(stmt)
    return name


def _drop_db(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


def _dsn(admin: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


@pytest.fixture(scope="module")
def templates(pg_admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A migrated store and a loaded target, built once and cloned per test."""
    store_name = _create_db(pg_admin_dsn)
    target_name = _create_db(pg_admin_dsn)
    try:
        store = Store(sqlalchemy_url(_dsn(pg_admin_dsn, store_name)))
        store.upgrade()
        store.dispose()
        with psycopg.connect(_dsn(pg_admin_dsn, target_name), autocommit=True) as db:
            db.execute(TARGETS_SQL.read_text())
            db.execute("DELETE FROM tasks")
        yield store_name, target_name
    finally:
        _drop_db(pg_admin_dsn, store_name)
        _drop_db(pg_admin_dsn, target_name)


class Bed:
    """One test's store, target, fakes and the command that runs a cycle."""

    def __init__(self, admin: str, store_db: str, target_db: str, tmp: Path) -> None:
        self.admin, self.store_db, self.target_db, self.tmp = admin, store_db, target_db, tmp
        self.store_dsn = _dsn(admin, store_db)
        self.target_dsn = _dsn(admin, target_db)
        self.sentry = FakeSentry(clock=SystemClock(), token=TOKEN, org="acme")
        self.hook = RecordingWebhook()
        self.jobs: list[str] = []

    def seed(self) -> None:
        now = SystemClock().now()
        with psycopg.connect(self.target_dsn, autocommit=True) as db:
            db.execute("UPDATE workers SET last_heartbeat = now() WHERE id = 'worker-a'")
            for n in range(ISSUES):
                job = str(uuid.uuid4())
                self.jobs.append(job)
                for _ in range(ROWS):
                    db.execute(
                        "INSERT INTO tasks (job_id, status, worker_id, requeue_count) "
                        "VALUES (%s, 'running', 'worker-3f7e21', 0)",
                        (job,),
                    )
                # A healthy task of the same job, on a live worker: never touched.
                db.execute(
                    "INSERT INTO tasks (job_id, status, worker_id, requeue_count) "
                    "VALUES (%s, 'running', 'worker-a', 0)",
                    (job,),
                )
                issue = self.sentry.add_issue(
                    title=f"Found {ROWS} stuck tasks across 1 jobs (job_id={job})",
                    level="error",
                    count="0",
                    firstSeen=now - timedelta(hours=3),
                    lastSeen=now - timedelta(hours=2, minutes=n),
                )
                for minutes in (10, 5, 0):
                    self.sentry.add_event(
                        str(issue["id"]), at=now - timedelta(hours=2, minutes=n + minutes)
                    )
        pb_dir = self.tmp / "playbooks"
        pb_dir.mkdir()
        (pb_dir / "requeue.yaml").write_text(yaml.safe_dump(PLAYBOOK))

    def cycle(self, base_url: str, hook_url: str, failpoint: str | None = None) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "bot", "cycle", "--json"],
            env=self.env(base_url, hook_url, failpoint),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def popen(self, base_url: str, hook_url: str) -> subprocess.Popen[bytes]:
        """A cycle in the background (the kill -9 soak kills it)."""
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "cycle", "--json"],
            env=self.env(base_url, hook_url, None),
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def env(self, base_url: str, hook_url: str, failpoint: str | None) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))}
        env = {
            **clean,
            "PYTHONPATH": str(ROOT),
            "SENTRY_BASE_URL": base_url,
            "SENTRY_AUTH_TOKEN": TOKEN,
            "SENTRY_ORG": "acme",
            "SLACK_WEBHOOK_URL": hook_url,
            "BOT_DATABASE_URL": sqlalchemy_url(self.store_dsn),
            "BOT_TARGET_JOBS_DB_URL": self.target_dsn,
            "BOT_PLAYBOOKS_DIR": str(self.tmp / "playbooks"),
            "BOT_REPORTS_DIR": str(self.tmp / "reports"),
        }
        if failpoint:
            env["BOT_FAILPOINT"] = failpoint
        return env

    def later(self) -> None:
        """The restart comes an hour later: age every lease/staleness timestamp."""
        with psycopg.connect(self.store_dsn, autocommit=True) as db:
            db.execute(
                "UPDATE remediation_run SET created_at = created_at - interval '1 hour', "
                "approved_at = approved_at - interval '1 hour', "
                "started_at = started_at - interval '1 hour', "
                "finished_at = finished_at - interval '1 hour'"
            )
            db.execute("UPDATE outbox SET next_attempt_at = next_attempt_at - interval '1 hour'")

    def query(self, dsn: str, text: str) -> list[dict[str, Any]]:
        with psycopg.connect(dsn, row_factory=dict_row) as db:
            return db.execute(text).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def bed(pg_admin_dsn: str, templates: tuple[str, str], tmp_path: Path) -> Iterator[Bed]:
    store_db = _create_db(pg_admin_dsn, templates[0])
    target_db = _create_db(pg_admin_dsn, templates[1])
    try:
        b = Bed(pg_admin_dsn, store_db, target_db, tmp_path)
        b.seed()
        yield b
    finally:
        _drop_db(pg_admin_dsn, store_db)
        _drop_db(pg_admin_dsn, target_db)


# Two cycle subprocesses per case (a few seconds each on a quiet machine); the timeout
# only guards a hang on a heavily shared one.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "failpoint", [None, *(f for f in FAILPOINTS if not f.startswith("flag-revert"))]
)
def test_a_crash_at_any_failpoint_is_remedied_exactly_once_after_a_restart(
    bed: Bed, failpoint: str | None
) -> None:
    with bed.sentry.serve() as base_url, bed.hook.serve() as hook_url:
        first = bed.cycle(base_url, hook_url, failpoint)
        if failpoint is None:
            assert first.returncode == 0, first.stderr[-3000:]
        else:
            assert first.returncode == exit_code(failpoint), (
                f"failpoint {failpoint} not on the path: exit {first.returncode}\n"
                + first.stderr[-3000:]
            )
        # One plain restart finishes everything (recovery sweep, outbox, lifecycle).
        bed.later()
        again = bed.cycle(base_url, hook_url)
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["errors"] == []
        outputs = [first, again]

    # Every stuck row requeued exactly once; the healthy ones untouched.
    tasks = bed.query(
        bed.target_dsn, "SELECT job_id::text AS job, worker_id, status, requeue_count FROM tasks"
    )
    stuck = [t for t in tasks if t["worker_id"] == "worker-3f7e21"]
    healthy = [t for t in tasks if t["worker_id"] == "worker-a"]
    assert len(stuck) == ISSUES * ROWS and len(healthy) == ISSUES
    assert {(t["status"], t["requeue_count"]) for t in stuck} == {("pending", 1)}, stuck
    assert {(t["status"], t["requeue_count"]) for t in healthy} == {("running", 0)}

    # Every issue in a steady state (resolved after its quiet hour), none stranded.
    states = bed.query(bed.store_dsn, "SELECT short_id, state FROM tracked_issue")
    assert len(states) == ISSUES
    assert {s["state"] for s in states} == {"resolved"}, states
    assert all(i.data["status"] == "resolved" for i in bed.sentry.issues.values())

    # One run per issue, executed and verified; nothing left mid-way.
    runs = bed.query(bed.store_dsn, "SELECT issue_id, status, verify FROM remediation_run")
    assert len(runs) == ISSUES and len({r["issue_id"] for r in runs}) == ISSUES
    assert {r["status"] for r in runs} <= {"succeeded", "interrupted"}, runs
    assert all(r["verify"].get("ok") is True for r in runs), runs

    # Announced exactly once each (at least once only in the documented window).
    headings = Counter(str(p.get("text", "")).split("\n")[0] for p in bed.hook.delivered)
    remediated = sum(n for h, n in headings.items() if h.startswith(REMEDIATED))
    resolved = sum(n for h, n in headings.items() if h.startswith(RESOLVED))
    texts = [str(p.get("text", "")) for p in bed.hook.delivered]
    if failpoint in AT_LEAST_ONCE:
        assert ISSUES <= remediated + resolved <= 2 * ISSUES + 1, texts
        assert remediated + resolved == 2 * ISSUES + 1  # exactly the one in flight, twice
    else:
        assert remediated == ISSUES, texts
        assert resolved == ISSUES, texts
    outbox = bed.query(bed.store_dsn, "SELECT channel, status FROM outbox")
    assert {o["status"] for o in outbox} == {"sent"}, outbox
    for proc in outputs:
        assert TOKEN not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

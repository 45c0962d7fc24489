"""A burst: 1,000 new matching issues in one cycle, auto mode, one row each.

Setup: a real PostgreSQL target (a fresh database on 127.0.0.1:5432) with a ``tasks``
table of 1,000 rows stuck ``running`` under a worker whose heartbeat is an hour old,
each with its own ``job_id``; FakeSentry (behind ``httpx.MockTransport`` and the real
``HttpSentryClient``) with 1,000 new issues "Task stuck: job_id=<uuid>", one per row;
the bot's store is a fresh SQLite file (``--store postgres`` for a PostgreSQL store).

The playbook (written to a temporary directory) is a ``requeue_stuck_tasks`` scoped to
the issue's ``job_id`` (taken from the title), ``mode: auto``, with its guard caps
raised as an operator would for a known incident storm: ``max_runs_per_hour: 5000``
(the default 4 would park 996 of them, on purpose) and the hidden-debt and cooldown
guards unchanged (each issue runs once). ``max_rows: 5``.

Measured in the same run, several repetitions, the target reset between them:

(a) the bot: ``poll_step`` (poll 10 pages, track, triage, group, match, plan, preview,
    journal, execute, verify, notify) for the 1,000 issues. The 1,000 matches of one
    auto playbook storm together (``bot/pipeline/storm.py``): every run still has its
    own journal row, preview (its exact statement, run and rolled back), claim, verify
    and notifications, but the previews share one target transaction, the executions
    another (one ``UPDATE`` per run, as by hand) and the verifications a third;
(b) by hand, the best direct way to do the same 1,000 remediations: one psycopg
    connection, for each job the same compare-and-set UPDATE (running → pending,
    requeue counter + 1, ``updated_at = now()``, only when the owner's heartbeat is
    stale), each in its own transaction, as 1,000 separate remediations would be.

Run: ``.venv/bin/python bench/burst.py [--reps 3] [--store sqlite|postgres]``. The last
lines are ``burst_bot_s``, ``burst_hand_s``, ``burst_ratio`` (median of the pairwise
ratios) and ``burst_parked`` (issues of the burst that did not end remediated).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlmodel import col, func, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.commands import settle_heap
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import poll_step
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import RemediationRun, TrackedIssue
from bot.testing import FakeSentry

BURST = 1_000
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

PLAYBOOK = """\
id: burst-requeue
description: A task left running by a dead worker goes back to pending.
priority: 100
match:
  title: "^Task stuck: job_id="
extract:
  job_id:
    from: title
    regex: "job_id=(?P<job_id>[0-9a-f-]{36})"
    type: uuid
action:
  type: requeue_stuck_tasks
  target: jobs_db
  settings:
    table: tasks
    status_column: status
    running_values: [running]
    pending_value: pending
    failed_value: failed
    mode: owner_heartbeat
    worker_table: workers
    worker_id_column: worker_id
    worker_key_column: id
    worker_heartbeat_column: last_heartbeat
    lease_seconds: 300
    heartbeat_multiplier: 2
    requeue_count_column: requeue_count
    max_requeues: 3
    reason_column: failure_reason
    scope: {job_id: job_id}
    set_now_columns: [updated_at]
guards:
  mode: auto
  max_rows: 5
  cooldown_minutes: 30
  # Raised for the storm (default 4): the operator expects ~1,000 runs this hour.
  max_runs_per_hour: 5000
"""

SCHEMA = """
DROP TABLE IF EXISTS tasks, workers;
CREATE TABLE workers (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    status text NOT NULL,
    worker_id text REFERENCES workers (id),
    requeue_count integer NOT NULL DEFAULT 0,
    failure_reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON tasks (job_id);
INSERT INTO workers VALUES ('w-dead', now() - interval '1 hour'), ('w-live', now());
"""

# The hand loop's statement: the same compare-and-set the action performs.
HAND_UPDATE = """
UPDATE tasks AS t SET status = 'pending', requeue_count = t.requeue_count + 1,
       updated_at = now()
WHERE t.job_id = %(job)s AND t.status = 'running' AND t.requeue_count < 3
  AND EXISTS (SELECT 1 FROM workers w WHERE w.id = t.worker_id
              AND w.last_heartbeat < now() - make_interval(secs => 600))
"""


def _database(name: str, *, drop: bool) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def reset_target(dsn: str, jobs: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tasks (job_id, status, worker_id) VALUES (%s, 'running', 'w-dead')",
                [(j,) for j in jobs],
            )
        conn.execute("VACUUM ANALYZE tasks")


def still_running(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'running'").fetchone()
        return int(row[0]) if row else -1


def hand_loop(dsn: str, jobs: list[str]) -> float:
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        changed = 0
        for job in jobs:
            with conn.transaction():
                changed += conn.execute(HAND_UPDATE, {"job": job}).rowcount
    took = time.perf_counter() - start
    assert changed == len(jobs), changed
    return took


def bot_burst(dsn: str, jobs: list[str], store_url: str, playbooks: Path) -> tuple[float, int]:
    clock = FakeClock(NOW)
    fake = FakeSentry(clock=clock, rate_limit=10**9)
    for n, job in enumerate(jobs):
        fake.add_issue(
            project="worker", title=f"Task stuck: job_id={job}", lastSeen=NOW - timedelta(seconds=n)
        )
    store = Store(store_url)
    store.upgrade()
    settings = Settings.model_validate(
        {
            "SENTRY_AUTH_TOKEN": "bench-token",
            "SENTRY_ORG": "acme",
            "BOT_DATABASE_URL": store_url,
            "BOT_PLAYBOOKS_DIR": str(playbooks),
            "BOT_REPORTS_DIR": None,
            "targets": {"jobs_db": dsn},
        }
    )
    app = App(settings=settings, store=store, clock=clock)
    app._sentry = HttpSentryClient(
        org="acme", token="bench-token", clock=clock, transport=httpx.MockTransport(fake.handler)
    )
    settle_heap()  # as every long-running command does once its start-up is over
    start = time.perf_counter()
    report = poll_step(build_cycle(app))
    took = time.perf_counter() - start
    with store.session() as session:
        remedied = session.exec(
            select(func.count(col(RemediationRun.issue_id).distinct())).where(
                RemediationRun.status == "succeeded"
            )
        ).one()
        tracked = session.exec(select(func.count()).select_from(TrackedIssue)).one()
    assert tracked == len(jobs), (tracked, report.errors[:3])
    app.close()
    return took, len(jobs) - int(remedied)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--size", type=int, default=BURST)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    jobs = [str(uuid.UUID(int=n + 1)) for n in range(args.size)]
    name = f"bench_burst_{os.getpid()}"
    dsn = _database(name, drop=False)
    bots, hands, ratios, parked = [], [], [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            playbooks = Path(tmp) / "playbooks"
            playbooks.mkdir()
            (playbooks / "burst.yaml").write_text(PLAYBOOK)
            for rep in range(args.reps):
                reset_target(dsn, jobs)
                hand = hand_loop(dsn, jobs)
                reset_target(dsn, jobs)
                if args.store == "sqlite":
                    store_url = f"sqlite:///{tmp}/state{rep}.db"
                else:
                    store_url = _database(f"{name}_store{rep}", drop=False)
                try:
                    took, left = bot_burst(dsn, jobs, store_url, playbooks)
                finally:
                    if args.store == "postgres":
                        _database(f"{name}_store{rep}", drop=True)
                rows_left = still_running(dsn)
                bots.append(took)
                hands.append(hand)
                ratios.append(took / hand)
                parked.append(left)
                print(
                    f"rep {rep + 1}: bot {took:.2f} s, hand loop {hand:.3f} s, ratio "
                    f"{took / hand:.2f}, parked {left}, rows still running {rows_left}",
                    flush=True,
                )
    finally:
        _database(name, drop=True)
    print(f"burst_bot_s: {statistics.median(bots):.3f}")
    print(f"burst_hand_s: {statistics.median(hands):.3f}")
    print(f"burst_ratio: {statistics.median(ratios):.2f}")
    print(f"burst_parked: {max(parked)}")


if __name__ == "__main__":
    main()

"""``retention_cleanup`` on a real PostgreSQL (seed 003 RB-04: ``job_events`` retention).

The batch bound is measured by the database itself, not by the action's own account: a
statement-level ``AFTER DELETE`` trigger with a transition table records, per
transaction (``txid_current()``), how many rows were deleted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from bot.actions.base import Limits
from bot.actions.retention import ACTION, RetentionSettings
from bot.adapters.targets.postgres import PgTarget
from bot.clock import FakeClock
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.models import RemediationRun
from tests.helpers_engine import World, build_playbook, get_issue, track_issue

pytestmark = pytest.mark.postgres

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
SHIPPED = PLAYBOOKS / "torrentflow-job-events-retention.yaml"

EVENTS_SCHEMA = """
CREATE TABLE job_events (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_created_at ON job_events (created_at);
CREATE TABLE delete_audit (txid bigint NOT NULL, n bigint NOT NULL);
CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO delete_audit SELECT txid_current(), count(*) FROM old_rows;
  RETURN NULL;
END $$;
CREATE TRIGGER job_events_audit AFTER DELETE ON job_events
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_delete();
"""


def make_events(dsn: str, *, old: int, new: int) -> None:
    """``old`` rows 91-400 days old then ``new`` rows 0-89 days old; within each group
    the timestamps are scattered, so timestamp order is not id order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(EVENTS_SCHEMA)
        conn.execute(
            "INSERT INTO job_events (job_id, kind, created_at)"
            " SELECT mod(g, 997), 'progress',"
            "  CASE WHEN g <= %(old)s"
            "   THEN now() - interval '91 days' - mod(g::bigint * 7919, 309) * interval '1 day'"
            "   ELSE now() - mod(g::bigint * 7919, 89) * interval '1 day' - interval '1 minute' END"
            " FROM generate_series(1, %(total)s) AS g",
            {"old": old, "total": old + new},
        )
        conn.execute("ANALYZE job_events")


def counts(dsn: str) -> tuple[int, int, int]:
    """(old rows, newer rows, sum of newer ids) with the 90-day cutoff as of now."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE created_at < now() - interval '90 days'),"
            " count(*) FILTER (WHERE created_at >= now() - interval '90 days'),"
            " coalesce(sum(id) FILTER (WHERE created_at >= now() - interval '90 days'), 0)"
            " FROM job_events"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def audit(dsn: str) -> list[int]:
    """Rows deleted per transaction, as the database counted them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT sum(n) FROM delete_audit GROUP BY txid ORDER BY min(txid)"
        ).fetchall()
    return [int(r[0]) for r in rows]


def playbook(**settings: Any) -> Playbook:
    data = yaml.safe_load(SHIPPED.read_text())
    data["action"]["target"] = "jobs_db"
    data["action"]["settings"].update({"min_table_rows": None, **settings.pop("action", {})})
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0, **settings}
    return build_playbook(data)


def run_of(world: World, run_id: str | None) -> RemediationRun:
    with world.store.session() as session:
        run = session.get(RemediationRun, run_id or "")
    assert run is not None
    return run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exactly_the_old_rows_go_in_bounded_batches_beside_a_live_writer(world: World) -> None:
    """The 2,000,000-row case of the issue at a tenth of the size (bench/retention.py runs
    the full size with the same checks): 60 batches either way."""
    make_events(world.target_dsn, old=60_000, new=140_000)
    old_before, newer_before, newer_ids_before = counts(world.target_dsn)
    assert (old_before, newer_before) == (60_000, 140_000)
    pb = playbook(max_rows=100_000, action={"batch_size": 1_000, "pause_ms": 50})
    issue_id = track_issue(world.store, world.clock, short_id="TF-RB04")

    # A live writer appends events for the whole run, one short transaction each.
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def writer() -> None:
        with psycopg.connect(world.target_dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '2s'")
            while not stop.is_set():
                try:
                    row = conn.execute(
                        "INSERT INTO job_events (job_id, kind) VALUES (1, 'live') RETURNING id"
                    ).fetchone()
                    assert row is not None
                    written.append(int(row[0]))
                except psycopg.Error as exc:  # a writer blocked past 2 s would land here
                    failures.append(exc)
                stop.wait(0.005)  # an app's steady trickle, not a busy loop hogging the GIL

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))
    finally:
        stop.set()
        thread.join(timeout=30)

    assert out.status == "succeeded", out
    assert out.rows_affected == 60_000
    old_after, newer_after, newer_ids_after = counts(world.target_dsn)
    assert old_after == 0
    # Every newer row is still there (same count, same ids) plus what the writer added.
    assert newer_after == newer_before + len(written)
    assert newer_ids_after == newer_ids_before + sum(written)
    per_txn = audit(world.target_dsn)
    assert max(per_txn) <= 1_000  # no transaction over batch_size, as the database saw it
    assert sum(per_txn) == 60_000 and len(per_txn) == 60
    assert failures == [] and written, "the writer was never blocked past its lock timeout"
    run = run_of(world, out.run_id)
    assert run.verify["ok"] is True
    assert run.before_image["details"]["batches"] == [1_000] * 60


def test_archive_first_then_delete_in_the_same_transaction(world: World) -> None:
    make_events(world.target_dsn, old=400, new=600)
    with psycopg.connect(world.target_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE job_events_archive (LIKE job_events)")
        old_ids = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM job_events WHERE created_at < now() - interval '90 days'"
            )
        }
    pb = playbook(action={"batch_size": 64, "archive_table": "job_events_archive"})
    issue_id = track_issue(world.store, world.clock, short_id="TF-RB04")

    out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))

    assert out.status == "succeeded" and out.rows_affected == 400
    with psycopg.connect(world.target_dsn) as conn:
        archived = {r[0] for r in conn.execute("SELECT id FROM job_events_archive")}
        left = conn.execute("SELECT count(*) FROM job_events").fetchone()
    assert archived == old_ids and left == (600,)
    assert max(audit(world.target_dsn)) <= 64
    # 7 batches, then one sweep from the start for rows a writer held (none here); a
    # pause before each transaction after the first, none after the last.
    assert world.clock.sleeps == [0.2] * 7


def test_max_rows_caps_a_run_and_the_preview_counts_exactly(world: World) -> None:
    make_events(world.target_dsn, old=400, new=100)
    target = PgTarget(world.target_dsn)
    s = RetentionSettings(
        table="job_events", timestamp_column="created_at", older_than_days=90, batch_size=100
    )
    limits = Limits(max_rows=250, statement_timeout_ms=10_000, lock_timeout_ms=1_000)
    with target.transaction(10_000, 1_000, read_only=True) as conn:
        preview = ACTION.preview(conn, s, {}, limits)
    assert preview.count == 250
    assert "would delete 250 of 400 job_events rows" in preview.summary
    assert "150 more remain for later runs" in preview.summary

    outcome = ACTION.execute_batches(target, s, {}, limits, FakeClock())

    assert outcome.rows_affected == 250
    assert outcome.details["batches"] == [100, 100, 50]
    assert counts(world.target_dsn)[0] == 150
    with target.transaction(10_000, 1_000, read_only=True) as conn:
        verdict = ACTION.verify(conn, s, {}, outcome)
    assert verdict.ok and "150 left for later runs" in verdict.summary


def test_a_lock_timeout_stops_the_run_and_fails_verification(world: World) -> None:
    make_events(world.target_dsn, old=50, new=50)
    pb = playbook(lock_timeout_ms=200)
    issue_id = track_issue(world.store, world.clock, short_id="TF-RB04")
    with psycopg.connect(world.target_dsn) as blocker:
        # SHARE mode lets the bot read and lock candidates but not delete them.
        blocker.execute("LOCK TABLE job_events IN SHARE MODE")
        out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))
        blocker.rollback()

    assert out.status == "verify_failed"
    assert "stopped early (lock timeout after 0 batch(es)" in (out.verify or "")
    assert counts(world.target_dsn)[0] == 50
    assert get_issue(world.store, issue_id).state == "escalated"


def test_shadow_preview_changes_nothing(world: World, clock: FakeClock) -> None:
    make_events(world.target_dsn, old=30, new=70)
    data = yaml.safe_load(SHIPPED.read_text())
    data["action"]["target"] = "jobs_db"
    data["action"]["settings"]["min_table_rows"] = 50
    pb = build_playbook(data)
    assert pb.guards.mode == "shadow"  # shipped in shadow mode
    issue_id = track_issue(world.store, clock, short_id="TF-RB04")

    out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))

    assert out.status == "shadow"
    assert out.preview is not None and out.preview.count == 30
    assert counts(world.target_dsn)[0] == 30
    assert audit(world.target_dsn) == []


def test_a_table_under_the_runbook_threshold_is_left_alone(world: World) -> None:
    """RB-04 cleans only past 1M rows: the shipped threshold, on a small table."""
    make_events(world.target_dsn, old=30, new=70)
    data = yaml.safe_load(SHIPPED.read_text())
    data["action"]["target"] = "jobs_db"
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0}
    pb = build_playbook(data)
    issue_id = track_issue(world.store, world.clock, short_id="TF-RB04")

    out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))

    assert out.status == "noop" and out.rows_affected == 0
    assert "job_events has 100 rows, not over 1000000" in (out.verify or "")
    assert counts(world.target_dsn)[0] == 30

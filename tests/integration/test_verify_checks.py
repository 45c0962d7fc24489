"""``verify.checks`` on a real PostgreSQL: seed 001's post-deploy checks shipped in the
advisory-lock playbook, run by the real executor after a real release.

Seed 001 (PR #10, "Test plan"): "pg_locks shows no stuck advisory lock on 20260417,
20260402, 20260415, 314159" and "compliance_hash_state = 'pending' count drains on the 30s
cadence". The lock is a real session lock taken on pooled connection A and "unlocked" on
connection B (the seed's exact bug); the drain is a real table whose pending rows a
simulated worker processes while the verifier waits (the injected clock's sleep).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from bot.clock import FakeClock
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.models import RemediationRun
from bot.triage.report import collect_report_facts, render_report
from tests.helpers_engine import EventLog, World, build_playbook, get_issue, track_issue

pytestmark = pytest.mark.postgres

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks" / "api-release-integrity-hash-lock.yaml"
KEY = 20260417
OTHER_ALLOWED_KEY = 20260402
Connect = Callable[[], psycopg.Connection[Any]]


class DrainingClock(FakeClock):
    """A FakeClock whose ``sleep`` lets the (now unstuck) hash worker process one batch,
    as the real worker does on its 30 s cadence while the verifier waits."""

    def __init__(self, dsn: str, batch: int) -> None:
        super().__init__()
        self._dsn, self._batch = dsn, batch

    def sleep(self, seconds: float) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE compliance_hash_state SET status = 'complete' WHERE id IN"
                " (SELECT id FROM compliance_hash_state WHERE status = 'pending'"
                "  ORDER BY id LIMIT %s)",
                (self._batch,),
            )
        super().sleep(seconds)


@pytest.fixture
def connect(pg_dsn: str, victim_role: str) -> Iterator[Connect]:
    opened: list[psycopg.Connection[Any]] = []

    def _connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            psycopg.conninfo.make_conninfo(pg_dsn, user=victim_role), autocommit=True
        )
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def shipped_checks() -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = yaml.safe_load(SHIPPED.read_text())["verify"]["checks"]
    return checks


def shipped_playbook(checks: list[dict[str, Any]] | None = None) -> Playbook:
    """The shipped seed 001 playbook, switched to auto for the test, idle threshold 0;
    ``checks`` replace its shipped ones when given."""
    data = yaml.safe_load(SHIPPED.read_text())
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0}
    data["action"]["settings"]["min_idle_seconds"] = 0
    data["action"]["target"] = "jobs_db"
    if checks is not None:
        data["verify"]["checks"] = checks
    return build_playbook(data)


def make_hash_state(dsn: str, pending: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE compliance_hash_state (id bigserial PRIMARY KEY, status text NOT NULL)"
        )
        conn.execute(
            "INSERT INTO compliance_hash_state (status)"
            " SELECT CASE WHEN g <= %s THEN 'pending' ELSE 'complete' END"
            " FROM generate_series(1, %s) AS g",
            (pending, pending + 5),
        )


def strand_lock(connect: Connect, key: int) -> psycopg.Connection[Any]:
    """Seed 001's bug: lock on pooled connection A, unlock on B (a no-op); A left idle."""
    a, b = connect(), connect()
    assert a.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
    assert b.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone() == (False,)
    return a


def world_with(world: World, clock: FakeClock) -> World:
    return World(world.store, world.target_dsn, clock, EventLog())


def run_of(world: World, run_id: str) -> RemediationRun:
    with world.store.session() as session:
        run = session.get(RemediationRun, run_id)
    assert run is not None
    return run


def test_seed_001_checks_pass_after_a_real_release(world: World, connect: Connect) -> None:
    make_hash_state(world.target_dsn, pending=3)
    strand_lock(connect, KEY)
    w = world_with(world, DrainingClock(world.target_dsn, batch=1))
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    pb = shipped_playbook()

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "succeeded", out
    run = run_of(w, out.run_id or "")
    assert run.verify["ok"] is True
    checks = {c["name"]: c for c in run.verify["details"]["checks"]}
    assert checks["no-stuck-advisory-locks"]["ok"] is True
    assert [s["value"] for s in checks["no-stuck-advisory-locks"]["samples"]] == [0]
    drain = checks["compliance-hash-pending-drains"]
    # Two samples 30 s apart (the seed's cadence), the second strictly lower.
    assert [s["value"] for s in drain["samples"]] == [3, 2]
    assert drain["expectation"] == "decreases over 30s"
    assert get_issue(w.store, issue_id).state == "watching"
    assert "2 checks ok" in (out.verify or "")
    assert w.events.kinds() == ["remediated"]


def test_a_second_idle_holder_fails_the_checks_and_escalates_with_observed_values(
    world: World, connect: Connect
) -> None:
    make_hash_state(world.target_dsn, pending=3)
    strand_lock(connect, KEY)
    # Another allowlisted job's lock, stranded the same way; the event names only KEY,
    # so the action releases KEY's holder and the post-deploy check still sees this one.
    second = strand_lock(connect, OTHER_ALLOWED_KEY)
    w = world_with(world, DrainingClock(world.target_dsn, batch=1))
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    pb = shipped_playbook()

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "verify_failed", out
    run = run_of(w, out.run_id or "")
    assert run.rows_affected == 1  # KEY's holder was terminated...
    checks = {c["name"]: c for c in run.verify["details"]["checks"]}
    # ...but the second idle holder keeps an allowlisted lock: observed 1, expected 0.
    assert checks["no-stuck-advisory-locks"]["ok"] is False
    assert [s["value"] for s in checks["no-stuck-advisory-locks"]["samples"]] == [1]
    assert checks["compliance-hash-pending-drains"]["ok"] is True
    assert "check no-stuck-advisory-locks FAILED: expected equals 0, observed 1" in (
        out.verify or ""
    )
    assert get_issue(w.store, issue_id).state == "escalated"
    kind, _, _, extra = w.events.events[-1]
    assert kind == "failed" and "observed 1" in extra["verify"]
    with w.store.session() as session:
        report = render_report(collect_report_facts(session, "API-1F"))
    assert "Check no-stuck-advisory-locks (run" in report
    assert "FAILED, expected equals 0; samples: 1 at" in report
    assert "expected decreases over 30s; samples: 3 at 00:00:00, 2 at 00:00:30" in report
    assert second.execute("SELECT 1").fetchone() == (1,)  # never touched: not the event's key


def test_a_pending_count_that_does_not_drain_fails(world: World, connect: Connect) -> None:
    make_hash_state(world.target_dsn, pending=3)
    strand_lock(connect, KEY)
    w = world_with(world, DrainingClock(world.target_dsn, batch=0))  # the worker is still stuck
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    pb = shipped_playbook()

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "verify_failed"
    checks = {c["name"]: c for c in run_of(w, out.run_id or "").verify["details"]["checks"]}
    assert [s["value"] for s in checks["compliance-hash-pending-drains"]["samples"]] == [3, 3]
    assert w.clock.sleeps == [30]


def test_reaches_samples_until_the_value_or_the_deadline(world: World, connect: Connect) -> None:
    make_hash_state(world.target_dsn, pending=3)
    strand_lock(connect, KEY)
    clock = DrainingClock(world.target_dsn, batch=1)
    w = world_with(world, clock)
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    locks, drain = shipped_checks()
    reaches = {"reaches": 0, "every_seconds": 10, "within_seconds": 60}
    pb = shipped_playbook(
        [locks, {"name": "pending-reaches-zero", "query": drain["query"], **reaches}]
    )

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "succeeded", out
    checks = {c["name"]: c for c in run_of(w, out.run_id or "").verify["details"]["checks"]}
    assert [s["value"] for s in checks["pending-reaches-zero"]["samples"]] == [3, 2, 1, 0]
    assert clock.sleeps == [10, 10, 10]


def test_a_check_cannot_write_and_a_broken_check_fails_with_its_error(
    world: World, connect: Connect
) -> None:
    make_hash_state(world.target_dsn, pending=0)
    strand_lock(connect, KEY)
    w = world_with(world, FakeClock())
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    pb = shipped_playbook(
        [
            {
                # A data-modifying CTE is a valid WITH statement: the READ ONLY transaction
                # is what stops it.
                "name": "sneaky-write",
                "query": "WITH d AS (DELETE FROM compliance_hash_state RETURNING 1)"
                " SELECT count(*) FROM d",
                "equals": 0,
            },
            {"name": "missing-table", "query": "SELECT count(*) FROM no_such_table", "at_most": 0},
        ]
    )

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "verify_failed"
    checks = {c["name"]: c for c in run_of(w, out.run_id or "").verify["details"]["checks"]}
    assert "read-only transaction" in (checks["sneaky-write"]["error"] or "")
    assert "no_such_table" in (checks["missing-table"]["error"] or "")
    with psycopg.connect(world.target_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM compliance_hash_state").fetchone() == (5,)


def test_checks_bind_extracted_parameters(world: World, connect: Connect) -> None:
    """``%(lock_key)s`` is the typed extracted parameter, bound, never formatted in."""
    make_hash_state(world.target_dsn, pending=0)
    strand_lock(connect, KEY)
    w = world_with(world, FakeClock())
    issue_id = track_issue(w.store, w.clock, short_id="API-1F")
    pb = shipped_playbook(
        [
            {
                "name": "this-key-free",
                "query": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND ((classid::bigint << 32) | objid::bigint) = %(lock_key)s",
                "equals": 0,
            }
        ]
    )

    out = w.executor(pb).plan(issue_id, MatchResult(pb, {"lock_key": KEY}))

    assert out.status == "succeeded", out

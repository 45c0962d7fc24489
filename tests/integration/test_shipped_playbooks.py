"""The shipped playbooks remedy exactly the seed incidents, on examples/targets.sql.

Each seed issue of the bundled replay is matched by the real matcher against the real
``playbooks/`` directory, its typed parameters are extracted from the real event text,
and the action runs (execute, then verify in a fresh transaction) on a real PostgreSQL
loaded with the demo schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.actions.registry import get_action
from bot.adapters.targets.postgres import PgTarget
from bot.interfaces.app import DEMO_REPLAY
from bot.pipeline.sources import ReplaySource
from bot.playbooks.loader import load_playbooks_strict
from bot.playbooks.matcher import Matcher, MatchResult

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "targets.sql"


@pytest.fixture(scope="module")
def matches() -> dict[str, MatchResult | None]:
    matcher = Matcher(load_playbooks_strict(ROOT / "playbooks"))
    return {i.short_id: matcher.match(i, i.latest_event) for i in ReplaySource(DEMO_REPLAY).issues}


def test_every_seed_incident_has_a_shipped_playbook_in_shadow_mode(
    matches: dict[str, MatchResult | None],
) -> None:
    unmatched = [sid for sid, m in matches.items() if m is None]
    assert unmatched == []
    assert {m.playbook.guards.mode for m in matches.values() if m} == {"shadow"}


def test_typed_parameters_come_from_the_real_event_text(
    matches: dict[str, MatchResult | None],
) -> None:
    replay = {i.short_id: i for i in ReplaySource(DEMO_REPLAY).issues}
    bee42 = matches["BLUE-BANDED-BEE-42"]
    assert bee42 is not None
    assert bee42.params == {"job_id": replay["BLUE-BANDED-BEE-42"].tags["job_id"]}
    lock = matches["API-1F"]
    assert lock is not None and lock.params == {"lock_key": 20260417}


def _run(target: PgTarget, match: MatchResult) -> Any:
    pb = match.playbook
    action = get_action(pb.action.type)
    g = pb.guards
    with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
        outcome = action.execute(conn, pb.action.parsed_settings, dict(match.params), g.limits())
    with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms, read_only=True) as conn:
        verified = action.verify(conn, pb.action.parsed_settings, dict(match.params), outcome)
    assert verified.ok, verified.summary
    return outcome


def test_shipped_playbooks_fix_the_demo_schema(
    pg_dsn: str, matches: dict[str, MatchResult | None]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(SCRIPT.read_text())
        db.execute(SCRIPT.read_text())  # idempotent
        started = db.execute("SELECT id, started_at FROM resource_backups ORDER BY id").fetchall()
        target = PgTarget(pg_dsn)

        def run(short_id: str) -> Any:
            match = matches[short_id]
            assert match is not None
            return _run(target, match)

        # Seed 000 BEE-42: two requeued, the one past the cap dead-lettered; scoped to the job.
        requeued = run("BLUE-BANDED-BEE-42")
        assert (requeued.details["requeued"], requeued.details["dead_lettered"]) == (2, 1)
        # Seed 004 bug 1: the stuck backup is recovered and started_at is left alone.
        assert run("WORKER-2M").rows_affected == 1
        # Seed 004 bug 2: mongo SCRAM and redis WRONGPASS move to auth; "refused" stays.
        reclassified = run("WORKER-2K")
        assert {b["code"] for b in reclassified.before_image} == {"mongo:18", "redis:WRONGPASS"}
        # Seed 003: the offline agent's three jobs are queued again; the live agent's is not.
        assert run("TORRENTFLOW-API-3").rows_affected == 3
        # Seed 000 BEE-3Y: everything of the removed job still active → failed, job_removed.
        assert run("BLUE-BANDED-BEE-3Y").rows_affected == 3
        # Seed 000 BEE-7G backpressure: page discovery throttled, the old limit journaled.
        throttled = run("BLUE-BANDED-BEE-7G")
        assert throttled.before_image == [
            {"key": "page_discovery", "before": "120", "value": "10", "type": "integer"}
        ]

        after = db.execute("SELECT id, started_at FROM resource_backups ORDER BY id").fetchall()
        assert after == started
        tasks = db.execute(
            "SELECT status, failure_reason, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert tasks == [
            ("done", None, 1),
            ("failed", "job_removed", 3),
            ("failed", "max_requeues_exceeded", 1),
            ("running", None, 1),
        ]
        buckets = db.execute(
            "SELECT fail_reason, count(*) FROM resource_backups WHERE status = 'failed' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert buckets == [("auth", 2), ("dump", 1)]
        tf = db.execute(
            "SELECT worker_id, status, count(*) FROM tf_jobs GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert tf == [
            ("torrentflow-agent-5d9c8b7f6-h8k2m", "running", 1),
            ("torrentflow-agent-5d9c8b7f6-q4wz2", "queued", 3),
        ]

"""examples/targets.sql is idempotent and every table action fixes its seed incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.actions.base import Limits
from bot.actions.orphaned import ACTION as ORPHANED
from bot.actions.orphaned import OrphanedSettings
from bot.actions.reclassify import ACTION as RECLASSIFY
from bot.actions.reclassify import ReclassifySettings
from bot.actions.requeue import ACTION as REQUEUE
from bot.actions.requeue import RequeueSettings
from bot.actions.target import PgTarget

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "targets.sql"
LIMITS = Limits(max_rows=10, statement_timeout_ms=5_000, lock_timeout_ms=1_000)


def run(target: PgTarget, action: Any, settings: Any) -> Any:
    with target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn:
        outcome = action.execute(conn, settings, {}, LIMITS)
    with target.transaction(5_000, 1_000, read_only=True) as conn:
        assert action.verify(conn, settings, {}, outcome).ok
    return outcome


def test_demo_schema_incidents_are_all_remediated(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(SCRIPT.read_text())
        db.execute(SCRIPT.read_text())  # idempotent
        started = db.execute("SELECT id, started_at FROM resource_backups ORDER BY id").fetchall()
        target = PgTarget(pg_dsn)

        requeued = run(
            target,
            REQUEUE,
            RequeueSettings(
                table="tasks",
                mode="owner_heartbeat",
                worker_table="workers",
                worker_id_column="worker_id",
                worker_heartbeat_column="last_heartbeat",
                lease_seconds=60,
                requeue_count_column="requeue_count",
                max_requeues=3,
                reason_column="failure_reason",
                set_now_columns=("updated_at",),
            ),
        )
        # The orphaned job's running task sits on a live worker: not requeue's business.
        assert requeued.details == requeued.details | {"requeued": 2, "dead_lettered": 1}

        backups = run(
            target,
            REQUEUE,
            RequeueSettings(
                table="resource_backups",
                mode="lease_timeout",
                lease_column="started_at",
                timeout_seconds=3600,
            ),
        )
        assert backups.rows_affected == 1

        orphaned = run(target, ORPHANED, OrphanedSettings(reason_column="failure_reason"))
        assert orphaned.rows_affected == 2

        reclassified = run(
            target,
            RECLASSIFY,
            ReclassifySettings(
                table="resource_backups",
                text_column="internal_detail",
                bucket_column="fail_reason",
                from_buckets=("dump",),
            ),
        )
        assert {b["code"] for b in reclassified.before_image} == {"mongo:18", "redis:WRONGPASS"}

        assert (
            db.execute("SELECT id, started_at FROM resource_backups ORDER BY id").fetchall()
            == started
        )
        statuses = db.execute(
            "SELECT status, failure_reason, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert statuses == [
            ("done", None, 1),
            ("failed", "job_removed", 2),
            ("failed", "max_requeues_exceeded", 1),
            ("pending", None, 2),
            ("running", None, 1),
        ]

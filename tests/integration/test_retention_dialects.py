"""retention_cleanup (seed 003 RB-04, ``job_events`` on D1) over PostgreSQL, MariaDB and
SQLite: old rows deleted in bounded batches, newer rows untouched, archive before delete,
max_rows stopping a run that the next one continues, verify. The PostgreSQL-only details
(the per-transaction delete audit, keyset plans) stay in test_action_retention.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.actions.base import Limits
from bot.actions.retention import ACTION, RetentionSettings
from bot.clock import FakeClock
from tests.targets import TargetDb

SHIPPED = (
    Path(__file__).resolve().parents[2] / "playbooks" / "torrentflow-job-events-retention.yaml"
)
DAY = 86_400
OLD = [91 + (i * 37) % 300 for i in range(30)]  # days ago, scattered: not id order
NEW = [(i * 13) % 89 for i in range(20)]
SCHEMA = (
    "CREATE TABLE job_events (id {pk}, job_id {int} NOT NULL, kind {text} NOT NULL,"
    " created_at {ts} NOT NULL DEFAULT {now});"
    "CREATE INDEX job_events_created_at ON job_events (created_at);"
    "CREATE TABLE job_events_archive (id {int} PRIMARY KEY, job_id {int} NOT NULL,"
    " kind {text} NOT NULL, created_at {ts} NOT NULL)"
)


@pytest.fixture
def events(target_db: TargetDb) -> TargetDb:
    db = target_db
    db.sql(db.ddl(SCHEMA))
    for n, days in enumerate(OLD + NEW):
        ago = db.ago(days * DAY + 60)
        db.sql(
            f"INSERT INTO job_events (job_id, kind, created_at) VALUES (%(j)s, 'progress', {ago})",  # noqa: S608
            {"j": n},
        )
    return db


def settings(**overrides: Any) -> RetentionSettings:
    shipped = yaml.safe_load(SHIPPED.read_text())["action"]["settings"]
    return RetentionSettings.model_validate(
        shipped | {"min_table_rows": None, "batch_size": 7, "pause_ms": 0} | overrides
    )


def job_ids(db: TargetDb, table: str = "job_events") -> list[int]:
    return sorted(int(r[0]) for r in db.sql(f"SELECT job_id FROM {table}"))  # noqa: S608


def run(db: TargetDb, s: RetentionSettings, max_rows: int = 1_000) -> Any:
    limits = Limits(max_rows=max_rows, statement_timeout_ms=10_000, lock_timeout_ms=1_000)
    return ACTION.execute_batches(db.target, s, {}, limits, FakeClock())


def verify(db: TargetDb, s: RetentionSettings, outcome: Any) -> Any:
    with db.target.transaction(10_000, 1_000, read_only=True) as conn:
        return ACTION.verify(conn, s, {}, outcome)


def test_old_rows_go_in_bounded_batches_and_newer_rows_stay(events: TargetDb) -> None:
    with events.target.transaction(10_000, 1_000, read_only=True) as conn:
        preview = ACTION.preview(conn, settings(), {}, Limits(max_rows=1_000))
    assert preview.rows[0]["would_delete"] == len(OLD)

    outcome = run(events, settings())

    assert outcome.rows_affected == len(OLD)
    assert max(outcome.details["batches"]) <= 7 and sum(outcome.details["batches"]) == len(OLD)
    assert job_ids(events) == list(range(len(OLD), len(OLD) + len(NEW)))
    check = verify(events, settings(), outcome)
    assert check.ok, check.summary
    assert run(events, settings()).rows_affected == 0


def test_archive_then_delete_keeps_every_row(events: TargetDb) -> None:
    s = settings(archive_table="job_events_archive")
    outcome = run(events, s)
    assert outcome.rows_affected == len(OLD)
    assert job_ids(events, "job_events_archive") == list(range(len(OLD)))
    assert job_ids(events) == list(range(len(OLD), len(OLD) + len(NEW)))


def test_max_rows_stops_the_run_and_the_next_run_continues(events: TargetDb) -> None:
    first = run(events, settings(), max_rows=10)
    assert (first.rows_affected, first.details["hit_max_rows"]) == (10, True)
    check = verify(events, settings(), first)
    assert check.ok and "left for later runs" in check.summary
    second = run(events, settings(), max_rows=1_000)
    assert second.rows_affected == len(OLD) - 10
    assert len(job_ids(events)) == len(NEW)


def test_a_small_table_is_left_alone(events: TargetDb) -> None:
    outcome = run(events, settings(min_table_rows=1_000_000))
    assert outcome.rows_affected == 0 and "nothing to do" in outcome.details["skipped"]
    assert len(job_ids(events)) == len(OLD) + len(NEW)

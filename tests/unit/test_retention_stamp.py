"""retention_cleanup on a timestamp column holding something that is not a timestamp.

SQLite stores any type in any column: epoch seconds in ``created_at`` compare below
``datetime('now', ...)`` text, so every such row looks old. The action refuses with a
:class:`RemediationError` naming the table (the batch rolls back, the executor fails the
run, other issues go on), never a bare ``TypeError`` that escapes the cycle (#11).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.actions.base import Limits
from bot.actions.retention import ACTION, RetentionSettings
from bot.adapters.targets.sqlite import SqliteTarget
from bot.clock import FakeClock
from bot.errors import RemediationError


def test_a_numeric_timestamp_is_a_remediation_error_and_nothing_is_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "target.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE job_events (id INTEGER PRIMARY KEY, job_id INT NOT NULL,"
            " kind TEXT NOT NULL, created_at TIMESTAMP NOT NULL)"
        )
        db.execute("INSERT INTO job_events (job_id, kind, created_at) VALUES (1, 'x', 1700000000)")
    target = SqliteTarget(f"sqlite:///{path}", name="d1")
    settings = RetentionSettings(
        table="job_events", timestamp_column="created_at", older_than_days=90, pause_ms=0
    )
    try:
        with pytest.raises(RemediationError, match=r"job_events\.created_at holds int"):
            ACTION.execute_batches(target, settings, {}, Limits(max_rows=10), FakeClock())
    finally:
        target.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM job_events").fetchone() == (1,)

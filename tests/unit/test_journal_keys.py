"""The run journal's pure functions as truth tables: idempotency windows, keys, staleness.

These decide whether a re-planned match is a no-op and whether a ``running`` run may be
recovered; the integration tests reach them only through PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.pipeline.journal import idempotency_key, stale_cutoff, window_start

NOW = datetime(2026, 4, 17, 12, 34, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_seen", "cooldown_minutes", "expected"),
    [
        # No last_seen: the window is anchored on now; at least one hour wide.
        (None, 0, datetime(2026, 4, 17, 12, 0, tzinfo=UTC)),
        (None, 30, datetime(2026, 4, 17, 12, 0, tzinfo=UTC)),
        # Sentry's last_seen anchors the window, not the bot's clock.
        (datetime(2026, 4, 17, 9, 59, 59, tzinfo=UTC), 60, datetime(2026, 4, 17, 9, 0, tzinfo=UTC)),
        (datetime(2026, 4, 17, 10, 0, tzinfo=UTC), 60, datetime(2026, 4, 17, 10, 0, tzinfo=UTC)),
        # A cooldown longer than an hour widens the window to the cooldown.
        (datetime(2026, 4, 17, 13, 0, tzinfo=UTC), 120, datetime(2026, 4, 17, 12, 0, tzinfo=UTC)),
        (datetime(2026, 4, 17, 11, 0, tzinfo=UTC), 120, datetime(2026, 4, 17, 10, 0, tzinfo=UTC)),
        # A naive timestamp (SQLite) is read as UTC.
        (datetime(2026, 4, 17, 10, 30), 60, datetime(2026, 4, 17, 10, 0, tzinfo=UTC)),
    ],
)
def test_window_start(
    last_seen: datetime | None, cooldown_minutes: int, expected: datetime
) -> None:
    assert window_start(last_seen, cooldown_minutes, NOW) == expected


WINDOW = datetime(2026, 4, 17, 12, 0, tzinfo=UTC)
KEY = idempotency_key("stuck-tasks", "42", {"job_id": "j1", "n": 2}, WINDOW)


@pytest.mark.parametrize(
    ("playbook_id", "issue_id", "params", "window", "same"),
    [
        ("stuck-tasks", "42", {"n": 2, "job_id": "j1"}, WINDOW, True),  # order is irrelevant
        ("stuck-tasks", "43", {"job_id": "j1", "n": 2}, WINDOW, False),
        ("other", "42", {"job_id": "j1", "n": 2}, WINDOW, False),
        ("stuck-tasks", "42", {"job_id": "j2", "n": 2}, WINDOW, False),
        ("stuck-tasks", "42", {"job_id": "j1", "n": "2"}, WINDOW, False),  # types count
        ("stuck-tasks", "42", {"job_id": "j1"}, WINDOW, False),
        ("stuck-tasks", "42", {"job_id": "j1", "n": 2}, WINDOW + timedelta(hours=1), False),
    ],
)
def test_idempotency_key(
    playbook_id: str,
    issue_id: str,
    params: dict[str, str | int],
    window: datetime,
    same: bool,
) -> None:
    key = idempotency_key(playbook_id, issue_id, params, window)
    assert (key == KEY) is same
    assert key.startswith(f"{playbook_id}:")


def test_idempotency_key_prefix_is_bounded() -> None:
    key = idempotency_key("p" * 100, "1", {}, WINDOW)
    assert key.split(":")[0] == "p" * 60
    assert len(key) == 60 + 1 + 40


@pytest.mark.parametrize(
    ("statement_timeout_ms", "expected"),
    [
        (0, NOW - timedelta(minutes=5)),
        (5_000, NOW - timedelta(minutes=5, seconds=5)),
        (60_000, NOW - timedelta(minutes=6)),
    ],
)
def test_stale_cutoff(statement_timeout_ms: int, expected: datetime) -> None:
    assert stale_cutoff(NOW, statement_timeout_ms) == expected

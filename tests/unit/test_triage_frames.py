"""Stack frames as category evidence: the standard library raising for our code is a code
bug (BEE-6C's double Commit); a third-party library on top is a dependency signal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.interfaces.app import DEMO_REPLAY
from bot.pipeline.sources import ReplaySource
from bot.sentry.models import SentryIssue
from bot.triage import Category, TriageConfig, triage

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
APP = {
    "function": "(*DbQueue).executeOnce",
    "module": "github.com/acme/crawler/internal/db",
    "filename": "internal/db/queue.go",
    "in_app": True,
}


def issue_with_top_frame(top: dict[str, Any]) -> SentryIssue:
    return SentryIssue.model_validate(
        {
            "id": "1",
            "shortId": "Q-1",
            "title": "*errors.errorString: it failed",
            "level": "error",
            "project": {"id": "1", "slug": "queue-worker"},
            "count": "5",
            "userCount": 0,
            "latestEvent": {
                "eventID": "e",
                "entries": [
                    {
                        "type": "exception",
                        "data": {
                            "values": [
                                {
                                    "type": "*errors.errorString",
                                    "value": "it failed",
                                    "stacktrace": {"frames": [APP, top]},
                                }
                            ]
                        },
                    }
                ],
            },
        }
    )


def test_the_seed_double_commit_is_a_code_bug_raised_by_the_standard_library() -> None:
    bee6c = next(i for i in ReplaySource(DEMO_REPLAY).issues if i.short_id.endswith("-6C"))
    result = triage(bee6c, None, TriageConfig(), NOW)
    assert result.category is Category.CODE_BUG
    assert "stdlib_misused_by_app_code" in {i.name for i in result.indicators}


@pytest.mark.parametrize(
    ("top", "indicator"),
    [
        (
            {
                "function": "(*Tx).Commit",
                "module": "database/sql",
                "filename": "/usr/local/go/src/database/sql/sql.go",
                "in_app": False,
            },
            "stdlib_misused_by_app_code",
        ),
        (
            {
                "function": "send",
                "module": "http.client",
                "abs_path": "/usr/lib/python3.11/http/client.py",
                "in_app": False,
            },
            "stdlib_misused_by_app_code",
        ),
        (
            {
                "function": "(*conn).Exec",
                "module": "github.com/lib/pq",
                "filename": "/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go",
                "in_app": False,
            },
            "top_frame_in_library",
        ),
        (
            {
                "function": "post",
                "module": "requests.api",
                "abs_path": "/app/.venv/lib/python3.11/site-packages/requests/api.py",
                "in_app": False,
            },
            "top_frame_in_library",
        ),
    ],
)
def test_frame_indicator_truth_table(top: dict[str, Any], indicator: str) -> None:
    result = triage(issue_with_top_frame(top), None, TriageConfig(), NOW)
    assert indicator in {i.name for i in result.indicators}

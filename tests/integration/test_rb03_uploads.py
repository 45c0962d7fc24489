"""Seed 003 RB-03 (jobs stuck in ``uploading`` after an R2 credential rotation): the shipped
playbook on the demo schema (examples/targets.sql) on a real PostgreSQL, through the real
executor in auto mode, as it would run once the on-call approved it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from bot.playbooks.matcher import Matcher, MatchResult
from bot.sentry.models import SentryIssue
from tests.helpers_engine import World, build_playbook, get_issue, issue_json, track_issue

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "playbooks" / "torrentflow-retry-stuck-uploads.yaml"


def test_stuck_uploads_are_resubmitted_and_past_the_cap_failed(world: World) -> None:
    with psycopg.connect(world.target_dsn, autocommit=True) as db:
        db.execute((ROOT / "examples" / "targets.sql").read_text())
        db.execute("DELETE FROM tf_jobs")
        db.execute(
            "INSERT INTO tf_jobs (id, status, worker_id, requeue_count, updated_at) VALUES"
            " (1, 'uploading', 'agent-a', 0, now() - interval '40 minutes'),"  # stuck
            " (2, 'uploading', 'agent-a', 0, now() - interval '5 minutes'),"  # still retrying
            " (3, 'uploading', 'agent-b', 3, now() - interval '2 hours'),"  # past the cap
            " (4, 'running', 'agent-b', 0, now() - interval '2 hours')"  # not an upload
        )
    data = yaml.safe_load(SHIPPED.read_text())
    assert data["guards"]["mode"] == "shadow"
    data["action"]["target"] = "jobs_db"
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0}
    pb = build_playbook(data)
    issue = SentryIssue.model_validate(
        issue_json(title="R2 upload error: 403 SignatureDoesNotMatch on PutObject")
        | {"tags": {"environment": "production"}}
    )
    assert Matcher([pb]).match(issue, None) is not None
    issue_id = track_issue(world.store, world.clock, title=issue.title)

    out = world.executor(pb).plan(issue_id, MatchResult(pb, {}))

    assert out.status == "succeeded", out
    with psycopg.connect(world.target_dsn) as db:
        rows = db.execute(
            "SELECT id, status, requeue_count, error FROM tf_jobs ORDER BY id"
        ).fetchall()
    assert rows == [
        (1, "queued", 1, "re-submitted after R2 upload failures (RB-03)"),
        (2, "uploading", 0, None),
        (3, "failed", 3, "R2 upload failed after 3 re-submissions (RB-03)"),
        (4, "running", 0, None),
    ]
    assert get_issue(world.store, issue_id).state == "watching"  # verified after the run

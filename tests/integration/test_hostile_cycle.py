"""A whole poll_step over hostile Sentry text, with an auto playbook on a real ``tasks`` table.

Event text is attacker-controlled. The cycle must not crash, must not plan anything
for a value that fails its declared type, must leave the ``tasks`` table (and its rows)
alone, and must still remediate the one valid issue in the same file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import poll_step
from bot.settings import load_settings
from bot.store.models import RunStatus
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import (
    JOB,
    OTHER_JOB,
    add_tasks,
    all_runs,
    create_tasks_table,
    get_issue,
    issue_json,
    make_store,
    playbook_data,
    tasks,
)

pytestmark = pytest.mark.postgres

DROP = "'; DROP TABLE tasks; --"


def _playbook() -> dict[str, Any]:
    data = playbook_data()
    data["extract"]["shard"] = {
        "from": "message",
        "regex": r"on shard (?P<shard>\S+)",
        "type": "int",
        "min": 0,
        "max": 15,
    }
    data["action"]["settings"]["scope"] = {"job_id": "job_id", "shard": "shard"}
    return data


def _issues(now: Any) -> list[dict[str, Any]]:
    seen = now - timedelta(minutes=1)

    def issue(n: int, message: str, **kw: Any) -> dict[str, Any]:
        return issue_json(str(n), last_seen=seen, message=message, **kw)

    return [
        issue(1, f"Found 3 stuck tasks for job {JOB} on shard 0"),  # the valid one
        issue(
            2,
            f"Found 3 stuck tasks for job {DROP} on shard 0",
            title=f"Found 3 stuck tasks {DROP}",
        ),
        issue(3, f"Found 3 stuck tasks for job {JOB}{DROP} on shard 0"),
        issue(4, f"Found 3 stuck tasks for job {JOB} on shard {DROP}"),
        issue(
            5,
            f"Found 3 stuck tasks for job {OTHER_JOB[:-1]}z on shard 0",  # uuid-shaped, not hex
            title="Found 3 stuck tasks " + "A" * 10_000,
        ),
        issue(6, f"Found 3 stuck tasks for job {OTHER_JOB} on shard 99999"),  # out of bounds
        issue(7, f"Found 3 stuck tasks for job {OTHER_JOB} on shard -1"),
    ]


@pytest.fixture
def app(pg_dsn: str, clock: FakeClock, tmp_path: Path) -> Iterator[App]:
    create_tasks_table(pg_dsn)
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "stuck.yaml").write_text(yaml.safe_dump(_playbook()))
    replay = tmp_path / "issues.json"
    replay.write_text(json.dumps(_issues(clock.now())))
    url = sqlalchemy_url(pg_dsn)
    settings = load_settings(
        environ={
            "BOT_DATABASE_URL": url,
            "BOT_PLAYBOOKS_DIR": str(playbooks),
            "BOT_REPLAY_FILE": str(replay),
            "BOT_TARGET_JOBS_DB_URL": pg_dsn,
        }
    )
    a = App(settings=settings, store=make_store(url), clock=clock)
    yield a
    a.close()


def test_hostile_issues_plan_nothing_and_the_valid_one_is_remediated(app: App, pg_dsn: str) -> None:
    valid = add_tasks(pg_dsn, 2, job=JOB)
    others = add_tasks(pg_dsn, 3, job=OTHER_JOB)
    untouched = {r["id"]: r for r in tasks(pg_dsn) if r["id"] in others}

    report = poll_step(build_cycle(app))

    assert app.playbook_errors == []
    assert report.errors == []
    assert report.poll is not None and len(report.poll.tracked.new) == 7
    assert [(p.issue_id, p.status) for p in report.plans] == [("1", RunStatus.SUCCEEDED.value)]
    assert report.plans[0].params == {"job_id": JOB, "shard": 0}
    assert sorted(report.unmatched) == [f"QUEUE-{n}" for n in range(2, 8)]
    [run] = all_runs(app.store)
    assert run.issue_id == "1" and run.rows_affected == 2

    with psycopg.connect(pg_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('public.tasks') IS NOT NULL").fetchone()
    assert exists == (True,)
    after = {r["id"]: r for r in tasks(pg_dsn)}
    assert sorted(after) == sorted(valid + others)
    assert all(after[i]["status"] == "pending" for i in valid)
    assert {i: after[i] for i in others} == untouched

    # The hostile text was stored verbatim (bind parameters), the long title capped.
    assert get_issue(app.store, "2").title == f"Found 3 stuck tasks {DROP}"
    assert len(get_issue(app.store, "5").title) == 8_192
    assert get_issue(app.store, "4").state == "watching"  # triaged, no playbook ran

    # A second cycle over the same file changes nothing further.
    again = poll_step(build_cycle(app))
    assert again.plans == [] and again.errors == []
    assert len(all_runs(app.store)) == 1
    assert {i: r for i, r in tasks_by_id(pg_dsn).items() if i in others} == untouched


def tasks_by_id(dsn: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in tasks(dsn)}

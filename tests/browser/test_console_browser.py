"""A real Chromium drives the console: log in, filter, open an issue, approve a run, and
see the rows change on a real PostgreSQL target.

Debian's ``chromium`` (installed by ``scripts/test.sh`` when missing) driven by Playwright
for Python through ``executable_path`` (no browser download: DESIGN.md "Verified on our
machines"). The app is served by uvicorn on an ephemeral loopback port. With
``UPDATE_SCREENSHOTS=1`` the screenshots are also written to ``docs/`` (the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.store.models import RunStatus, TrackedIssue
from tests.helpers_engine import JOB as JOB_APPROVED
from tests.helpers_engine import OTHER_JOB, add_tasks, all_runs, tasks
from tests.http_rig import TOKEN, HttpRig, make_rig, serve_asgi

pytestmark = pytest.mark.postgres
CHROMIUM = "/usr/bin/chromium"
THIRD_JOB = "22222222-3333-4444-8555-666666666666"
DOCS = Path(__file__).resolve().parents[2] / "docs"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def rig(tmp_path: Path, pg_dsn: str, clock: FakeClock) -> Iterator[HttpRig]:
    r = make_rig(tmp_path, pg_dsn, clock, approvers="U0APPROVER,alice")
    yield r
    r.app.store.dispose()


def seed(rig: HttpRig) -> tuple[str, str]:
    """Three tracked issues on two teams; QUEUE-4711 waits for approval (3 stuck rows)."""
    add_tasks(rig.target_dsn, 3)
    add_tasks(rig.target_dsn, 2, job=OTHER_JOB)
    add_tasks(rig.target_dsn, 4, job=THIRD_JOB)
    issue, run_id = rig.plan("4711")
    rig.plan("4712", job=OTHER_JOB, title="Found 2 stuck tasks across 1 jobs <b>bold?</b>")
    rig.plan("4713", job=THIRD_JOB, title="Found 4 stuck tasks across 1 jobs")
    facts = {
        "4711": ("high", "Platform", "infrastructure"),
        "4712": ("medium", "Payments", "infrastructure"),
        "4713": ("low", "Platform", "infrastructure"),
    }
    with rig.app.store.session() as session:
        for sid, (severity, team, category) in facts.items():
            row = session.get(TrackedIssue, sid)
            assert row is not None
            row.severity, row.team, row.category = severity, team, category
            row.triage = {
                "indicators": [
                    {
                        "kind": "severity",
                        "name": "event_rate",
                        "effect": "+1 severity",
                        "evidence": "50 events in the last hour",
                    },
                    {
                        "kind": "category",
                        "name": "title:stuck tasks",
                        "effect": "infrastructure +3",
                        "evidence": "title matches 'stuck tasks'",
                    },
                ]
            }
    return issue, run_id


def shoot(page: object, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / name)


def test_log_in_filter_open_approve_and_see_rows_change(rig: HttpRig, tmp_path: Path) -> None:
    issue, run_id = seed(rig)
    assert [t["status"] for t in tasks(rig.target_dsn)][:3] == ["running"] * 3
    with serve_asgi(rig.asgi) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)

            # No credentials: the login form and no data.
            response = page.goto(base + "/")
            assert response is not None and response.status == 401
            assert "QUEUE-4711" not in page.content()
            page.fill("input[name=user]", "alice")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            rows = page.locator("#issues tr")
            assert rows.count() == 4  # header + 3 issues
            assert "<b>bold?</b>" in page.inner_text("#issues")  # shown as text, not markup
            shoot(page, tmp_path, "console-issues.png")

            # Filter by team.
            page.select_option("select[name=team]", "Payments")
            page.click("text=Filter")
            page.wait_for_url("**team=Payments**")
            assert page.locator("#issues tr").count() == 2
            assert "QUEUE-4712" in page.inner_text("#issues")

            # Open the issue waiting for approval.
            page.goto(base + "/")
            page.click("text=QUEUE-4711")
            page.wait_for_url(f"**/issues/{issue}")
            assert page.inner_text(f"#run-{run_id} .run-status") == "awaiting_approval"
            assert "event_rate" in page.inner_text("#indicators")

            # Approve it from the pending approvals page.
            page.click("text=Approvals")
            page.wait_for_url(base + "/approvals")
            assert "3 row(s) would change" in page.inner_text(f"#pending-{run_id}")
            shoot(page, tmp_path, "console-approvals.png")
            page.click(f"#pending-{run_id} button.approve")
            page.wait_for_url(f"**/issues/{issue}?flash=*")
            assert page.inner_text(f"#run-{run_id} .run-status") == "succeeded"
            assert page.inner_text(f"#run-{run_id} .rows-changed") == "3"
            assert "approved by alice via console" in page.inner_text("[role=status]")
            shoot(page, tmp_path, "console-issue-approved.png")
        finally:
            browser.close()

    # The rows really changed on the target, and only the approved job's.
    by_job = [(str(t["job_id"]), t["status"]) for t in tasks(rig.target_dsn)]
    assert [s for j, s in by_job if j == JOB_APPROVED] == ["pending"] * 3
    assert [s for j, s in by_job if j != JOB_APPROVED] == ["running"] * 6
    run = next(r for r in all_runs(rig.app.store) if r.id == run_id)
    assert (run.status, run.approved_by, run.approval_channel) == (
        RunStatus.SUCCEEDED.value,
        "alice",
        "console",
    )

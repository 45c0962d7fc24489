"""Post-incident report from a real store: BLUE-BANDED-BEE-42's journal, end to end.

Runs on SQLite (the embedded default) and on the real PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.store.db import Store
from bot.store.models import FixLink, Incident, RemediationRun, TrackedIssue, Transition
from bot.triage import TriageConfig, triage
from bot.triage.report import collect_report_facts, render_report
from tests.unit.test_triage_seed_cases import CASES, NOW

HOSTILE = (
    "Found 1 stuck tasks <script>alert(1)</script> @here `rm -rf /` "
    "[click](javascript:alert(1)) | x\n# injected heading"
)
T0 = NOW - timedelta(hours=3)  # 2025-11-14 09:00 UTC: the bot's first look
FIRST_SEEN = NOW - timedelta(days=7, hours=3)
LAST_SEEN = T0


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seed_bee42(store: Store, *, title: str = HOSTILE) -> None:
    case = CASES["BLUE-BANDED-BEE-42 stuck tasks"]
    result = triage(case.issue, case.event, TriageConfig(), T0)
    resolved = LAST_SEEN + timedelta(hours=48, minutes=5)
    with store.session() as s:
        s.add(
            TrackedIssue(
                id="6400042",
                short_id="BLUE-BANDED-BEE-42",
                title=title,
                culprit="worker.monitorStuckTasks",
                permalink="https://sentry.example/issues/6400042/",
                project="crawler-worker",
                environment="production",
                level="warning",
                count=718,
                user_count=0,
                first_seen=FIRST_SEEN,
                last_seen=LAST_SEEN,
                severity=result.severity.value,
                category=result.category.value,
                team=result.team,
                response_due_at=result.response_due_at,
                triage=result.model_dump(mode="json"),
                state="resolved",
                playbook_id="requeue-stuck-tasks",
                resolved_at=resolved,
                resolved_by_bot=True,
                created_at=at(2),
                updated_at=resolved,
            )
        )
        steps = [
            (2, None, "new", "first seen by poll"),
            (2, "new", "matched", "playbook requeue-stuck-tasks matched title"),
            (2.5, "matched", "planned", "auto mode, 1 row in preview <= max_rows 10"),
            (3, "planned", "remediating", "run r-42-1 started"),
            (3.1, "remediating", "remediated", "1 task requeued; verify ok"),
            (4, "remediated", "watching", "quiet clock started"),
            (48 * 60 + 5, "watching", "resolved", "48 quiet hours, no events in window"),
        ]
        for minutes, src, dst, reason in steps:
            s.add(
                Transition(
                    issue_id="6400042", from_state=src, to_state=dst, reason=reason, at=at(minutes)
                )
            )
        s.add(
            RemediationRun(
                id="r-42-1",
                idempotency_key="requeue-stuck-tasks:6400042:abc",
                playbook_id="requeue-stuck-tasks",
                issue_id="6400042",
                action="requeue_stuck_tasks",
                target="jobs_db",
                mode="auto",
                status="succeeded",
                rows_affected=1,
                verify={"ok": True, "summary": "0 stuck tasks remain"},
                created_at=at(2.5),
                started_at=at(3),
                finished_at=at(3.05),
            )
        )
        s.add(
            FixLink(
                issue_id="6400042",
                repo="acme/crawler",
                kind="pr",
                ref="212",
                pr_number=212,
                url="https://github.com/acme/crawler/pull/212",
                title="fix(worker): requeue tasks of dead workers (BLUE-BANDED-BEE-42)",
                merged=True,
                found_at=at(6 * 60),
            )
        )


def test_report_for_bee42_has_sections_figures_and_escaping(store: Store) -> None:
    seed_bee42(store)
    with store.session() as s:
        facts = collect_report_facts(s, "BLUE-BANDED-BEE-42")
    assert facts is not None
    report = render_report(facts)

    for section in (
        "# Incident Report: BLUE-BANDED-BEE-42",
        "## Summary",
        "## Timeline",
        "## Root Cause",
        "## Detection",
        "## What the Bot Did",
        "## Fix",
        "## Resolution",
        "## Action Items",
        "## Lessons Learned",
    ):
        assert f"\n{section}" in "\n" + report, section

    # figures
    assert "- **Date:** 2025-11-07 09:00 UTC" in report
    assert "- **Duration:** 7 d (first event → last event)" in report
    assert "- **Time to resolve:** 9 d 5 min" in report
    assert "- **Severity:** Medium" in report
    assert "0 users affected, 718 events" in report
    assert "| r-42-1 | requeue-stuck-tasks | auto | succeeded | 1 | ok: 0 stuck tasks remain |" in (
        report
    )
    assert "1 run(s), 1 succeeded, 1 row(s) changed in total." in report
    assert "after the 48 h quiet window; 2 d 5 min without an event" in report
    assert (
        "Category: **Infrastructure** (the seed table's default for this category is critical;"
        in report
    )
    assert "Priority" not in report  # one rank per issue: its severity
    assert "| worker\\_pool\\_health | infrastructure +3 |" in report
    assert "[acme/crawler\\#212](https://github.com/acme/crawler/pull/212)" in report
    assert "(merged)" in report
    assert "Time from first event to first remediation: 7 d 3 min." in report

    # timeline: in order, with reasons
    timeline = report.split("## Timeline")[1].split("## Root Cause")[0]
    order = ["first seen in Sentry", "∅ → new", "new → matched", "matched → planned",
             "planned → remediating", "Remediation run r-42-1", "remediating → remediated",
             "remediated → watching", "Fix linked", "watching → resolved"]  # fmt: skip
    positions = [timeline.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "48 quiet hours, no events in window" in timeline

    # derived action items: fix is linked and merged, one run only, infrastructure
    actions = report.split("## Action Items")[1].split("## Lessons")[0]
    assert "Hidden debt" not in actions and "Link the fix PR" not in actions
    assert "health monitoring" in actions

    # hostile title: no raw HTML, no mention, no live link, no injected heading
    assert "<script" not in report and "&lt;script&gt;" in report
    assert "@here" not in report and "@\u200bhere" in report
    assert "\n# injected" not in report
    assert "`rm" not in report.replace("\\`rm", "")
    assert "](javascript:" not in report


def test_lookup_by_id_short_id_and_incident(store: Store) -> None:
    seed_bee42(store, title="Found 1 stuck tasks across 1 jobs")
    with store.session() as s:
        s.add(
            TrackedIssue(
                id="6400077",
                short_id="BLUE-BANDED-BEE-7G",
                title="context deadline exceeded",
                severity="high",
                user_count=3,
                incident_id="inc-cascade",
                first_seen=NOW - timedelta(minutes=90),
                created_at=NOW,
                updated_at=NOW,
            )
        )
        s.add(
            Incident(
                id="inc-cascade",
                group_key="crawler-worker|release|crawler@1.4.0",
                title="context deadline exceeded",
                severity="high",
                opened_at=FIRST_SEEN,
            )
        )
        issue = s.get(TrackedIssue, "6400042")
        assert issue is not None
        issue.incident_id = "inc-cascade"
        s.add(issue)

    with store.session() as s:
        by_id = collect_report_facts(s, "6400042")
        by_short = collect_report_facts(s, "blue-banded-bee-42")
        by_incident = collect_report_facts(s, "inc-cascade")
        missing = collect_report_facts(s, "NOPE-1")
    assert missing is None
    assert by_id is not None and by_short is not None and by_incident is not None
    assert by_id.issue.short_id == by_short.issue.short_id == "BLUE-BANDED-BEE-42"
    assert [m.short_id for m in by_id.members] == ["BLUE-BANDED-BEE-7G"]
    # the incident's headline issue is its most severe member
    assert by_incident.issue.short_id == "BLUE-BANDED-BEE-7G"
    assert by_incident.incident_id == "inc-cascade"
    assert {r.issue for r in by_incident.runs} == {"BLUE-BANDED-BEE-42"}
    report = render_report(by_incident)
    assert "## Related Issues" in report and "BLUE-BANDED-BEE-42" in report
    assert "(2 related issues)" in report
    assert by_id.issue.last_seen == LAST_SEEN  # read back as aware UTC on both backends

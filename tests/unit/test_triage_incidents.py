"""Related-issue grouping: same release/transaction/culprit within the window -> one incident."""

from __future__ import annotations

from datetime import timedelta

from bot.triage import Severity
from bot.triage.incidents import (
    Candidate,
    assign_incidents,
    group_key,
    group_keys,
    incident_id_for,
)
from tests.unit.test_triage_seed_cases import NOW, make_issue

H = timedelta(hours=1)


def cand(
    issue_id: str,
    minutes_ago: float,
    *,
    release: str | None = "crawler@1.4.0",
    culprit: str = "",
    project: str = "crawler-worker",
    severity: Severity = Severity.MEDIUM,
    title: str | None = None,
    users: int = 0,
) -> Candidate:
    tags = {"release": release} if release else {}
    issue = make_issue(
        issue_id, title or f"error {issue_id}", project=project, culprit=culprit, tags=tags,
        first=timedelta(minutes=minutes_ago), users=users,
    )  # fmt: skip
    c = Candidate.of(issue)
    return Candidate(
        issue_id=issue_id,
        short_id=issue.short_id,
        title=c.title,
        keys=c.keys,
        first_seen=c.first_seen,
        severity=severity,
        user_count=users,
    )


def test_group_keys_are_project_scoped_and_most_specific_first() -> None:
    issue = make_issue(
        "A-1", "boom", culprit="CreatePageRecords",
        tags={"release": "crawler@1.4.0", "transaction": "queue.execute"},
    )  # fmt: skip
    assert group_keys(issue) == (
        "crawler-worker|transaction|queue.execute",
        "crawler-worker|culprit|CreatePageRecords",
        "crawler-worker|release|crawler@1.4.0",
    )
    assert group_key(issue) == "crawler-worker|transaction|queue.execute"
    bare = make_issue("A-2", "boom")
    assert group_key(bare) == f"crawler-worker|issue|{bare.id}"


def test_same_release_within_window_is_one_incident_titled_by_most_severe() -> None:
    # seed 000's cascade: 42 (stuck tasks) then 6C and 7G in the same worker release
    issues = [
        cand("BEE-42", 180, severity=Severity.MEDIUM),
        cand("BEE-6C", 140, severity=Severity.HIGH, title="sql: transaction already committed"),
        cand("BEE-7G", 100, severity=Severity.HIGH, title="context deadline exceeded", users=3),
    ]
    out = assign_incidents(issues, {}, window=H)
    assert len(out.incidents) == 1
    inc = out.incidents[0]
    assert set(out.by_issue) == {"BEE-42", "BEE-6C", "BEE-7G"}
    assert set(out.by_issue.values()) == {inc.id}
    assert inc.members == ("BEE-42", "BEE-6C", "BEE-7G")  # earliest first
    assert inc.title == "context deadline exceeded"  # high severity, most users
    assert inc.severity is Severity.HIGH
    assert inc.group_key == "crawler-worker|release|crawler@1.4.0"
    assert inc.opened_at == NOW - timedelta(minutes=180)
    assert inc.is_new and out.newly_assigned == {"BEE-42", "BEE-6C", "BEE-7G"}
    assert inc.id == incident_id_for(inc.group_key, "BEE-42")


def test_result_does_not_depend_on_input_order() -> None:
    issues = [cand("X-1", 50), cand("X-2", 30), cand("X-3", 10)]
    assert assign_incidents(issues) == assign_incidents(list(reversed(issues)))


def test_outside_the_window_or_different_culprit_or_project_are_not_grouped() -> None:
    issues = [
        cand("R-1", 300),  # same release, 3 h before R-2
        cand("R-2", 120),
        cand("C-1", 60, release=None, culprit="ShippingService.quote"),
        cand("C-2", 50, release=None, culprit="CheckoutService.charge"),
        cand("P-1", 110, project="dashboard-frontend"),  # same release name, other project
    ]
    out = assign_incidents(issues, {}, window=H)
    assert out.incidents == ()
    assert out.by_issue == {}


def test_same_culprit_groups_without_a_release() -> None:
    issues = [
        cand("C-1", 60, release=None, culprit="CreatePageRecords"),
        cand("C-2", 20, release=None, culprit="CreatePageRecords"),
    ]
    out = assign_incidents(issues, window=H)
    assert out.by_issue["C-1"] == out.by_issue["C-2"]
    assert out.incidents[0].group_key == "crawler-worker|culprit|CreatePageRecords"


def test_cascade_links_transitively_through_the_window() -> None:
    # A-B 50 min apart, B-C 50 min apart: one incident even though A-C is 100 min
    out = assign_incidents([cand("A", 150), cand("B", 100), cand("C", 50)], window=H)
    assert len(set(out.by_issue.values())) == 1 and len(out.by_issue) == 3


def test_new_issue_joins_an_existing_incident_and_assignments_stick() -> None:
    first = assign_incidents([cand("BEE-42", 180), cand("BEE-6C", 140)], window=H)
    inc_id = first.incidents[0].id
    existing = dict(first.by_issue)

    later = assign_incidents(
        [cand("BEE-42", 180), cand("BEE-6C", 140), cand("BEE-7G", 100)], existing, window=H
    )
    assert later.by_issue == {"BEE-42": inc_id, "BEE-6C": inc_id, "BEE-7G": inc_id}
    assert later.newly_assigned == {"BEE-7G"}
    assert [(p.id, p.is_new) for p in later.incidents] == [(inc_id, False)]


def test_existing_incident_keeps_its_members_even_when_a_lone_member_is_left() -> None:
    out = assign_incidents([cand("Z-1", 10)], {"Z-1": "inc-persisted"}, window=H)
    assert out.by_issue == {"Z-1": "inc-persisted"}
    assert out.newly_assigned == frozenset()
    assert out.incidents[0].is_new is False


def test_issue_without_first_seen_is_never_grouped() -> None:
    base = cand("N-1", 10)
    undated = Candidate(issue_id="N-2", short_id="N-2", title="t", keys=base.keys, first_seen=None)
    assert assign_incidents([base, undated], window=H).by_issue == {}

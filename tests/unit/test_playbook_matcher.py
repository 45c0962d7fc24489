"""Matcher: rule truth table, priority order, typed params, hostile text, explain."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.playbooks import Matcher
from tests.fixtures.playbooks.factories import JOB_ID, make_event, make_issue, make_playbook

HOSTILE = "'; DROP TABLE tasks; --"
STUCK_EXTRACT = {
    "job_id": {"from": "message", "regex": "for job (?P<job_id>[^\\n]+)", "type": "uuid"}
}


@pytest.mark.parametrize(
    ("match", "issue", "expected"),
    [
        ({"title": "stuck tasks"}, {}, True),
        ({"title": "^stuck"}, {}, False),  # search, anchored rules still anchor
        ({"title": "STUCK"}, {}, False),
        ({"title": "(?i)STUCK"}, {}, True),
        ({"level": ["warning", "error"]}, {}, True),
        ({"level": ["error"]}, {}, False),
        ({"level": ["WARNING"]}, {}, True),  # level compare is case-insensitive
        ({"environment": ["production"]}, {}, True),
        ({"environment": ["staging"]}, {}, False),
        ({"environment": ["production"]}, {"tags": {}}, False),  # unknown env never matches
        ({"project": ["queue-worker"]}, {}, True),
        ({"project": ["api"]}, {}, False),
        ({"title": "stuck", "min_events": 718}, {}, True),
        ({"title": "stuck", "min_events": 719}, {}, False),
        ({"title": "stuck", "min_users": 1}, {}, False),
        ({"title": "stuck", "min_users": 1}, {"userCount": 3}, True),
        ({"culprit": r"monitorStuckTasks$"}, {}, True),
        ({"culprit": "monitor"}, {"culprit": None}, False),
        ({"message": "for job [0-9A-F-]{36}"}, {}, True),
        ({"message": "nothing like this"}, {}, False),
        ({"tags": {"environment": "^prod"}}, {}, True),
        ({"tags": {"release": "^api@"}}, {}, False),  # absent tag never matches
        ({"tags": {"release": "^api@"}}, {"tags": {"release": "api@1.2"}}, True),
        ({"title": "stuck", "level": ["warning"], "project": ["api"]}, {}, False),  # AND
    ],
)
def test_rule_truth_table(match: dict[str, Any], issue: dict[str, Any], expected: bool) -> None:
    matcher = Matcher([make_playbook(match=match)])
    assert (matcher.match(make_issue(**issue)) is not None) is expected


def test_message_rule_falls_back_to_the_event_text() -> None:
    matcher = Matcher([make_playbook(match={"message": "lock 20260417"})])
    issue = make_issue(metadata={})
    assert matcher.match(issue) is None
    assert matcher.match(issue, make_event("could not acquire advisory lock 20260417")) is not None


def test_environment_and_tags_come_from_the_event_when_the_issue_lacks_them() -> None:
    pb = make_playbook(match={"environment": ["production"], "tags": {"release": "^api@"}})
    issue = make_issue(tags={})
    event = make_event("x", {"environment": "production", "release": "api@2"})
    assert Matcher([pb]).match(issue) is None
    assert Matcher([pb]).match(issue, event) is not None


def test_match_returns_canonical_typed_params() -> None:
    result = Matcher([make_playbook(extract=STUCK_EXTRACT)]).match(make_issue())
    assert result is not None
    assert result.playbook_id == "pb"
    assert result.params == {"job_id": JOB_ID}


def test_highest_priority_wins_and_ties_break_by_id() -> None:
    low = make_playbook(id="a-low", priority=1)
    high = make_playbook(id="z-high", priority=100)
    tie_b = make_playbook(id="b-tie", priority=50)
    tie_a = make_playbook(id="a-tie", priority=50)
    matcher = Matcher([low, tie_b, high, tie_a])
    assert [p.id for p in matcher.playbooks] == ["z-high", "a-tie", "b-tie", "a-low"]
    result = matcher.match(make_issue())
    assert result is not None and result.playbook_id == "z-high"
    result = Matcher([low, tie_b, tie_a]).match(make_issue())
    assert result is not None and result.playbook_id == "a-tie"


def test_rejected_extraction_falls_through_to_a_lower_priority_playbook() -> None:
    typed = make_playbook(id="typed", priority=100, extract=STUCK_EXTRACT)
    fallback = make_playbook(id="notify", priority=1)
    issue = make_issue(metadata={"value": f"Found 1 stuck tasks for job {HOSTILE}"})
    result = Matcher([typed, fallback]).match(issue)
    assert result is not None and result.playbook_id == "notify"
    assert result.params == {}


def test_hostile_param_is_no_match_and_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    issue = make_issue(metadata={"value": f"for job {HOSTILE}\n<!channel>"})
    matcher = Matcher([make_playbook(extract=STUCK_EXTRACT)])
    with caplog.at_level(logging.INFO, logger="bot.playbooks.matcher"):
        assert matcher.match(issue) is None
    (record,) = caplog.records
    text = record.getMessage()
    assert "playbook pb" in text and "BLUE-BANDED-BEE-42" in text and "not a uuid" in text
    assert repr(HOSTILE) in text  # escaped through repr
    assert "\n" not in text


@pytest.mark.parametrize("prefix", ["Found 3 stuck tasks ", ""])
def test_ten_thousand_char_title_is_capped_not_a_crash(prefix: str) -> None:
    title = prefix + "a" * 10_000 + "!"
    # The "!" lies past the 8 KiB the regex is allowed to see, so the rule cannot hold.
    pb = make_playbook(match={"title": "stuck tasks a+!"})
    assert Matcher([pb]).match(make_issue(title=title)) is None
    short = make_issue(title=prefix + "a" * 100 + "!")
    assert (Matcher([pb]).match(short) is not None) is bool(prefix)


def test_long_title_still_matches_rules_within_the_cap() -> None:
    pb = make_playbook(match={"title": "^Found \\d+ stuck tasks"})
    assert Matcher([pb]).match(make_issue(title="Found 3 stuck tasks " + "a" * 10_000))


def test_explain_lists_every_failed_rule_per_playbook() -> None:
    miss = make_playbook(
        id="miss",
        priority=5,
        match={"title": "nope", "level": ["error"], "project": ["api"], "min_events": 10_000},
    )
    reject = make_playbook(id="reject", priority=4, extract=STUCK_EXTRACT)
    hit = make_playbook(id="hit", priority=3)
    issue = make_issue(metadata={"value": f"for job {HOSTILE}"})
    explained = {e.playbook_id: e for e in Matcher([hit, miss, reject]).explain(issue)}
    assert explained["miss"].failed_rules == ["project", "level", "min_events", "title"]
    assert not explained["miss"].matched
    assert explained["reject"].failed_rules == []
    assert explained["reject"].rejection is not None
    assert "not a uuid" in explained["reject"].rejection
    assert explained["hit"].matched and explained["hit"].params == {}


def test_no_playbooks_never_matches() -> None:
    assert Matcher([]).match(make_issue()) is None

"""Matcher.wants_event: fetch an issue's latest event only when it could change the answer."""

from __future__ import annotations

import pytest

from bot.playbooks.matcher import Matcher
from tests.fixtures.playbooks.factories import make_issue, make_playbook

JOB = "0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d"


@pytest.mark.parametrize(
    ("match", "extract", "issue_overrides", "wanted"),
    [
        # The title already rules it out: no event can help.
        ({"title": "^Compute agent offline"}, {}, {}, False),
        # The level rules it out.
        ({"title": "stuck tasks", "level": ["error"]}, {}, {}, False),
        # Only the message rule fails on the issue: the event text may hold it.
        ({"title": "stuck tasks", "message": "job_id="}, {}, {}, True),
        # A tag the issue does not carry may be on the event.
        ({"title": "stuck tasks", "tags": {"release": "^queue-worker@"}}, {}, {}, True),
        # Environment unknown without tags: the event's environment tag may hold it.
        ({"title": "stuck tasks", "environment": ["production"]}, {}, {"tags": {}}, True),
        # Rules hold, but the typed param lives only in the event text.
        (
            {"title": "stuck tasks"},
            {
                "job_id": {
                    "from": "event",
                    "regex": "job_id=(?P<job_id>[0-9a-f-]{36})",
                    "type": "uuid",
                }
            },
            {"metadata": {"value": "Found 1 stuck tasks across 1 jobs"}},
            True,
        ),
    ],
)
def test_wants_event_truth_table(
    match: dict[str, object],
    extract: dict[str, object],
    issue_overrides: dict[str, object],
    wanted: bool,
) -> None:
    matcher = Matcher([make_playbook(match=match, extract=extract)])
    issue = make_issue(**issue_overrides)
    assert matcher.match(issue) is None
    assert matcher.wants_event(issue) is wanted

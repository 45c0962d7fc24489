"""Backtest: what each playbook would have fired on, shadowed and rejected."""

from __future__ import annotations

from bot.playbooks import Matcher, backtest
from tests.fixtures.playbooks.factories import make_event, make_issue, make_playbook

EXTRACT = {"job_id": {"from": "event", "regex": "job (?P<job_id>[^\\n]+)", "type": "uuid"}}
GOOD = "job 0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a"


def test_backtest_counts_fires_shadowed_rejections_and_unmatched() -> None:
    typed = make_playbook(id="typed", priority=100, extract=EXTRACT)
    broad = make_playbook(id="broad", priority=1, match={"level": ["warning"]})
    other = make_playbook(id="other", priority=50, match={"project": ["api"]})
    matcher = Matcher([broad, typed, other])
    pairs = [
        (make_issue(shortId="Q-1"), make_event(GOOD)),  # typed wins, broad shadowed
        (make_issue(shortId="Q-2"), make_event("job '; DROP TABLE tasks; --")),  # rejected
        (make_issue(shortId="Q-3", level="error", title="other"), None),  # nothing
        (make_issue(shortId="Q-4"), make_event(GOOD)),
    ]
    report = backtest(matcher, pairs)
    assert report.issues == 4
    assert report.unmatched == ["Q-3"]
    t, b, o = report.row("typed"), report.row("broad"), report.row("other")
    assert (t.fired, t.short_ids, t.shadowed, t.rejections) == (2, ["Q-1", "Q-4"], 0, 1)
    assert (b.fired, b.short_ids, b.shadowed, b.rejections) == (1, ["Q-2"], 2, 0)
    assert (o.fired, o.shadowed, o.rejections) == (0, 0, 0)
    # backtest picks exactly what the live matcher would pick
    for issue, event in pairs:
        live = matcher.match(issue, event)
        winners = [r.playbook_id for r in report.rows if issue.short_id in r.short_ids]
        assert winners == ([live.playbook_id] if live else [])


def test_render_is_a_table_in_priority_order() -> None:
    matcher = Matcher([make_playbook(id="low", priority=1), make_playbook(id="high", priority=9)])
    pairs = [(make_issue(shortId=f"Q-{i}"), None) for i in range(7)]
    lines = backtest(matcher, pairs).render(max_ids=3).splitlines()
    assert lines[0].split() == ["playbook", "priority", "fires", "shadowed", "rejected", "issues"]
    assert lines[2].split()[:5] == ["high", "9", "7", "0", "0"]
    assert lines[2].endswith("Q-0, Q-1, Q-2, … (+4)")
    assert lines[3].split()[:5] == ["low", "1", "0", "7", "0"]
    assert lines[4].startswith("(no playbook)")
    assert lines[-1] == "7 issue(s) replayed"

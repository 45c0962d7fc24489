"""Issue #8 done-when: hostile issues in the same poll as an ordinary one, on both stores.

BLUE-BANDED-BEE-42 (the ordinary issue, an auto playbook) shares its poll with an issue
whose title holds a NUL byte (PostgreSQL ``text`` refuses NUL), one with a lone
surrogate (not encodable as UTF-8), one with a 300-character short id (the column is
bounded) and one that is malformed (``count`` is not a number). The ordinary issue is
remediated, every cycle ends without an error, the odd ones are tracked with safe text,
the malformed one is quarantined with its reason (visible in ``status``), and every
later cycle works too. The ``world`` fixture (tests/acceptance/conftest.py) runs each
test on a SQLite and on a PostgreSQL store.
"""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.interfaces.status import overview, render_overview
from bot.store.models import QuarantinedIssue, TrackedIssue
from tests.acceptance.conftest import World

pytestmark = [pytest.mark.postgres]


def test_hostile_issues_do_not_stop_the_ordinary_one(world: World) -> None:
    nul = world.sentry.add_issue(title="Error: tab\x00le", project="web")
    lone = world.sentry.add_issue(title="Error: bro\ud800ken", project="web")
    long_short = world.sentry.add_issue(shortId="WEB-" + "Z" * 296, project="web")
    malformed = world.sentry.add_issue(title="Error: odd", project="web")
    for issue in (nul, lone, long_short, malformed):
        world.sentry.add_event(issue["id"], at=world.clock.now())
    world.sentry.issues[malformed["id"]].data["count"] = "many"  # not a numeric string

    report = world.cycle()  # asserts report.errors == []

    [plan] = report.plans
    assert (plan.status, plan.rows_affected) == ("succeeded", 3)
    assert report.poll is not None
    assert report.poll.quarantined == [malformed["id"]]
    with world.app.store.session() as session:
        rows = {r.id: r for r in session.exec(select(TrackedIssue)).all()}
        assert rows[nul["id"]].title == "Error: table"
        assert rows[lone["id"]].title == "Error: broken"
        assert len(rows[long_short["id"]].short_id) <= 64
        assert rows[long_short["id"]].short_id.startswith("WEB-ZZZ")
        assert "\\u0000" in rows[nul["id"]].raw["rawEscaped"]
        assert malformed["id"] not in rows
        [q] = session.exec(select(QuarantinedIssue)).all()
        assert q.issue_id == malformed["id"] and "count" in q.reason
        shown = render_overview(overview(session))
    assert "QUARANTINED" in shown and "count" in shown

    # Every later cycle works as well (the hostile issues keep coming back).
    for _ in range(3):
        world.clock.advance(minutes=30)
        for issue in (nul, lone, long_short):
            world.sentry.add_event(issue["id"], at=world.clock.now())
        world.cycle()
    with world.app.store.session() as session:
        [q] = session.exec(select(QuarantinedIssue)).all()
        assert q.times >= 2  # seen again, still one row


def test_a_timestamp_without_its_zone_is_quarantined_not_guessed(world: World) -> None:
    """Sentry writes every timestamp with its zone ("...Z"); one without is a malformed
    answer. It used to reach the store's UTC column and stop the poll with a bare
    ValueError ("naive datetime"); now that issue is quarantined with the reason, and
    the ordinary issue in the same poll is remedied."""
    naive = world.sentry.add_issue(title="Error: zoneless", project="web")
    world.sentry.add_event(naive["id"], at=world.clock.now())
    stamp = world.clock.now().replace(tzinfo=None).isoformat()  # no "Z", no offset
    world.sentry.issues[naive["id"]].data["lastSeen"] = stamp

    report = world.cycle()  # asserts report.errors == []

    [plan] = report.plans
    assert (plan.status, plan.rows_affected) == ("succeeded", 3)
    assert report.poll is not None and report.poll.quarantined == [naive["id"]]
    with world.app.store.session() as session:
        assert session.get(TrackedIssue, naive["id"]) is None
        [q] = session.exec(select(QuarantinedIssue)).all()
        assert q.issue_id == naive["id"] and "lastSeen" in q.reason
        assert "timezone" in q.reason
    world.clock.advance(minutes=30)
    world.cycle()  # and the next cycle works too

"""``set_flag`` and its automatic revert, on a real PostgreSQL target and both stores.

The story of seed 000 BEE-7G's backpressure: page discovery is throttled while the issue
is active; the issue resolves after its quiet hours (the real QuietChecker against
FakeSentry on the simulated clock) and the old limit is back, exactly once, whatever
crashes in between. A value an operator changed meanwhile is never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql
from sqlmodel import select

from bot.adapters.sentry.client import HttpSentryClient
from bot.adapters.targets.postgres import PgTarget
from bot.clock import FakeClock
from bot.pipeline.execute import Executor, PlanOutcome
from bot.pipeline.flags import FlagReverter
from bot.pipeline.lifecycle import QuietChecker
from bot.pipeline.track import track
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import FlagRevert, RemediationRun, TrackedIssue, Transition
from bot.testing import FakeSentry
from tests.helpers_engine import build_playbook

pytestmark = pytest.mark.postgres

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks" / "bee7g-throttle-page-discovery.yaml"

CONFIG_SCHEMA = """
CREATE TYPE crawl_mode AS ENUM ('normal', 'careful', 'paused');
CREATE TABLE job_rate_limits (
    job_type text PRIMARY KEY,
    max_per_minute integer NOT NULL,
    mode crawl_mode NOT NULL DEFAULT 'normal',
    budget numeric(8, 2)
);
INSERT INTO job_rate_limits VALUES
    ('page_discovery', 120, 'normal', 50), ('page_fetch', 600, 'normal', NULL);
"""


class Crash(BaseException):
    """What a failpoint does to this process: everything after it never happens."""


def playbook(pb_id: str | None = None, **settings: Any) -> Playbook:
    data = yaml.safe_load(SHIPPED.read_text())
    data["id"] = pb_id or data["id"]
    data["action"]["settings"].update(settings)
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0}
    return build_playbook(data)


class Story:
    """One store, one PostgreSQL target, FakeSentry behind the real client, a clock."""

    def __init__(self, store: Store, dsn: str, clock: FakeClock) -> None:
        self.store, self.dsn, self.clock = store, dsn, clock
        self.fake = FakeSentry(clock=clock, token="tok")
        self.client = HttpSentryClient(
            org="acme", token="tok", clock=clock, transport=httpx.MockTransport(self.fake.handler)
        )

    def target(self, name: str) -> PgTarget | None:
        return PgTarget(self.dsn, name=name) if name == "jobs_db" else None

    def value(self, column: str = "max_per_minute") -> Any:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT {}::text FROM job_rate_limits WHERE job_type = 'page_discovery'"
                ).format(sql.Identifier(column))
            ).fetchone()
        assert row is not None
        return row[0]

    def set_value(self, value: int) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE job_rate_limits SET max_per_minute = %s WHERE job_type = 'page_discovery'",
                (value,),
            )

    def issue(self) -> str:
        issue = self.fake.add_issue(project="crawler")
        self.fake.add_event(issue["id"], at=self.clock.now())
        with self.store.session() as session:
            track(session, self.client.get_issues([str(issue["id"])]), self.clock)
        return str(issue["id"])

    def plan(self, pb: Playbook, issue_id: str) -> PlanOutcome:
        executor = Executor(self.store, {pb.id: pb}, self.target, self.clock)
        return executor.plan(issue_id, MatchResult(pb, {}))

    def run(self, pb: Playbook, issue_id: str) -> RemediationRun:
        out = self.plan(pb, issue_id)
        with self.store.session() as session:
            run = session.get(RemediationRun, out.run_id or "")
        assert run is not None
        return run

    def reverter(self, pb: Playbook, **kwargs: Any) -> FlagReverter:
        return FlagReverter(self.store, {pb.id: pb}, self.target, self.clock, **kwargs)

    def quiet(self, pb: Playbook) -> QuietChecker:
        return QuietChecker(self.store, self.client, self.clock, quiet_hours_for=lambda _: 48)

    def journal(self) -> list[FlagRevert]:
        with self.store.session() as session:
            return list(session.exec(select(FlagRevert)).all())

    def state(self, issue_id: str) -> str:
        with self.store.session() as session:
            row = session.get(TrackedIssue, issue_id)
        assert row is not None
        return row.state

    def notes(self, issue_id: str) -> list[str]:
        with self.store.session() as session:
            rows = session.exec(select(Transition).where(Transition.issue_id == issue_id)).all()
        return [r.reason for r in rows if r.reason.startswith("flag")]


@pytest.fixture
def story(store: Store, pg_dsn: str, clock: FakeClock) -> Iterator[Story]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(CONFIG_SCHEMA)
    yield Story(store, pg_dsn, clock)


def test_set_while_active_then_back_after_the_quiet_hours_resolve(story: Story) -> None:
    pb = playbook(revert_after_minutes=7 * 24 * 60)  # the resolve comes first
    issue_id = story.issue()

    run = story.run(pb, issue_id)

    assert run.status == "succeeded" and run.verify["ok"] is True
    assert story.value() == "10"
    assert run.before_image["rows"] == [
        {"key": "page_discovery", "before": "120", "value": "10", "type": "integer"}
    ]
    reverter = story.reverter(pb)
    story.clock.advance(hours=47)
    story.quiet(pb).check()
    assert reverter.sweep().reverted == 0 and story.value() == "10"  # still active

    story.clock.advance(hours=2)
    assert story.quiet(pb).check().resolved == 1
    report = reverter.sweep()

    assert (report.reverted, report.pending) == (1, 1)
    assert story.value() == "120"
    (journal,) = story.journal()
    assert (journal.outcome, journal.attempts) == ("reverted", 1)
    assert f"issue {story.fake.issues[issue_id].data['shortId']} resolved" in journal.reason
    assert any("flag reverted" in n and "10 -> 120" in n for n in story.notes(issue_id))
    assert reverter.sweep().pending == 0  # done once; never again
    assert story.value() == "120"


def test_revert_after_minutes_comes_first_while_the_issue_is_still_open(story: Story) -> None:
    pb = playbook(revert_after_minutes=30)
    issue_id = story.issue()
    story.run(pb, issue_id)
    reverter = story.reverter(pb)

    story.clock.advance(minutes=29)
    assert reverter.sweep().reverted == 0 and story.value() == "10"
    story.clock.advance(minutes=2)
    assert reverter.sweep().reverted == 1

    assert story.value() == "120"
    assert story.state(issue_id) == "watching"
    assert "revert_after_minutes (30) elapsed" in story.journal()[0].reason


def test_a_value_changed_by_someone_else_is_not_overwritten(story: Story) -> None:
    pb = playbook(revert_after_minutes=30)
    issue_id = story.issue()
    story.run(pb, issue_id)
    story.set_value(5)  # the operator throttled harder by hand meanwhile

    story.clock.advance(minutes=31)
    report = story.reverter(pb).sweep()

    assert (report.reverted, report.left_changed) == (0, 1)
    assert story.value() == "5"
    (journal,) = story.journal()
    assert journal.outcome == "changed_by_someone_else"
    assert "is now 5, not the 10 the bot set" in (journal.detail or "")
    assert any("left as is" in n for n in story.notes(issue_id))


@pytest.mark.parametrize("failpoint", ["flag-revert-journaled", "flag-revert-committed"])
def test_a_crash_at_either_revert_failpoint_still_reverts_exactly_once(
    story: Story, failpoint: str
) -> None:
    pb = playbook(revert_after_minutes=30)
    issue_id = story.issue()
    story.run(pb, issue_id)
    story.clock.advance(minutes=31)

    def die(name: str) -> None:
        if name == failpoint:
            raise Crash(name)

    with pytest.raises(Crash):
        story.reverter(pb, failpoint=die).sweep()
    expected_after_crash = "120" if failpoint == "flag-revert-committed" else "10"
    assert story.value() == expected_after_crash
    (journal,) = story.journal()
    assert journal.finished_at is None  # the intent is journaled, the outcome is not

    # The restarted process: the same compare-and-set again.
    report = story.reverter(pb).sweep()

    assert report.failed == 0 and report.left_changed == 0
    assert story.value() == "120"
    (journal,) = story.journal()
    assert journal.attempts == 2 and journal.outcome == "reverted"
    assert story.reverter(pb).sweep().pending == 0
    assert story.state(issue_id) == "watching"


def test_a_run_interrupted_before_recording_is_reverted_from_its_journaled_preview(
    story: Story,
) -> None:
    """The bot died after the target committed but before the run recorded its outcome:
    recovery marks it interrupted; the revert takes the old value from the preview the
    run journaled before it executed."""
    pb = playbook(revert_after_minutes=30)
    issue_id = story.issue()
    run = story.run(pb, issue_id)
    with story.store.session() as session:
        row = session.get(RemediationRun, run.id)
        assert row is not None
        row.status, row.before_image = "interrupted", {}
    assert run.preview["rows"][0]["before"] == "120"

    story.clock.advance(minutes=31)
    assert story.reverter(pb).sweep().reverted == 1
    assert story.value() == "120"


def test_catalog_types_enum_and_numeric_round_trip(story: Story) -> None:
    pb = playbook(value_column="mode", value="paused", revert_after_minutes=30)
    issue_id = story.issue()
    run = story.run(pb, issue_id)
    assert run.status == "succeeded", run.error
    assert story.value("mode") == "paused"
    assert run.before_image["details"]["type"] == "crawl_mode"

    money = playbook("budget-cut", value_column="budget", value=10, revert_after_minutes=30)
    run2 = story.run(money, issue_id)
    assert run2.status == "succeeded", run2.error
    assert story.value("budget") == "10.00"  # stored as the column's type says

    story.clock.advance(minutes=31)
    FlagReverter(story.store, {pb.id: pb, money.id: money}, story.target, story.clock).sweep()
    assert story.value("mode") == "normal" and story.value("budget") == "50.00"


def test_null_into_not_null_and_a_missing_row_are_refused(story: Story) -> None:
    issue_id = story.issue()
    refused = story.plan(playbook(value=None), issue_id)
    assert refused.status == "blocked" and refused.run_id is None  # refused at preview
    assert "max_per_minute is NOT NULL" in refused.note
    missing = story.plan(playbook("other", key="no_such_job"), issue_id)
    assert missing.status == "blocked" and missing.run_id is None
    assert "a flag is never created" in missing.note
    assert story.value() == "120"
    with psycopg.connect(story.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM job_rate_limits").fetchone() == (2,)

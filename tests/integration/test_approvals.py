"""The approval service on a real PostgreSQL target, the store on SQLite and PostgreSQL.

One service for Slack, console and CLI: allowlist (fail closed), compare-and-set on the
run, expiry, "already handled", deny, and the audit trail in the journal and report.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.http.slack_verify import NonceStore
from bot.interfaces.wiring import event_recorder
from bot.pipeline.approvals import (
    Action,
    ApprovalOutcome,
    ApprovalService,
    Approvers,
    Channel,
)
from bot.pipeline.execute import Executor
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import ApprovalDecision, OutboxMessage, RunStatus
from bot.triage.report import collect_report_facts, render_report
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import (
    add_tasks,
    all_runs,
    build_playbook,
    create_tasks_table,
    match,
    states,
    story,
    tasks,
    track_issue,
)

pytestmark = pytest.mark.postgres
REPLY = "http://127.0.0.1:9/actions/T1/123/abc"


class Rig:
    """An App (real settings, store, event recorder) whose executor uses a PG target."""

    def __init__(self, app: App, target_dsn: str) -> None:
        self.app, self.target_dsn = app, target_dsn
        self.playbook = build_playbook(guards={"mode": "approval", "approval_ttl_minutes": 30})

    @property
    def store(self) -> Store:
        return self.app.store

    def executor(self) -> Executor:
        from bot.adapters.targets.postgres import PgTarget

        return Executor(
            self.store,
            {self.playbook.id: self.playbook},
            lambda name: PgTarget(self.target_dsn, name=name) if name == "jobs_db" else None,
            self.app.clock,
            on_event=event_recorder(self.app),
        )

    def plan(self) -> tuple[str, str]:
        issue = track_issue(self.store, self.app.clock)
        out = self.executor().plan(issue, match(self.playbook))
        assert out.status == RunStatus.AWAITING_APPROVAL.value and out.run_id
        return issue, out.run_id

    def service(self, *ids: str) -> ApprovalService:
        return ApprovalService(self.store, self.app.clock, Approvers.parse(ids))


@pytest.fixture(params=["postgresql", "sqlite"])
def rig(
    request: pytest.FixtureRequest, pg_dsn: str, clock: FakeClock, tmp_path: Path
) -> Iterator[Rig]:
    url = sqlalchemy_url(pg_dsn) if request.param == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    create_tasks_table(pg_dsn)
    settings = load_settings(
        environ={
            "BOT_DATABASE_URL": url,
            "SLACK_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/xyz",
            "SLACK_SIGNING_SECRET": "0123456789abcdef0123",
            "BOT_REPLAY_FILE": str(tmp_path / "none.json"),
            "BOT_REPORTS_DIR": str(tmp_path / "reports"),
        }
    )
    app = App(settings=settings, store=Store(settings.database_url), clock=clock)
    app.store.upgrade()
    yield Rig(app, pg_dsn)
    app.store.dispose()


def decisions(store: Store) -> list[tuple[str, str, str, str]]:
    with store.session() as session:
        rows = session.exec(select(ApprovalDecision).order_by(ApprovalDecision.id)).all()  # type: ignore[arg-type]
    return [(r.action, r.outcome, r.actor, r.channel) for r in rows]


def outbox(store: Store, channel: str) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.channel == channel)).all()
    return [dict(r.payload) for r in rows]


def test_plan_posts_block_kit_request_with_buttons(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 2)
    _, run_id = rig.plan()
    [msg] = outbox(rig.store, "slack")
    [actions] = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("approve", run_id),
        ("deny", run_id),
    ]
    assert "2 row(s) would change (max_rows 100)" in str(msg["blocks"])


def test_allowlisted_slack_approval_then_execution_changes_rows_and_is_reported(
    rig: Rig,
) -> None:
    add_tasks(rig.target_dsn, 3)
    issue, run_id = rig.plan()

    result = rig.service("U0APPROVER").decide(
        run_id, Action.APPROVE, "U0APPROVER", Channel.SLACK, reply_url=REPLY
    )
    assert result.outcome is ApprovalOutcome.APPROVED
    assert [t["status"] for t in tasks(rig.target_dsn)] == ["running"] * 3  # not yet run

    done = rig.executor().execute_run(run_id)

    assert done.status == RunStatus.SUCCEEDED.value and done.rows_affected == 3
    assert [t["status"] for t in tasks(rig.target_dsn)] == ["pending"] * 3
    [run] = all_runs(rig.store)
    assert (run.approved_by, run.approval_channel) == ("U0APPROVER", "slack")
    assert "approved by U0APPROVER via slack" in story(rig.store, issue)[3][2]
    # The Slack message is replaced with the outcome through the click's response_url.
    [update] = outbox(rig.store, "slack_response")
    assert update["url"] == REPLY
    assert "succeeded" in update["body"]["text"] and "rows changed: 3" in str(update["body"])
    with rig.store.session() as session:
        facts = collect_report_facts(session, issue)
    assert facts is not None
    report = render_report(facts)
    assert "## Approvals" in report and "U0APPROVER" in report and "| slack |" in report


def test_not_on_the_allowlist_changes_nothing_and_is_journaled(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 2)
    before = tasks(rig.target_dsn)
    issue, run_id = rig.plan()

    for service in (rig.service("U0APPROVER"), rig.service()):  # empty list = nobody
        result = service.decide(run_id, Action.APPROVE, "U0INTRUDER", Channel.SLACK)
        assert result.outcome is ApprovalOutcome.NOT_AN_APPROVER and not result.changed

    assert all_runs(rig.store)[0].status == RunStatus.AWAITING_APPROVAL.value
    assert rig.executor().execute_run(run_id).note == "another worker claimed this run (no-op)"
    assert tasks(rig.target_dsn) == before
    assert states(rig.store, issue)[-1] == "planned"
    assert decisions(rig.store) == [("approve", "not_an_approver", "U0INTRUDER", "slack")] * 2


def test_deny_then_every_later_decision_is_already_handled(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 1)
    before = tasks(rig.target_dsn)
    issue, run_id = rig.plan()
    svc = rig.service("alice", "bob")

    denied = svc.decide(run_id, Action.DENY, "alice", Channel.CONSOLE)
    again = svc.decide(run_id, Action.APPROVE, "bob", Channel.SLACK)

    assert denied.outcome is ApprovalOutcome.DENIED
    assert again.outcome is ApprovalOutcome.ALREADY_HANDLED
    assert "denied by alice via console" in again.message
    assert all_runs(rig.store)[0].status == RunStatus.DENIED.value
    assert rig.executor().execute_approved() == []
    assert tasks(rig.target_dsn) == before
    assert states(rig.store, issue)[-1] == "watching"
    assert decisions(rig.store) == [
        ("deny", "denied", "alice", "console"),
        ("approve", "already_handled", "bob", "slack"),
    ]


def test_expired_request_is_refused_and_marked(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 1)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()
    rig.app.clock.advance(minutes=31)  # type: ignore[attr-defined]

    result = rig.service("alice").decide(run_id, Action.APPROVE, "alice", Channel.CONSOLE)

    assert result.outcome is ApprovalOutcome.EXPIRED
    assert all_runs(rig.store)[0].status == RunStatus.EXPIRED.value
    assert tasks(rig.target_dsn) == before


def test_unknown_run_is_not_found(rig: Rig) -> None:
    result = rig.service("alice").decide("nope", Action.APPROVE, "alice", Channel.SLACK)
    assert result.outcome is ApprovalOutcome.NOT_FOUND


def test_approved_elsewhere_is_executed_by_the_leaders_sweep(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 2)
    _, run_id = rig.plan()
    rig.service("alice").decide(run_id, Action.APPROVE, "alice", Channel.CONSOLE)

    [done] = rig.executor().execute_approved()

    assert done.run_id == run_id and done.rows_affected == 2
    assert rig.executor().execute_approved() == []  # once


# Concurrent writers: PostgreSQL is the multi-replica store (no SQLite case, not a skip).
@pytest.mark.parametrize("rig", ["postgresql"], indirect=True)
def test_two_approvers_racing_only_one_wins(rig: Rig) -> None:
    add_tasks(rig.target_dsn, 2)
    _, run_id = rig.plan()
    svc = rig.service("alice", "bob")
    results: list[ApprovalOutcome] = []
    barrier = threading.Barrier(2)

    def click(who: str) -> None:
        barrier.wait()
        results.append(svc.decide(run_id, Action.APPROVE, who, Channel.SLACK).outcome)

    threads = [threading.Thread(target=click, args=(who,)) for who in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted(results) == [ApprovalOutcome.ALREADY_HANDLED, ApprovalOutcome.APPROVED]


def test_nonce_is_honoured_once_across_replicas(rig: Rig) -> None:
    one, two = NonceStore(rig.store, rig.app.clock), NonceStore(rig.store, rig.app.clock)
    assert one.use_once("slack:v0=abc") is True
    assert two.use_once("slack:v0=abc") is False
    assert one.use_once("slack:v0=def") is True
    rig.app.clock.advance(minutes=11)  # type: ignore[attr-defined]
    assert two.use_once("slack:v0=ghi") is True  # purges the expired keys first
    with rig.store.session() as session:
        from bot.store.models import RequestNonce

        assert [n.key for n in session.exec(select(RequestNonce))] == ["slack:v0=ghi"]

"""Issue #15: BLUE-BANDED-BEE-42 remedied from a Sentry webhook, with no poll in between.

The world is the issue #4 story's (see conftest.py): FakeSentry behind the real
``HttpSentryClient``, a real PostgreSQL target loaded with ``examples/targets.sql``,
the shipped BEE-42 playbook in ``auto`` mode, the store on SQLite and on PostgreSQL.
The HTTP side is the real Starlette app built by ``build_service`` (as ``serve`` does),
driven by Starlette's TestClient; deliveries come from :class:`FakeWebhookSender`
(getsentry/sentry ``AppPlatformEvent`` body, headers and signature; ``issue.*`` data
from ``_webhook_issue_data``, ``event_alert`` from ``send_alert_webhook_v2``, both in
``src/sentry/sentry_apps/tasks/sentry_apps.py``).

The leader's inbox worker is driven with ``run_once()`` so every step is deterministic;
``bench/webhook.py`` measures the same path with the worker's thread and real time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlmodel import select
from starlette.testclient import TestClient

from bot.interfaces.http.app import create_app
from bot.interfaces.http.server import Service, build_service
from bot.interfaces.scheduler import SchedulerConfig
from bot.pipeline.track import track
from bot.store.models import LifecycleState, TrackedIssue, Transition
from bot.testing.sentry_webhooks import FakeWebhookSender, SignedDelivery, user_actor
from tests.acceptance.conftest import JOB_ID, World

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECRET = "acceptance-client-secret-" + "c" * 16
PLAYBOOK = "bee42-requeue-stuck-tasks"


@dataclass
class Served:
    world: World
    service: Service
    client: TestClient
    sender: FakeWebhookSender

    def post(self, d: SignedDelivery) -> int:
        return self.client.post("/hooks/sentry", content=d.body, headers=d.headers).status_code

    def created(self) -> SignedDelivery:
        return self.sender.issue("created", self.world.sentry_issue(), at=self.world.clock.now())

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.client.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def _config() -> SchedulerConfig:
    return SchedulerConfig(
        intervals={"poll": 60, "lifecycle": 300, "fixlinks": 900, "outbox": 15},
        lease_ttl=timedelta(minutes=10),
    )


def _serve(world: World, holder: str) -> Service:
    world.app.settings = world.app.settings.model_copy(
        update={"sentry_client_secret": SecretStr(SECRET), "instance_id": holder}
    )
    return build_service(world.app, config=_config())


@pytest.fixture
def served(world: World) -> Iterator[Served]:
    service = _serve(world, "replica-a")
    assert service.scheduler.elector.try_acquire()
    with TestClient(create_app(service.parts)) as client:
        yield Served(world, service, client, FakeWebhookSender(SECRET))


def test_issue_created_is_tracked_and_remedied_without_a_poll(served: Served) -> None:
    world = served.world
    assert served.post(served.created()) == 202
    assert world.runs() == []  # acknowledged first; the work is the leader's

    assert served.service.worker.run_once() == 1
    [run] = world.runs()
    assert (run.playbook_id, run.mode, run.status, run.rows_affected) == (
        PLAYBOOK,
        "auto",
        "succeeded",
        3,
    )
    assert run.params == {"job_id": JOB_ID}
    assert world.tracked().state == LifecycleState.WATCHING.value
    # No poll: the issue was read by id (detail endpoint), never listed.
    assert world.sentry.calls("GET", "/issues/") == []
    assert len(world.sentry.calls("GET", f"/issues/{world.issue_id}/")) == 1


def test_a_redelivery_does_nothing_twice(served: Served) -> None:
    world = served.world
    first = served.created()
    assert served.post(first) == 202
    served.service.worker.run_once()
    tasks = world.tasks()

    # Sentry retries the same body 5 minutes later (new Request-ID, new timestamp).
    world.clock.advance(minutes=5)
    retry = served.sender.sign("issue", first.body, at=world.clock.now())
    assert served.post(retry) == 200
    assert served.service.worker.run_once() == 0
    # A different delivery for the same issue (the alert rule fires): processed, and the
    # remedy is not repeated (the issue is unchanged; the journal key would refuse it).
    alert = served.sender.event_alert(world.issue_id, {"event_id": "e" * 32}, at=world.clock.now())
    assert served.post(alert) == 202
    assert served.service.worker.run_once() == 1
    assert len(world.runs()) == 1
    assert world.tasks() == tasks


def test_a_standby_replica_records_and_only_the_leader_processes(served: Served) -> None:
    world = served.world
    standby = _serve(world, "replica-b")
    assert not standby.scheduler.elector.try_acquire()  # replica-a holds the lease
    with TestClient(create_app(standby.parts)) as other:
        d = served.created()
        assert other.post("/hooks/sentry", content=d.body, headers=d.headers).status_code == 202
    assert standby.worker.run_once() == 0  # not the leader: nothing taken
    assert world.runs() == []
    assert served.service.worker.run_once() == 1
    assert [r.status for r in world.runs()] == ["succeeded"]


def test_resolved_by_a_person_stops_the_watch_and_echoes_are_ignored(served: Served) -> None:
    world = served.world
    served.post(served.created())
    served.service.worker.run_once()
    assert world.tracked().state == LifecycleState.WATCHING.value

    # The bot's own change (made through the integration's token) comes back as an echo.
    echo = served.sender.issue(
        "resolved",
        {**world.sentry_issue(), "status": "resolved"},
        at=world.clock.now(),
        actor={"type": "application", "id": "0f9e8d7c-app-uuid", "name": "remediation-bot"},
    )
    assert served.post(echo) == 202
    served.service.worker.run_once()
    assert world.tracked().state == LifecycleState.WATCHING.value

    person = served.sender.issue(
        "resolved",
        {**world.sentry_issue(), "status": "resolved"},
        at=world.clock.now(),
        actor=user_actor(7, "Ada Lovelace"),
    )
    assert served.post(person) == 202
    served.service.worker.run_once()
    row = world.tracked()
    assert (row.state, row.resolved_by_bot) == (LifecycleState.RESOLVED.value, False)
    with world.app.store.session() as session:
        reasons = session.exec(
            select(Transition.reason).where(Transition.issue_id == world.issue_id)
        ).all()
    assert "resolved in Sentry by Ada Lovelace: the bot stops watching" in reasons


def test_unresolved_after_the_bots_resolve_is_a_regression(served: Served) -> None:
    world = served.world
    served.post(served.created())
    served.service.worker.run_once()
    with world.app.store.session() as session:  # as the quiet-hours resolve leaves it
        row = session.get(TrackedIssue, world.issue_id)
        assert row is not None
        row.state, row.resolved_by_bot, row.resolved_at = "resolved", True, world.clock.now()

    unresolved = served.sender.issue(
        "unresolved", world.sentry_issue(), at=world.clock.now(), actor=None
    )
    assert served.post(unresolved) == 202
    served.service.worker.run_once()
    row = world.tracked()
    assert row.state == LifecycleState.ESCALATED.value
    assert row.requires_approval
    assert world.states()[-2:] == ["regressed", "escalated"]


def test_metrics_move_as_the_webhook_run_happens(served: Served) -> None:
    before = served.samples()
    runs_key = (
        "remediation_runs_total",
        (("mode", "auto"), ("outcome", "succeeded"), ("playbook", PLAYBOOK)),
    )
    assert runs_key not in before
    assert before[("issues_tracked", (("state", "watching"),))] == 0

    served.post(served.created())
    mid = served.samples()
    accepted = (("action", "created"), ("resource", "issue"), ("result", "accepted"))
    assert mid[("sentry_webhooks_received_total", accepted)] == 1
    assert runs_key not in mid

    served.service.worker.run_once()
    after = served.samples()
    assert after[runs_key] == 1
    assert after[("remediation_rows_affected_total", (("playbook", PLAYBOOK),))] == 3
    assert after[("remediation_duration_seconds_count", ())] == 1
    assert after[("issues_tracked", (("state", "watching"),))] == 1
    assert after[("leader_is_leader", ())] == 1
    assert after[("outbox_pending", ())] >= 1  # the "remediated" message waits for the flush
    assert after[("approvals_pending", ())] == 0
    assert after.get(("circuit_open", (("playbook", PLAYBOOK),)), 0) == 0


def test_an_issue_tracked_but_never_matched_is_planned_on_the_next_delivery(
    served: Served,
) -> None:
    """A crash (or a store error) after tracking and before matching leaves the issue
    ``new``; the retried delivery finds it unchanged and must still plan it."""
    world = served.world
    issue = world.app.sentry().get_issue(world.issue_id)
    with world.app.store.session() as session:
        track(session, [issue], world.clock)
    assert world.tracked().state == LifecycleState.NEW.value

    assert served.post(served.created()) == 202
    served.service.worker.run_once()
    assert [(r.status, r.rows_affected) for r in world.runs()] == [("succeeded", 3)]

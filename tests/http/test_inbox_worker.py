"""The webhook inbox on both stores: claims do not overlap, failures are retried then
given up, and the leader's worker thread processes a recorded delivery once woken."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from bot.interfaces.webhook_worker import InboxWorker
from bot.pipeline import inbox
from bot.pipeline.inbox import Claimed
from bot.pipeline.webhook import BatchReport, Outcome
from bot.sentry.webhook_envelope import parse_delivery
from bot.store.models import DeliveryStatus
from tests.http.conftest import HttpWorld


def record(world: HttpWorld, n: int) -> None:
    body = b'{"action": "assigned", "data": {"issue": {"id": "%d"}}, "actor": {"type": "user"}}' % n
    assert inbox.record(world.app.store, parse_delivery("issue", body), None, world.clock.now())


def test_claims_take_each_delivery_once_until_the_lease_runs_out(http_world: HttpWorld) -> None:
    store, clock = http_world.app.store, http_world.clock
    for n in range(1, 6):
        record(http_world, n)
    first = inbox.claim(store, clock.now(), limit=3)
    second = inbox.claim(store, clock.now(), limit=3)
    assert [c.issue_id for c in first] == ["1", "2", "3"]
    assert [c.issue_id for c in second] == ["4", "5"]
    assert inbox.claim(store, clock.now()) == []
    clock.advance(seconds=61)  # past CLAIM_LEASE: a crashed claimer's rows come back
    again = inbox.claim(store, clock.now())
    assert [(c.issue_id, c.attempts) for c in again] == [(str(n), 2) for n in range(1, 6)]


def test_a_delivery_that_keeps_failing_is_given_up_after_max_attempts(
    http_world: HttpWorld,
) -> None:
    store, clock = http_world.app.store, http_world.clock
    record(http_world, 9)
    for attempt in range(1, inbox.MAX_ATTEMPTS + 1):
        [claimed] = inbox.claim(store, clock.now())
        assert claimed.attempts == attempt
        again = inbox.retry_later(store, claimed, "Sentry 503", clock.now(), delay=timedelta(0))
        assert again == (attempt < inbox.MAX_ATTEMPTS)
    assert inbox.claim(store, clock.now()) == []
    [row] = http_world.deliveries()
    assert (row.status, row.result) == (DeliveryStatus.FAILED.value, "Sentry 503")


def test_the_worker_thread_processes_on_wake_and_only_while_leading(
    http_world: HttpWorld,
) -> None:
    seen: list[str | None] = []
    leading = threading.Event()

    def process(batch: Sequence[Claimed]) -> BatchReport:
        seen.extend(d.issue_id for d in batch)
        return BatchReport(outcomes=[Outcome(d, DeliveryStatus.DONE, "ok") for d in batch])

    worker = InboxWorker(
        http_world.app.store, process, leading.is_set, http_world.clock, idle_seconds=3600
    )
    worker.start()
    try:
        record(http_world, 1)
        worker.wake()
        time.sleep(0.3)  # give a non-leader the chance to (wrongly) take it
        assert seen == []
        leading.set()
        worker.wake()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert seen == ["1"]
    [row] = http_world.deliveries()
    assert (row.status, row.result) == ("done", "ok")

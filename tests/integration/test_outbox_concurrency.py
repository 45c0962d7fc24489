"""Several flushers (replicas) on one real PostgreSQL: every message is sent exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from bot.clock import FakeClock
from bot.notify.port import Payload
from bot.pipeline.outbox import FlushReport, OutboxFlusher, enqueue
from bot.store.db import Store
from tests.conftest import sqlalchemy_url


@pytest.fixture
def pg_url(pg_dsn: str) -> str:
    url = sqlalchemy_url(pg_dsn)
    store = Store(url)
    store.upgrade()
    store.dispose()
    return url


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[Store, Store]]:
    """Two independent Store handles (own engines and pools), like two processes."""
    a, b = Store(pg_url), Store(pg_url)
    try:
        yield a, b
    finally:
        a.dispose()
        b.dispose()


def fill(store: Store, clock: FakeClock, n: int) -> None:
    with store.session() as session:
        for i in range(n):
            enqueue(session, "slack", f"k{i}", {"text": f"k{i}"}, str(i), "triaged", clock.now())


def test_two_concurrent_flushers_send_each_message_once(
    replicas: tuple[Store, Store], clock: FakeClock
) -> None:
    fill(replicas[0], clock, 40)
    delivered: list[tuple[str, str]] = []
    lock = threading.Lock()
    # Each flusher waits here on its first send, i.e. while holding a committed claim,
    # so both are provably working the queue at the same time.
    both_busy = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def run(name: str, store: Store) -> None:
        first = True

        def send(payload: Payload) -> None:
            nonlocal first
            if first:
                first = False
                both_busy.wait()
            with lock:
                delivered.append((name, payload["text"]))

        flusher = OutboxFlusher(store, {"slack": send}, clock)
        try:
            while flusher.flush(limit=10) != FlushReport():
                pass
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(name, store))
        for name, store in zip(("a", "b"), replicas, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    per_message = Counter(key for _, key in delivered)
    assert per_message == Counter({f"k{i}": 1 for i in range(40)})
    per_flusher = Counter(name for name, _ in delivered)
    assert per_flusher["a"] >= 10 and per_flusher["b"] >= 10
    with replicas[0].engine.connect() as conn:
        statuses = conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status")).all()
    assert dict(statuses) == {"sent": 40}


def test_rows_locked_by_another_replica_are_skipped_not_waited_for(
    replicas: tuple[Store, Store], clock: FakeClock
) -> None:
    fill(replicas[0], clock, 3)
    sent: list[Payload] = []
    flusher = OutboxFlusher(replicas[1], {"slack": sent.append}, clock)
    reports: list[FlushReport] = []
    with replicas[0].engine.connect() as other:
        tx = other.begin()
        # another replica is in the middle of claiming k0
        other.execute(text("SELECT id FROM outbox WHERE dedupe_key = 'k0' FOR UPDATE"))
        worker = threading.Thread(target=lambda: reports.append(flusher.flush()))
        worker.start()
        worker.join(timeout=30)
        blocked = worker.is_alive()
        tx.rollback()
        worker.join(timeout=30)
    assert not blocked, "flush waited on a row lock instead of skipping it"
    assert reports == [FlushReport(sent=2)]
    assert sorted(p["text"] for p in sent) == ["k1", "k2"]
    assert flusher.flush() == FlushReport(sent=1)
    assert sent[-1] == {"text": "k0"}

"""The leader's inbox worker: claims recorded deliveries and processes them at once.

One thread per ``serve`` process. The HTTP handler calls :meth:`InboxWorker.wake`
after recording a delivery, so on the leader a delivery is processed within
milliseconds; on a standby replica the wake-up finds it is not the leader and does
nothing, and the leader's worker finds the row on its next look (every
``idle_seconds``, a cheap indexed query). Leadership is the scheduler's lease
(:class:`bot.interfaces.leader.LeaseElector`), read locally — no store round-trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

from bot.clock import Clock
from bot.errors import BotError
from bot.pipeline import inbox
from bot.pipeline.inbox import Claimed
from bot.pipeline.webhook import BatchReport
from bot.store.db import Store

log = logging.getLogger(__name__)

Processor = Callable[[Sequence[Claimed]], BatchReport]


class InboxWorker:
    """Claim → process → finish, while this replica is the leader."""

    def __init__(
        self,
        store: Store,
        process: Processor,
        is_leader: Callable[[], bool],
        clock: Clock,
        *,
        idle_seconds: float = 0.5,
        batch: int = 5,
        threads: int = 4,
        retry_delay: timedelta = timedelta(seconds=30),
    ) -> None:
        self.store = store
        self.process = process
        self.is_leader = is_leader
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.batch = batch
        self.retry_delay = retry_delay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.threads = max(1, threads)
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()
        self.processed = 0

    def wake(self) -> None:
        """A delivery was recorded: look now instead of at the next idle tick."""
        self._wake.set()

    def run_once(self) -> int:
        """Process every due delivery (batch after batch); return how many were finished.
        Does nothing unless this replica is the leader. Never raises for a delivery."""
        if not self.is_leader():
            return 0
        done = 0
        while not self._stop.is_set():
            claimed = inbox.claim(self.store, self.clock.now(), limit=self.batch)
            if not claimed:
                break
            try:
                report = self.process(claimed)
            except BotError as exc:  # the batch as a whole failed: each is retried
                log.warning("webhook batch failed: %s", exc)
                for d in claimed:
                    inbox.retry_later(
                        self.store, d, str(exc), self.clock.now(), delay=self.retry_delay
                    )
                break
            for outcome in report.outcomes:
                now = self.clock.now()
                if outcome.retry:
                    inbox.retry_later(
                        self.store, outcome.delivery, outcome.result, now, delay=self.retry_delay
                    )
                else:
                    inbox.finish(
                        self.store, outcome.delivery.id, outcome.status, outcome.result, now
                    )
                    done += 1
                log.info(
                    "webhook %s.%s issue %s: %s",
                    outcome.delivery.resource,
                    outcome.delivery.action,
                    outcome.delivery.issue_id,
                    outcome.result,
                )
        with self._count_lock:
            self.processed += done
        return done

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self.idle_seconds):
                # Wake the next thread too: with several deliveries due, the threads
                # fan out (each claim takes different rows: SKIP LOCKED).
                self._wake.clear()
            try:
                if self.run_once():
                    self._wake.set()
            except Exception:  # the worker must outlive a bad batch; logged with traceback
                log.exception("webhook inbox worker failed; retrying")
                self._stop.wait(1.0)

    def start(self) -> None:
        """Start ``threads`` loops. Deliveries are processed concurrently (most of the
        time is spent waiting on the store, the target and Sentry); two threads act like
        two replicas would, which the journal's idempotency key already makes safe."""
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"webhook-inbox-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batches, then stop."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

"""``sentry-bot serve``: the HTTP app and the scheduler in one process.

One process holds: uvicorn serving :func:`~bot.interfaces.http.app.create_app` (main
thread, owning SIGTERM/SIGINT), the leader-gated scheduler of ``sentry-bot run``
(APScheduler threads), and the webhook inbox worker (one thread). All three share one
lease elector: only the leader polls, executes, and processes recorded webhooks; every
replica receives webhooks and answers ``/metrics`` and the health probes.

Shutdown on SIGTERM: uvicorn stops accepting and finishes in-flight requests, then the
inbox worker finishes its batch, the scheduler finishes its step and releases the
lease, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import uvicorn

from bot.adapters.counting_transport import CountingTransport
from bot.adapters.prometheus import Telemetry
from bot.interfaces.app import App
from bot.interfaces.http.app import create_app
from bot.interfaces.http.parts import HttpParts, build_http_parts
from bot.interfaces.scheduler import BotScheduler, CycleSteps, SchedulerConfig, build_scheduler
from bot.interfaces.webhook_worker import InboxWorker
from bot.interfaces.wiring import PartsCache, build_cycle, build_delivery
from bot.pipeline.inbox import Claimed
from bot.pipeline.webhook import BatchReport, process_batch

log = logging.getLogger(__name__)


class TimedSteps(CycleSteps):
    """The real steps, the poll step timed into ``cycle_duration_seconds``."""

    def __init__(self, app: App, telemetry: Telemetry) -> None:
        super().__init__(lambda: build_cycle(app), lambda: build_delivery(app))
        self._timed_poll = telemetry.timed_poll(super().poll)

    def poll(self) -> str:
        return self._timed_poll()


@dataclass
class Service:
    """The parts of one ``serve`` process, wired and not yet started."""

    app: App
    telemetry: Telemetry
    scheduler: BotScheduler
    worker: InboxWorker
    parts: HttpParts


def build_service(
    app: App, *, config: SchedulerConfig | None = None, idle_seconds: float = 0.5
) -> Service:
    """Wire the scheduler, the inbox worker and the HTTP parts around one elector."""
    telemetry = Telemetry()
    telemetry.add_store(app.store, app.clock)
    if app.sentry_transport is None:
        app.sentry_transport = CountingTransport(telemetry.sentry_request)
    scheduler = build_scheduler(app, steps=TimedSteps(app, telemetry), config=config)
    elector = scheduler.elector

    cache = PartsCache(app)

    def process(batch: Sequence[Claimed]) -> BatchReport:
        return process_batch(cache.get(), batch)

    worker = InboxWorker(
        app.store,
        process,
        lambda: elector.is_leader,
        app.clock,
        idle_seconds=idle_seconds,
        # SQLite has one writer and no SKIP LOCKED: one thread; PostgreSQL: several.
        threads=1 if app.store.is_sqlite else 4,
    )
    telemetry.track_leader(lambda: elector.is_leader)
    parts = build_http_parts(app, elector, telemetry, wake_inbox=worker.wake)
    return Service(app, telemetry, scheduler, worker, parts)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: an ephemeral port, read back from the socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: App, *, host: str = "0.0.0.0", port: int = 8080, log_level: str = "info") -> int:
    """Run until SIGTERM/SIGINT; return the exit code (0 after a clean stop)."""
    service = build_service(app)
    sock = bind(host, port)
    bound = sock.getsockname()
    config = uvicorn.Config(
        create_app(service.parts),
        log_level=log_level.lower(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    restore = _quiet_signals(server)
    service.scheduler.start()
    service.worker.start()
    log.info("serving on http://%s:%s (webhooks at /hooks/sentry)", bound[0], bound[1])
    try:
        server.run(sockets=[sock])
    finally:
        service.worker.stop()
        service.scheduler.stop()
        sock.close()
        restore()
    return 0


def _quiet_signals(server: uvicorn.Server) -> Callable[[], None]:
    """SIGTERM/SIGINT handlers that only ask uvicorn to exit.

    uvicorn handles the signals while it runs, then restores the previous handlers and
    raises the signal again "to trigger the expected behaviour" — with Python's default
    handler that kills the process before the scheduler could finish its step and
    release the lease. With these handlers in place that re-raise is harmless.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore

"""``sentry-bot run``: the long-running scheduler, one leader among replicas.

Four jobs, each at its own interval (``BOT_*_INTERVAL_SECONDS``): ``poll`` (poll, track,
triage, match, plan), ``lifecycle`` (quiet clock, resolve), ``fixlinks`` (find fixing
PRs) and ``outbox`` (deliver notifications). APScheduler runs them with
``max_instances=1`` and ``coalesce=True``, so a job never overlaps itself and a backlog
of missed ticks collapses into one run. Every job first acquires or renews the
leadership lease (:mod:`bot.interfaces.leader`); a replica that is not the leader skips
the step. A fifth, tiny job renews the lease every ``ttl / 3`` so a long step never
loses leadership halfway through. Should a step outlive a lost lease anyway (store
unreachable for a whole TTL), the journal's idempotency key and the run claim still
keep any remediation from executing twice.

After each job the replica writes a heartbeat row (``bot_setting`` key
``heartbeat:<instance>``, see :mod:`bot.interfaces.heartbeat`); ``sentry-bot health`` reads it.

SIGTERM / SIGINT set a stop event: no new step starts, the running one finishes
(``shutdown(wait=True)``), the lease is released so another replica takes over at
once, and :func:`run_scheduler` returns 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.adapters.selfmon import monitored
from bot.clock import Clock
from bot.errors import BotError
from bot.interfaces.app import App
from bot.interfaces.heartbeat import JobResult, write_heartbeat
from bot.interfaces.leader import LeaseElector, default_holder
from bot.interfaces.wiring import build_cycle, build_delivery
from bot.pipeline.cycle import poll_step
from bot.pipeline.cycle_report import CycleReport
from bot.pipeline.parts import CycleParts, DeliveryParts
from bot.pipeline.steps import fixlinks_step, lifecycle_step, outbox_step
from bot.settings import Settings
from bot.store.db import Store

log = logging.getLogger(__name__)

JOBS = ("poll", "lifecycle", "fixlinks", "outbox")


class Steps(Protocol):
    """What the scheduler runs; each returns a one-line summary for logs and heartbeat."""

    def poll(self) -> str: ...

    def lifecycle(self) -> str: ...

    def fixlinks(self) -> str: ...

    def outbox(self) -> str: ...


@dataclass(frozen=True)
class SchedulerConfig:
    """Intervals per job (seconds), the lease TTL and APScheduler's misfire grace."""

    intervals: Mapping[str, float]
    lease_ttl: timedelta = timedelta(seconds=60)
    misfire_grace_seconds: int = 30
    run_at_start: bool = True  # first run of each job right away, not one interval later

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerConfig:
        """The intervals from ``BOT_{POLL,LIFECYCLE,FIXLINK,OUTBOX}_INTERVAL_SECONDS``."""
        return cls(
            intervals={
                "poll": settings.poll_interval_seconds,
                "lifecycle": settings.lifecycle_interval_seconds,
                "fixlinks": settings.fixlink_interval_seconds,
                "outbox": settings.outbox_interval_seconds,
            }
        )

    @property
    def renew_seconds(self) -> float:
        return self.lease_ttl.total_seconds() / 3


class BotScheduler:
    """The jobs of one replica: leadership check, step, heartbeat."""

    def __init__(
        self,
        store: Store,
        steps: Steps,
        elector: LeaseElector,
        clock: Clock,
        config: SchedulerConfig,
    ) -> None:
        self.store = store
        self.steps = steps
        self.elector = elector
        self.clock = clock
        self.config = config
        self.instance = elector.holder
        self.stopping = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._heartbeat_lock = threading.Lock()
        self._was_leader = False

    def _lead(self) -> bool:
        try:
            leader = self.elector.try_acquire()
        except BotError as exc:
            log.warning("leadership check failed, acting as standby: %s", exc)
            leader = False
        if leader != self._was_leader:
            log.info("%s %s leadership", self.instance, "gained" if leader else "lost")
            self._was_leader = leader
        return leader

    def run_job(self, name: str) -> JobResult:
        """One tick of job ``name``: skip unless leader, run the step, write a heartbeat.
        Never raises: a failing step is logged (and reported to Sentry when enabled)."""
        if self.stopping.is_set():
            return JobResult(name, ran=False, leader=False, summary="stopping")
        if not self._lead():
            log.debug("%s: %s is not the leader; skipping", name, self.instance)
            result = JobResult(name, ran=False, leader=False, summary="standby")
        else:
            step: Callable[[], str] = getattr(self.steps, name)
            try:
                with monitored(f"sentry-bot-{name}", self.config.intervals[name]):
                    summary = step()
                log.info("%s: %s", name, _without_prefix(name, summary))
                result = JobResult(name, ran=True, leader=True, summary=summary)
            except Exception as exc:
                log.exception("%s step failed", name)
                result = JobResult(
                    name, ran=True, leader=True, error=f"{type(exc).__name__}: {exc}"[:300]
                )
        self.heartbeat(result)
        return result

    def renew_lease(self) -> bool:
        """The lease job: keep (or take) leadership between steps."""
        return False if self.stopping.is_set() else self._lead()

    def heartbeat(self, result: JobResult) -> None:
        """Record that this replica is alive; a store failure is logged, never raised."""
        try:
            with self._heartbeat_lock:
                write_heartbeat(self.store, self.instance, self.clock, result)
        except BotError as exc:
            log.warning("heartbeat not written: %s", exc)

    def start(self) -> None:
        """Start the background scheduler with one interval job per step + the lease job."""
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=len(JOBS) + 1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.config.misfire_grace_seconds,
            },
        )
        first = {"next_run_time": datetime.now(UTC)} if self.config.run_at_start else {}
        scheduler.add_job(
            self.renew_lease,
            IntervalTrigger(seconds=self.config.renew_seconds, timezone=UTC),
            id="lease",
            **first,
        )
        for name in JOBS:
            scheduler.add_job(
                self.run_job,
                IntervalTrigger(seconds=self.config.intervals[name], timezone=UTC),
                args=[name],
                id=name,
                name=f"sentry-bot {name}",
                **first,
            )
        self._scheduler = scheduler
        scheduler.start()
        log.info(
            "scheduler started as %s (lease ttl %ss)",
            self.instance,
            self.config.lease_ttl.total_seconds(),
        )

    def stop(self) -> None:
        """Take no new step, wait for the running ones, then release the lease."""
        self.stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        try:
            self.elector.release()
        except BotError as exc:
            log.warning("lease not released (it will expire): %s", exc)
        self._was_leader = False
        log.info("scheduler stopped (%s)", self.instance)


# --- the real steps and the entry point ------------------------------------------------


@dataclass(frozen=True)
class Stages:
    """The pipeline functions the real steps run (tests pass recording ones)."""

    poll: Callable[[CycleParts], CycleReport] = poll_step
    lifecycle: Callable[[CycleParts], str] = lifecycle_step
    fixlinks: Callable[[DeliveryParts], str] = fixlinks_step
    outbox: Callable[[DeliveryParts], str] = outbox_step


class CycleSteps:
    """The real steps: each tick builds its parts afresh (:mod:`bot.interfaces.wiring`),
    then runs :func:`bot.pipeline.cycle.poll_step` or a side step of
    :mod:`bot.pipeline.steps`."""

    def __init__(
        self,
        cycle_parts: Callable[[], CycleParts],
        delivery_parts: Callable[[], DeliveryParts],
        stages: Stages | None = None,
    ) -> None:
        self.cycle_parts = cycle_parts
        self.delivery_parts = delivery_parts
        self.stages = stages or Stages()

    @classmethod
    def of(cls, app: App) -> CycleSteps:
        """The steps of ``app``, its parts built from its settings on every tick."""
        return cls(lambda: build_cycle(app), lambda: build_delivery(app))

    def poll(self) -> str:
        return _summarise(self.stages.poll(self.cycle_parts()))

    def lifecycle(self) -> str:
        return self.stages.lifecycle(self.cycle_parts())

    def fixlinks(self) -> str:
        return self.stages.fixlinks(self.delivery_parts())

    def outbox(self) -> str:
        return self.stages.outbox(self.delivery_parts())


def _without_prefix(name: str, summary: str) -> str:
    """``fix links: 0 new`` logged for job ``fixlinks`` would read ``fixlinks: fix links:
    0 new``; drop the step's own prefix when it only repeats the job's name."""
    head, sep, rest = summary.partition(": ")
    return rest if sep and head.replace(" ", "") == name else summary


def _summarise(report: CycleReport) -> str:
    """The poll's one line for the log and the heartbeat."""
    d = report.as_dict()
    plans, errors = d.get("plans"), d.get("errors")
    return (
        f"polled {d['polled']} ({d.get('new', 0)} new, {d.get('changed', 0)} "
        f"changed), {len(plans) if isinstance(plans, list) else 0} plans, "
        f"{len(errors) if isinstance(errors, list) else 0} errors"
    )


def build_scheduler(
    app: App, *, steps: Steps | None = None, config: SchedulerConfig | None = None
) -> BotScheduler:
    """The replica's scheduler (not started): its lease elector and the real steps."""
    config = config or SchedulerConfig.from_settings(app.settings)
    elector = LeaseElector(
        app.store,
        holder=default_holder(app.settings.instance_id),
        ttl=config.lease_ttl,
        clock=app.clock,
    )
    return BotScheduler(app.store, steps or CycleSteps.of(app), elector, app.clock, config)


def run_scheduler(
    app: App,
    *,
    steps: Steps | None = None,
    stop_event: threading.Event | None = None,
    config: SchedulerConfig | None = None,
) -> int:
    """Run the jobs until ``stop_event`` is set or SIGTERM/SIGINT arrives; return the exit
    code (0 after a clean stop: current step finished, lease released)."""
    bot = build_scheduler(app, steps=steps, config=config)
    stop = stop_event or threading.Event()
    restore = _install_signal_handlers(stop)
    try:
        bot.start()
        while not stop.wait(0.2):
            pass
        log.info("stop requested: finishing the current step")
    finally:
        bot.stop()
        restore()
    return 0


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    # Signal handlers can only be installed from the main thread (tests run us elsewhere).
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("already stopping; waiting for the current step to finish")
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore

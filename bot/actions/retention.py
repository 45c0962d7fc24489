"""``retention_cleanup``: delete rows older than N days, in short bounded batches.

Seed ``003_*`` RB-04 ("D1 Errors / Contention"): ``job_events`` is append-only and grows
fast; the runbook's step is one ``DELETE FROM job_events WHERE created_at <
datetime('now', '-90 days')`` typed by hand: one unbounded transaction on a hot table,
holding the database's write lock (SQLite/D1) or a million row locks (PostgreSQL) for as
long as it runs. This action does the same work the way an operator should:

- the cutoff is read ONCE from the target's own clock (``now()`` / ``datetime('now')``)
  and used by every batch and by verify, so "old" never moves during a run;
- one short transaction per batch of at most ``batch_size`` rows (candidates locked
  with ``FOR UPDATE SKIP LOCKED`` where the engine has it), a pause of ``pause_ms``
  between batches so writers get the table back, at most ``max_rows`` (the playbook's
  guard) in total per run;
- with ``archive_table`` the batch's rows are copied there first, in the same
  transaction, column by column (names from the catalog), so a row is never lost
  between archive and delete;
- a lock timeout stops the run after the batches already committed (each batch is
  complete on its own; re-running continues where it stopped);
- preview counts exactly what would go (``min(old rows, max_rows)``); verify checks that
  no row older than the cutoff remains (unless ``max_rows`` stopped the run) and that
  no newer row was touched.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar

from psycopg import sql

from bot.actions.base import (
    ActionSettings,
    Limits,
    Outcome,
    ParamValue,
    Preview,
    Verification,
    need_target,
)
from bot.actions.retention_sql import RetentionSettings, Statements, archive_sql, statements_for
from bot.actions.target import (
    Binds,
    TargetConnection,
    TargetDatabase,
    as_int,
    json_row,
    json_safe,
)
from bot.clock import Clock
from bot.errors import LockTimeout, RemediationError


def _count(conn: TargetConnection, query: sql.Composed, cutoff: object) -> int:
    rows = conn.fetch_all(query, {"cutoff": cutoff})
    return as_int(rows[0]["n"]) if rows else 0


def _below_threshold(conn: TargetConnection, q: Statements, s: RetentionSettings) -> str:
    """Why nothing should be cleaned (the table is under ``min_table_rows``), or ""."""
    if s.min_table_rows is None:
        return ""
    rows = conn.fetch_all(q.count_all)
    total = as_int(rows[0]["n"]) if rows else 0
    if total > s.min_table_rows:
        return ""
    return f"nothing to do: {s.table} has {total} rows, not over {s.min_table_rows}"


# A timestamp column's value: date/datetime from PostgreSQL and MySQL, text from SQLite.
Instant = date | str


def _stamp(value: object, s: RetentionSettings) -> Instant:
    if isinstance(value, date | str):
        return value
    # SQLite keeps any type in any column: epoch numbers compare below the text cutoff,
    # so every such row would look old. Refuse (the batch rolls back), never guess.
    raise RemediationError(
        f"{s.table}.{s.timestamp_column} holds {type(value).__name__} values, not"
        " timestamps: refusing to judge their age",
        target=s.table,
    )


def _later(a: Instant, b: Instant) -> bool:
    """``a > b`` for two values of one timestamp column (never a date against text)."""
    if isinstance(a, date) and isinstance(b, date):
        return a > b
    if isinstance(a, str) and isinstance(b, str):
        return a > b
    raise RemediationError(f"cannot compare timestamps {a!r} and {b!r} (date against text)")


def _cutoff(conn: TargetConnection, q: Statements, s: RetentionSettings) -> Instant:
    return _stamp(conn.fetch_all(q.cutoff, {"days": s.older_than_days})[0]["cutoff"], s)


def _instant(value: object) -> Instant:
    """A journaled timestamp (ISO text) as something that compares in time order."""
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)  # SQLite text timestamps compare as text by design


class RetentionCleanup:
    """Delete (optionally archive first) rows older than ``older_than_days``, batched."""

    name: ClassVar[str] = "retention_cleanup"
    settings_model: ClassVar[type[ActionSettings]] = RetentionSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        conn = need_target(conn)
        s = RetentionSettings.of(settings)
        q = statements_for(conn, s)
        cutoff = _cutoff(conn, q, s)
        small = _below_threshold(conn, q, s)
        if small:
            return Preview(summary=small, rows=[], total=0)
        old = _count(conn, q.count_old, cutoff)
        doomed = min(old, limits.max_rows)
        batches = -(-doomed // s.batch_size)
        where = f" into {s.archive_table}" if s.archive_table else ""
        summary = (
            f"would delete{where} {doomed} of {old} {s.table} rows older than"
            f" {json_safe(cutoff)} ({s.older_than_days} days) in {batches} batch(es)"
            f" of at most {s.batch_size}"
        )
        if old > limits.max_rows:
            summary += f"; {old - limits.max_rows} more remain for later runs (max_rows)"
        return Preview(
            summary=summary,
            rows=[{"cutoff": json_safe(cutoff), "old_rows": old, "would_delete": doomed}],
            total=doomed,
        )

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """One batch in the caller's transaction (the executor prefers execute_batches)."""
        conn = need_target(conn)
        s = RetentionSettings.of(settings)
        q = statements_for(conn, s)
        cutoff = _cutoff(conn, q, s)
        deleted, newest, _ = self._batch(conn, q, s, cutoff, min(s.batch_size, limits.max_rows))
        return Outcome(
            rows_affected=deleted,
            details={"cutoff": json_safe(cutoff), "batches": [deleted], "newest_deleted": newest},
        )

    def execute_batches(
        self,
        target: TargetDatabase,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
        clock: Clock,
    ) -> Outcome:
        """Batch after batch, each its own short transaction, until no old row is left,
        ``max_rows`` is reached, or a lock timeout stops it."""
        s = RetentionSettings.of(settings)
        st, lt = limits.statement_timeout_ms, limits.lock_timeout_ms
        with target.transaction(st, lt, read_only=True) as conn:
            q = statements_for(conn, s)
            cutoff = _cutoff(conn, q, s)
            newer_before = _count(conn, q.count_new, cutoff)
            small = _below_threshold(conn, q, s)
        if small:
            return Outcome(0, details={"cutoff": json_safe(cutoff), "skipped": small})
        batches: list[int] = []
        newest: Instant | None = None
        stopped = ""
        total = 0
        after: Instant | None = None
        swept = False
        while total < limits.max_rows:
            want = min(s.batch_size, limits.max_rows - total)
            try:
                with target.transaction(st, lt) as conn:
                    deleted, last, after_next = self._batch(conn, q, s, cutoff, want, after)
            except LockTimeout as exc:
                stopped = f"lock timeout after {len(batches)} batch(es): {exc}"
                break
            if deleted:
                batches.append(deleted)
                total += deleted
                newest = (
                    last
                    if newest is None or (last is not None and _later(last, newest))
                    else newest
                )
            after = after_next if after_next is not None else after
            if deleted < want:
                if swept or after is None:
                    break  # nothing old is left (or only rows a writer holds right now)
                # The keyset passed over rows a writer held: one sweep from the start.
                after, swept = None, True
            if total < limits.max_rows and s.pause_ms:
                clock.sleep(s.pause_ms / 1000)  # let writers have the table between batches
        return Outcome(
            rows_affected=total,
            details={
                "cutoff": json_safe(cutoff),
                "batches": batches,
                "max_batch": max(batches, default=0),
                "newest_deleted": json_safe(newest),
                "newer_rows_before": newer_before,
                "hit_max_rows": total >= limits.max_rows,
                "stopped": stopped,
                "archive_table": s.archive_table,
            },
        )

    def _batch(
        self,
        conn: TargetConnection,
        q: Statements,
        s: RetentionSettings,
        cutoff: Instant,
        n: int,
        after: Instant | None = None,
    ) -> tuple[int, Instant | None, Instant | None]:
        """Lock, archive (if asked) and delete up to ``n`` old rows after the keyset
        ``after``; return (deleted, newest deleted timestamp, the batch's last key)."""
        binds: Binds = {"cutoff": cutoff, "n": n}
        if after is None:
            locked = conn.fetch_all(q.lock_batch, binds)
        else:
            locked = conn.fetch_all(q.lock_after, binds | {"after_ts": after})
        if not locked:
            return 0, None, None
        ids = [r["id"] for r in locked]
        if s.archive_table:
            columns = [str(r["name"]) for r in conn.fetch_all(q.columns, {"table": s.table})]
            copied = conn.execute(archive_sql(conn, s, columns), {"ids": ids})
            if copied != len(ids):
                raise RemediationError(
                    f"archived {copied} of {len(ids)} rows into {s.archive_table}; rolled back",
                    target=s.table,
                )
        if q.returning:
            rows = conn.fetch_all(q.delete_batch, {"ids": ids, "cutoff": cutoff})
        else:
            # MySQL: no RETURNING, but the rows are locked by this transaction, so the
            # DELETE takes every one of them or something is wrong: then roll back.
            deleted = conn.execute(q.delete_batch, {"ids": ids, "cutoff": cutoff})
            if deleted != len(ids):
                raise RemediationError(
                    f"deleted {deleted} of {len(ids)} locked rows of {s.table}; rolled back",
                    target=s.table,
                )
            rows = [{"ts": r["ts"]} for r in locked]
        newest: Instant | None = None
        for r in rows:
            ts = _stamp(r["ts"], s)
            newest = ts if newest is None or _later(ts, newest) else newest
        return len(rows), newest, _stamp(locked[-1]["ts"], s)

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        conn = need_target(conn)
        s = RetentionSettings.of(settings)
        q = statements_for(conn, s)
        d = outcome.details
        if d.get("skipped"):
            return Verification(True, str(d["skipped"]))
        # An interrupted run journaled no cutoff: judge against the cutoff as of now.
        cutoff = d.get("cutoff") or json_safe(_cutoff(conn, q, s))
        old_left = _count(conn, q.count_old, cutoff)
        newer_now = _count(conn, q.count_new, cutoff)
        problems: list[str] = []
        if d.get("stopped"):
            problems.append(f"stopped early ({d['stopped']})")
        if old_left and not d.get("hit_max_rows"):
            problems.append(f"{old_left} rows older than the cutoff remain")
        newest = d.get("newest_deleted")
        if newest is not None and not _later(_instant(cutoff), _instant(newest)):
            problems.append(f"a deleted row was not older than the cutoff ({newest})")
        if newer_now < as_int(d.get("newer_rows_before", 0)):
            problems.append(f"newer rows went from {d.get('newer_rows_before')} to {newer_now}")
        details = {"old_rows_left": old_left, "newer_rows": newer_now, "cutoff": cutoff}
        if problems:
            return Verification(False, "; ".join(problems), json_row(details))
        tail = f"; {old_left} left for later runs (max_rows)" if old_left else ""
        batches = d.get("batches", [])
        n_batches = len(batches) if isinstance(batches, list) else 0
        return Verification(
            True,
            f"deleted {outcome.rows_affected} rows in {n_batches} batch(es)"
            f" (largest {d.get('max_batch', 0)}); no row older than the cutoff{tail}",
            json_row(details),
        )


ACTION = RetentionCleanup()

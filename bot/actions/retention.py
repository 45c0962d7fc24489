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

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from psycopg import sql
from pydantic import Field

from bot.actions.base import ActionSettings, Limits, Outcome, ParamValue, Preview, Verification
from bot.actions.target import Ident, TargetConnection, TargetDatabase, ident, json_safe
from bot.clock import Clock
from bot.errors import LockTimeout, RemediationError


class RetentionSettings(ActionSettings):
    table: Ident
    timestamp_column: Ident
    id_column: Ident = "id"
    older_than_days: int = Field(ge=1, le=36_500)
    batch_size: int = Field(default=1_000, ge=1, le=50_000)
    pause_ms: int = Field(default=200, ge=0, le=60_000)
    archive_table: Ident | None = None
    # Only clean a table that has grown past this many rows (RB-04: "If > 1M rows").
    min_table_rows: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class _Sql:
    """The statements one dialect needs, composed from checked identifiers."""

    cutoff: sql.Composed
    count_old: sql.Composed
    count_new: sql.Composed
    lock_batch: sql.Composed
    lock_after: sql.Composed
    delete_batch: sql.Composed
    columns: sql.Composed
    count_all: sql.Composed
    # DELETE ... RETURNING (PostgreSQL, MariaDB, SQLite 3.35+); MySQL has none.
    returning: bool = True


def _pg(s: RetentionSettings) -> _Sql:
    table, ts, pk = ident(s.table), ident(s.timestamp_column), ident(s.id_column)
    return _Sql(
        cutoff=sql.SQL("SELECT now() - make_interval(days => {d}) AS cutoff").format(
            d=sql.Placeholder("days")
        ),
        count_old=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} < {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        count_new=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} >= {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        # Oldest first, by the timestamp index a retention table has; rows a writer
        # holds are skipped, never waited on.
        lock_batch=sql.SQL(
            "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c}"
            " ORDER BY {ts} LIMIT {n} FOR UPDATE SKIP LOCKED"
        ).format(pk=pk, t=table, ts=ts, c=sql.Placeholder("cutoff"), n=sql.Placeholder("n")),
        # Keyset: the next batch starts at the last timestamp of the one before, as an
        # index range, so it never re-walks the entries earlier batches left dead
        # (without it every batch scans them all again: quadratic in the batches).
        lock_after=sql.SQL(
            "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c} AND {ts} >= {a}"
            " ORDER BY {ts} LIMIT {n} FOR UPDATE SKIP LOCKED"
        ).format(
            pk=pk,
            t=table,
            ts=ts,
            c=sql.Placeholder("cutoff"),
            n=sql.Placeholder("n"),
            a=sql.Placeholder("after_ts"),
        ),
        # The cutoff is re-checked: a row is deleted only if it is still old.
        delete_batch=sql.SQL(
            "DELETE FROM {t} WHERE {pk} = ANY({ids}) AND {ts} < {c} RETURNING {ts} AS ts"
        ).format(t=table, pk=pk, ids=sql.Placeholder("ids"), ts=ts, c=sql.Placeholder("cutoff")),
        count_all=sql.SQL("SELECT count(*) AS n FROM {t}").format(t=table),
        columns=sql.SQL(
            "SELECT attname AS name FROM pg_attribute WHERE attrelid = {t}::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
        ).format(t=sql.Placeholder("table")),
    )


def _portable(conn: TargetConnection, s: RetentionSettings) -> _Sql:
    """MySQL/MariaDB and SQLite: the same statements with the engine's clock, locking
    clause and list membership. SQLite (D1) timestamps are ``datetime('now')`` text and
    the cutoff is that same text, so ``<`` compares them in time order and uses the
    timestamp index; the file's write lock (``BEGIN IMMEDIATE``) stands in for row locks."""
    table, ts, pk = ident(s.table), ident(s.timestamp_column), ident(s.id_column)
    d = conn.dialect
    sqlite = d.name == "sqlite"
    cutoff = (
        "SELECT datetime('now', '-' || %(days)s || ' days') AS cutoff"
        if sqlite
        else "SELECT NOW(6) - INTERVAL %(days)s DAY AS cutoff"
    )
    batch = (
        "SELECT {pk} AS id, {ts} AS ts FROM {t} WHERE {ts} < {c}{after}"
        " ORDER BY {ts} LIMIT {n} {lock}"
    )
    keyset = sql.SQL(" AND {} >= {}").format(ts, sql.Placeholder("after_ts"))
    returning = d.name != "mysql"
    columns = (
        "SELECT name FROM pragma_table_xinfo(%(table)s) WHERE hidden = 0 ORDER BY cid"
        if sqlite
        else "SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %(table)s"
        " AND EXTRA NOT LIKE '%%GENERATED%%' ORDER BY ORDINAL_POSITION"
    )
    return _Sql(
        cutoff=sql.Composed([sql.SQL(cutoff)]),
        count_old=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} < {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        count_new=sql.SQL("SELECT count(*) AS n FROM {t} WHERE {ts} >= {c}").format(
            t=table, ts=ts, c=sql.Placeholder("cutoff")
        ),
        lock_batch=sql.SQL(batch).format(
            pk=pk,
            ts=ts,
            t=table,
            c=sql.Placeholder("cutoff"),
            after=sql.SQL(""),
            n=sql.Placeholder("n"),
            lock=d.skip_locked,
        ),
        lock_after=sql.SQL(batch).format(
            pk=pk,
            ts=ts,
            t=table,
            c=sql.Placeholder("cutoff"),
            after=keyset,
            n=sql.Placeholder("n"),
            lock=d.skip_locked,
        ),
        delete_batch=sql.SQL("DELETE FROM {t} WHERE {in_ids} AND {ts} < {c}{ret}").format(
            t=table,
            in_ids=d.member(pk, "ids"),
            ts=ts,
            c=sql.Placeholder("cutoff"),
            # Bare column: SQLite's RETURNING takes no alias-qualified names.
            ret=sql.SQL(" RETURNING {} AS ts").format(ts) if returning else sql.SQL(""),
        ),
        count_all=sql.SQL("SELECT count(*) AS n FROM {t}").format(t=table),
        columns=sql.Composed([sql.SQL(columns)]),
        returning=returning,
    )


def _archive_sql(conn: TargetConnection, s: RetentionSettings, columns: list[str]) -> sql.Composed:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL("INSERT INTO {archive} ({cols}) SELECT {cols} FROM {t} WHERE {in_ids}").format(
        archive=ident(s.archive_table or ""),
        cols=cols,
        t=ident(s.table),
        in_ids=conn.dialect.member(ident(s.id_column), "ids"),
    )


def _statements(conn: TargetConnection, s: RetentionSettings) -> _Sql:
    if conn.dialect.name == "postgresql":
        return _pg(s)
    if conn.dialect.name in ("mysql", "mariadb", "sqlite"):
        return _portable(conn, s)
    raise RemediationError(
        f"retention_cleanup has no {conn.dialect.name} statements", target=conn.dialect.name
    )


def _count(conn: TargetConnection, query: sql.Composed, cutoff: Any) -> int:
    rows = conn.fetch_all(query, {"cutoff": cutoff})
    return int(rows[0]["n"]) if rows else 0


def _below_threshold(conn: TargetConnection, q: _Sql, s: RetentionSettings) -> str:
    """Why nothing should be cleaned (the table is under ``min_table_rows``), or ""."""
    if s.min_table_rows is None:
        return ""
    rows = conn.fetch_all(q.count_all)
    total = int(rows[0]["n"]) if rows else 0
    if total > s.min_table_rows:
        return ""
    return f"nothing to do: {s.table} has {total} rows, not over {s.min_table_rows}"


def _cutoff(conn: TargetConnection, q: _Sql, s: RetentionSettings) -> Any:
    return conn.fetch_all(q.cutoff, {"days": s.older_than_days})[0]["cutoff"]


def _instant(value: Any) -> Any:
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
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Preview:
        s: RetentionSettings = settings
        q = _statements(conn, s)
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
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Outcome:
        """One batch in the caller's transaction (the executor prefers execute_batches)."""
        s: RetentionSettings = settings
        q = _statements(conn, s)
        cutoff = _cutoff(conn, q, s)
        deleted, newest, _ = self._batch(conn, q, s, cutoff, min(s.batch_size, limits.max_rows))
        return Outcome(
            rows_affected=deleted,
            details={"cutoff": json_safe(cutoff), "batches": [deleted], "newest_deleted": newest},
        )

    def execute_batches(
        self,
        target: TargetDatabase,
        settings: Any,
        params: dict[str, ParamValue],
        limits: Limits,
        clock: Clock,
    ) -> Outcome:
        """Batch after batch, each its own short transaction, until no old row is left,
        ``max_rows`` is reached, or a lock timeout stops it."""
        s: RetentionSettings = settings
        st, lt = limits.statement_timeout_ms, limits.lock_timeout_ms
        with target.transaction(st, lt, read_only=True) as conn:
            q = _statements(conn, s)
            cutoff = _cutoff(conn, q, s)
            newer_before = _count(conn, q.count_new, cutoff)
            small = _below_threshold(conn, q, s)
        if small:
            return Outcome(0, details={"cutoff": json_safe(cutoff), "skipped": small})
        batches: list[int] = []
        newest: Any = None
        stopped = ""
        total = 0
        after: Any = None
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
                newest = last if newest is None or (last is not None and last > newest) else newest
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
        q: _Sql,
        s: RetentionSettings,
        cutoff: Any,
        n: int,
        after: Any = None,
    ) -> tuple[int, Any, Any]:
        """Lock, archive (if asked) and delete up to ``n`` old rows after the keyset
        ``after``; return (deleted, newest deleted timestamp, the batch's last key)."""
        binds: dict[str, Any] = {"cutoff": cutoff, "n": n}
        if after is None:
            locked = conn.fetch_all(q.lock_batch, binds)
        else:
            locked = conn.fetch_all(q.lock_after, binds | {"after_ts": after})
        if not locked:
            return 0, None, None
        ids = [r["id"] for r in locked]
        if s.archive_table:
            columns = [r["name"] for r in conn.fetch_all(q.columns, {"table": s.table})]
            copied = conn.execute(_archive_sql(conn, s, columns), {"ids": ids})
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
        return len(rows), max((r["ts"] for r in rows), default=None), locked[-1]["ts"]

    def verify(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], outcome: Outcome
    ) -> Verification:
        s: RetentionSettings = settings
        q = _statements(conn, s)
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
        if newest is not None and _instant(newest) >= _instant(cutoff):
            problems.append(f"a deleted row was not older than the cutoff ({newest})")
        if newer_now < int(d.get("newer_rows_before", 0)):
            problems.append(f"newer rows went from {d.get('newer_rows_before')} to {newer_now}")
        details = {"old_rows_left": old_left, "newer_rows": newer_now, "cutoff": cutoff}
        if problems:
            return Verification(False, "; ".join(problems), json_safe(details))
        tail = f"; {old_left} left for later runs (max_rows)" if old_left else ""
        return Verification(
            True,
            f"deleted {outcome.rows_affected} rows in {len(d.get('batches', []))} batch(es)"
            f" (largest {d.get('max_batch', 0)}); no row older than the cutoff{tail}",
            json_safe(details),
        )


ACTION = RetentionCleanup()

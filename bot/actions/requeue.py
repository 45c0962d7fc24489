"""``requeue_stuck_tasks``: running rows whose owner is gone go back to pending.

Seeds ``000_*`` (BLUE-BANDED-BEE-42: a task ``running`` forever, its worker dead) and
``004_*`` bug 1 (the recovery UPDATE wrote NULL into ``started_at TIMESTAMPTZ NOT NULL``
and failed on every tick). So this action:

- only sets the columns it is told to (status, the requeue counter, the reason column on
  dead-letter, ``set_now_columns`` = ``now()``), and never writes NULL anywhere;
- picks candidates with ``FOR UPDATE SKIP LOCKED`` in bounded batches, so a worker that
  still holds its row is skipped rather than waited on or overwritten;
- re-checks status and staleness inside the UPDATE's own WHERE (compare-and-set), so a
  row that came back to life between selection and update is left alone;
- refuses (rolled back, nothing changed) when more than ``max_rows`` rows would change:
  it asks for ``max_rows + 1`` locked candidates, so the count is of rows it could
  actually change, taken under lock, in the same round trip (see bench/requeue.py);
- past ``max_requeues`` sends the row to ``failed_value`` with a reason (dead letter).

Staleness modes: ``owner_heartbeat`` (the owning worker's heartbeat is older than
``heartbeat_multiplier`` x ``lease_seconds``, or its worker row is missing) and
``lease_timeout`` (``lease_column`` older than ``timeout_seconds``). Timestamps are
compared with the target database's own ``now()``: the same clock that wrote them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from psycopg import sql
from pydantic import Field, model_validator

from bot.actions.base import ActionSettings, Limits, Outcome, ParamValue, Preview, Verification
from bot.actions.target import (
    Ident,
    TargetConnection,
    ident,
    json_safe,
    scope_filter,
    still_matching,
)
from bot.errors import RemediationError, TooManyRows


class RequeueSettings(ActionSettings):
    table: Ident
    id_column: Ident = "id"
    status_column: Ident = "status"
    running_values: tuple[str, ...] = Field(default=("running",), min_length=1)
    pending_value: str = "pending"
    failed_value: str = "failed"
    requeue_count_column: Ident | None = None
    max_requeues: int | None = Field(default=None, ge=0)
    reason_column: Ident | None = None
    dead_letter_reason: str = "max_requeues_exceeded"
    mode: Literal["owner_heartbeat", "lease_timeout"]
    # owner_heartbeat
    worker_table: Ident | None = None
    worker_id_column: Ident | None = None
    worker_key_column: Ident = "id"
    worker_heartbeat_column: Ident | None = None
    lease_seconds: float | None = Field(default=None, gt=0)
    heartbeat_multiplier: float = Field(default=2.0, ge=1)
    # lease_timeout
    lease_column: Ident | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    scope: dict[Ident, Ident] = Field(default_factory=dict)
    set_now_columns: tuple[Ident, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        heartbeat = ("worker_table", "worker_id_column", "worker_heartbeat_column", "lease_seconds")
        lease = ("lease_column", "timeout_seconds")
        wanted, unwanted = (
            (heartbeat, lease) if self.mode == "owner_heartbeat" else (lease, heartbeat)
        )
        missing = [f for f in wanted if getattr(self, f) is None]
        if missing:
            raise ValueError(f"mode {self.mode} needs: {', '.join(missing)}")
        extra = [f for f in unwanted if getattr(self, f) is not None]
        if extra:
            raise ValueError(f"mode {self.mode} does not use: {', '.join(extra)}")
        if self.max_requeues is not None and self.requeue_count_column is None:
            raise ValueError("max_requeues needs requeue_count_column")
        owned = {self.id_column, self.status_column, self.requeue_count_column, self.reason_column}
        clash = owned.intersection(self.set_now_columns)
        if clash:
            raise ValueError(f"set_now_columns may not include {sorted(c for c in clash if c)}")
        return self

    @property
    def stale_after_seconds(self) -> float:
        if self.mode == "owner_heartbeat":
            assert self.lease_seconds is not None
            return self.heartbeat_multiplier * self.lease_seconds
        assert self.timeout_seconds is not None
        return self.timeout_seconds


def _stale(conn: TargetConnection, s: RequeueSettings) -> sql.Composable:
    """The staleness condition on alias ``t`` (bind: ``stale_after_s``)."""
    older = conn.dialect.seconds_ago.format(sql.Placeholder("stale_after_s"))
    if s.mode == "owner_heartbeat":
        assert s.worker_table and s.worker_id_column and s.worker_heartbeat_column
        # Written as NOT IN over the set of live worker keys rather than NOT EXISTS: the
        # planner hashes that small set once (a hashed SubPlan), so the re-check in the
        # UPDATE costs one hash probe per row instead of one index probe. A NULL owner
        # counts as "owner missing", as it would with NOT EXISTS.
        return sql.SQL(
            "(t.{owner} IS NULL OR t.{owner} NOT IN (SELECT w.{key} FROM {workers} AS w"
            " WHERE w.{heartbeat} >= {older} AND w.{key} IS NOT NULL))"
        ).format(
            workers=ident(s.worker_table),
            key=ident(s.worker_key_column),
            owner=ident(s.worker_id_column),
            heartbeat=ident(s.worker_heartbeat_column),
            older=older,
        )
    assert s.lease_column
    return sql.SQL("t.{lease} < {older}").format(lease=ident(s.lease_column), older=older)


def _where(
    conn: TargetConnection, s: RequeueSettings, params: dict[str, ParamValue]
) -> tuple[sql.Composable, dict[str, Any]]:
    scope_sql, binds = scope_filter("t", s.scope, params)
    where = sql.SQL("t.{status} = ANY({running}) AND {stale}{scope}").format(
        status=ident(s.status_column),
        running=sql.Placeholder("running"),
        stale=_stale(conn, s),
        scope=scope_sql,
    )
    binds |= {"running": list(s.running_values), "stale_after_s": s.stale_after_seconds}
    return where, binds


def _dead(s: RequeueSettings) -> sql.Composable:
    if s.max_requeues is None or s.requeue_count_column is None:
        return sql.SQL("false")
    return sql.SQL("COALESCE(t.{c}, 0) >= {m}").format(
        c=ident(s.requeue_count_column), m=sql.Placeholder("max_requeues")
    )


def _before_columns(s: RequeueSettings) -> list[str]:
    cols = [s.status_column]
    if s.requeue_count_column:
        cols.append(s.requeue_count_column)
    if s.reason_column and s.max_requeues is not None:
        cols.append(s.reason_column)
    return cols + [c for c in s.set_now_columns if c not in cols]


COUNT_SQL = sql.SQL("SELECT count(*) AS n FROM {table} AS t WHERE {where}")

PREVIEW_SQL = sql.SQL(
    "SELECT t.{id} AS id, t.{status} AS status, {dead} AS dead_letter"
    " FROM {table} AS t WHERE {where} ORDER BY t.{id} LIMIT {limit}"
)

# One statement, one round trip per batch (PostgreSQL):
# 1. ``candidates`` locks a bounded batch, skipping rows a live worker holds, and keeps
#    their old values (the before-image) and whether each goes to the dead letter;
# 2. the UPDATE re-finds them by ctid (this transaction holds their locks, so the ctid
#    cannot move; a TID scan avoids re-scanning every running row) and re-checks status
#    and staleness in its own WHERE (compare-and-set);
# 3. RETURNING hands back the candidates' old values for exactly the rows that changed:
#    UPDATE ... FROM joins them in, so there is no second join after the UPDATE.
# Old values are aliased by their own column names, so each returned row already IS its
# before-image entry; the dead-letter flag's alias is not a valid identifier, so it cannot
# clash with a column. bench/requeue.py measures this against hand-written statements.
REQUEUE_BATCH_SQL = sql.SQL(
    "WITH candidates AS MATERIALIZED ("
    " SELECT t.ctid AS tid, {dead} AS {dead_flag}, t.{id} AS {id_alias}, {old_cols}"
    " FROM {table} AS t WHERE {where} LIMIT {limit} {skip_locked}"
    ") "
    "UPDATE {table} AS t SET {assignments} FROM candidates AS c"
    " WHERE t.ctid = ANY(ARRAY(SELECT tid FROM candidates)) AND t.ctid = c.tid AND {where}"
    " RETURNING c.{id_alias}, {returned_old}, c.{dead_flag}"
)
DEAD_FLAG = "dead letter?"


def batch_statement(
    conn: TargetConnection, s: RequeueSettings, params: dict[str, ParamValue]
) -> tuple[sql.Composed, dict[str, Any]]:
    """The per-batch requeue statement and its binds, all but ``limit`` (the caller's).

    Each returned row is ``{id_column: id, <old column>: <old text value>, ...,
    DEAD_FLAG: bool}`` for one row the statement changed. Public so bench/requeue.py can
    EXPLAIN exactly what ``execute`` runs.
    """
    where, binds = _where(conn, s, params)
    old = _before_columns(s)
    # Old values travel as PostgreSQL's own text form: lossless, already JSON-safe,
    # and far cheaper than building datetimes in Python for thousands of rows.
    old_cols = sql.SQL(", ").join(
        sql.SQL("t.{}::text AS {}").format(ident(c), sql.Identifier(c)) for c in old
    )
    dead = _dead(s)
    assignments: list[sql.Composable] = [
        sql.SQL("{} = CASE WHEN {} THEN {} ELSE {} END").format(
            ident(s.status_column), dead, sql.Placeholder("failed"), sql.Placeholder("pending")
        )
    ]
    if s.requeue_count_column:
        assignments.append(
            sql.SQL(
                "{c} = CASE WHEN {dead} THEN COALESCE(t.{c}, 0) ELSE COALESCE(t.{c}, 0) + 1 END"
            ).format(c=ident(s.requeue_count_column), dead=dead)
        )
    if s.reason_column and s.max_requeues is not None:
        assignments.append(
            sql.SQL("{r} = CASE WHEN {dead} THEN {why} ELSE t.{r} END").format(
                r=ident(s.reason_column), dead=dead, why=sql.Placeholder("reason")
            )
        )
    for column in s.set_now_columns:
        assignments.append(sql.SQL("{} = {}").format(ident(column), conn.dialect.now))
    query = REQUEUE_BATCH_SQL.format(
        dead=dead,
        dead_flag=sql.Identifier(DEAD_FLAG),
        id=ident(s.id_column),
        id_alias=sql.Identifier(s.id_column),
        old_cols=old_cols,
        table=ident(s.table),
        where=where,
        limit=sql.Placeholder("limit"),
        skip_locked=conn.dialect.skip_locked,
        assignments=sql.SQL(", ").join(assignments),
        returned_old=sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in old),
    )
    binds |= {
        "failed": s.failed_value,
        "pending": s.pending_value,
        "max_requeues": s.max_requeues,
        "reason": s.dead_letter_reason,
    }
    return query, binds


class RequeueStuckTasks:
    """Send tasks stuck in a running state with a dead owner back to pending."""

    name: ClassVar[str] = "requeue_stuck_tasks"
    settings_model: ClassVar[type[ActionSettings]] = RequeueSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()

    def preview(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Preview:
        """List (up to ``max_rows``) the rows execute would change; read-only."""
        s: RequeueSettings = settings
        where, binds = _where(conn, s, params)
        binds |= {"limit": limits.max_rows, "max_requeues": s.max_requeues}
        total = conn.fetch_all(COUNT_SQL.format(table=ident(s.table), where=where), binds)[0]["n"]
        rows = conn.fetch_all(
            PREVIEW_SQL.format(
                id=ident(s.id_column),
                status=ident(s.status_column),
                dead=_dead(s),
                table=ident(s.table),
                where=where,
                limit=sql.Placeholder("limit"),
            ),
            binds,
        )
        dead = sum(1 for r in rows if r["dead_letter"])
        summary = (
            f"would requeue {len(rows) - dead} and dead-letter {dead} of {total} stuck "
            f"row(s) in {s.table}"
        )
        if total > limits.max_rows:
            summary += f"; {total} exceeds max_rows={limits.max_rows}, execute would refuse"
        return Preview(summary=summary, rows=[json_safe(r) for r in rows])

    def execute(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Outcome:
        """Requeue (or dead-letter) every stuck row, at most ``max_rows``; else refuse.

        The before-image holds, per changed row, the id and the old values of every
        column this action sets, in PostgreSQL's text form (lossless, JSON-safe).
        """
        s: RequeueSettings = settings
        if conn.dialect.name != "postgresql":
            raise RemediationError("requeue_stuck_tasks needs a PostgreSQL target", table=s.table)
        batch_sql, binds = batch_statement(conn, s, params)
        before: list[dict[str, Any]] = []
        dead = 0
        while True:
            # Ask for one row more than max_rows allows: if it exists, the total is over
            # the cap and we refuse; the transaction rolls back, nothing changes.
            limit = min(limits.batch_size, limits.max_rows + 1 - len(before))
            rows = conn.fetch_all(batch_sql, binds | {"limit": limit})
            for row in rows:
                # The row is the before-image entry once the flag is taken out of it.
                dead += row.pop(DEAD_FLAG)
                row[s.id_column] = json_safe(row[s.id_column])
            before.extend(rows)
            if len(before) > limits.max_rows:
                raise TooManyRows(
                    f"more than max_rows={limits.max_rows} stuck rows in {s.table}",
                    table=s.table,
                )
            if len(rows) < limit:
                break
        return Outcome(
            rows_affected=len(before),
            before_image=before,
            details={
                "ids": [b[s.id_column] for b in before],
                "requeued": len(before) - dead,
                "dead_lettered": dead,
            },
        )

    def verify(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], outcome: Outcome
    ) -> Verification:
        """OK when none of the changed ids is still running with a dead owner."""
        s: RequeueSettings = settings
        ids = list(outcome.details.get("ids", []))
        if not ids:
            return Verification(ok=True, summary="nothing was changed")
        where, binds = _where(conn, s, {k: v for k, v in params.items()})
        still = still_matching(conn, s.table, s.id_column, ids, where, binds)
        if still:
            return Verification(
                ok=False,
                summary=f"{len(still)} row(s) still stuck in {s.table}",
                details={"still_stuck": still},
            )
        return Verification(ok=True, summary=f"none of the {len(ids)} requeued row(s) is stuck")


ACTION = RequeueStuckTasks()

"""``fail_orphaned_tasks``: pending/running tasks whose job row is gone become failed.

Seed ``000_*`` BLUE-BANDED-BEE-3Y: job rows were deleted while their tasks were still
``running``, so the tasks could never finish and the stuck-task monitor fired ~100 times
a day. The runbook's remedy: transition such tasks to ``failed`` with reason
``job_removed``. Plain SQL (``NOT EXISTS`` on the job table) apart from the dialect's
row-locking clause: seed 003's jobs table lives in a SQLite-compatible database.

Two statements: lock-and-read the candidates (their old values are the before-image),
then update them by id with status and orphan-hood re-checked (compare-and-set).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

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
from bot.errors import TooManyRows


class OrphanedSettings(ActionSettings):
    table: Ident = "tasks"
    id_column: Ident = "id"
    status_column: Ident = "status"
    active_values: tuple[str, ...] = Field(default=("pending", "running"), min_length=1)
    failed_value: str = "failed"
    reason_column: Ident
    reason: str = "job_removed"
    job_fk_column: Ident = "job_id"
    job_table: Ident = "jobs"
    job_key_column: Ident = "id"
    scope: dict[Ident, Ident] = Field(default_factory=dict)
    set_now_columns: tuple[Ident, ...] = ()

    @model_validator(mode="after")
    def _no_clash(self) -> Self:
        owned = {self.id_column, self.status_column, self.reason_column}
        if owned.intersection(self.set_now_columns):
            raise ValueError("set_now_columns may not include the id, status or reason column")
        return self


def _where(
    s: OrphanedSettings, params: dict[str, ParamValue]
) -> tuple[sql.Composable, dict[str, Any]]:
    scope_sql, binds = scope_filter("t", s.scope, params)
    where = sql.SQL(
        "t.{status} = ANY({active}) AND t.{fk} IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM {jobs} AS j WHERE j.{key} = t.{fk}){scope}"
    ).format(
        status=ident(s.status_column),
        active=sql.Placeholder("active"),
        fk=ident(s.job_fk_column),
        jobs=ident(s.job_table),
        key=ident(s.job_key_column),
        scope=scope_sql,
    )
    return where, binds | {"active": list(s.active_values)}


def _old_columns(s: OrphanedSettings) -> list[str]:
    cols = [s.status_column, s.reason_column, s.job_fk_column]
    return cols + [c for c in s.set_now_columns if c not in cols]


SELECT_SQL = sql.SQL(
    "SELECT t.{id} AS id, {old_cols} FROM {table} AS t WHERE {where} ORDER BY t.{id} LIMIT {limit}"
)

UPDATE_SQL = sql.SQL(
    "UPDATE {table} AS t SET {assignments} WHERE t.{id} = ANY({ids}) AND {where}"
    " RETURNING t.{id} AS id"
)


class FailOrphanedTasks:
    """Fail tasks left pending/running after their job row was deleted."""

    name: ClassVar[str] = "fail_orphaned_tasks"
    settings_model: ClassVar[type[ActionSettings]] = OrphanedSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()

    def _select(
        self,
        conn: TargetConnection,
        s: OrphanedSettings,
        params: dict[str, ParamValue],
        limit: int,
        *,
        lock: bool,
    ) -> list[dict[str, Any]]:
        where, binds = _where(s, params)
        old = _old_columns(s)
        query = SELECT_SQL.format(
            id=ident(s.id_column),
            old_cols=sql.SQL(", ").join(
                sql.SQL("t.{} AS {}").format(ident(c), sql.Identifier(f"c{i}"))
                for i, c in enumerate(old)
            ),
            table=ident(s.table),
            where=where,
            limit=sql.Placeholder("limit"),
        )
        if lock:
            query = sql.Composed([query, sql.SQL(" "), conn.dialect.skip_locked])
        rows = conn.fetch_all(query, binds | {"limit": limit})
        return [{s.id_column: r["id"]} | {c: r[f"c{i}"] for i, c in enumerate(old)} for r in rows]

    def preview(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Preview:
        """List (up to ``max_rows``) the orphaned tasks execute would fail."""
        s: OrphanedSettings = settings
        rows = self._select(conn, s, params, limits.max_rows + 1, lock=False)
        summary = f"would fail {min(len(rows), limits.max_rows)} orphaned task(s) in {s.table}"
        if len(rows) > limits.max_rows:
            summary += f"; more than max_rows={limits.max_rows}, execute would refuse"
        return Preview(summary=summary, rows=[json_safe(r) for r in rows[: limits.max_rows]])

    def execute(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], limits: Limits
    ) -> Outcome:
        """Fail every orphaned task with ``reason`` (at most ``max_rows``; else refuse)."""
        s: OrphanedSettings = settings
        rows = self._select(conn, s, params, limits.max_rows + 1, lock=True)
        if len(rows) > limits.max_rows:
            raise TooManyRows(
                f"more than max_rows={limits.max_rows} orphaned tasks in {s.table}",
                table=s.table,
            )
        if not rows:
            return Outcome(rows_affected=0, details={"ids": []})
        where, binds = _where(s, params)
        assignments = [
            sql.SQL("{} = {}").format(ident(s.status_column), sql.Placeholder("failed")),
            sql.SQL("{} = {}").format(ident(s.reason_column), sql.Placeholder("reason")),
        ] + [sql.SQL("{} = {}").format(ident(c), conn.dialect.now) for c in s.set_now_columns]
        changed = conn.fetch_all(
            UPDATE_SQL.format(
                table=ident(s.table),
                assignments=sql.SQL(", ").join(assignments),
                id=ident(s.id_column),
                ids=sql.Placeholder("ids"),
                where=where,
            ),
            binds
            | {
                "failed": s.failed_value,
                "reason": s.reason,
                "ids": [r[s.id_column] for r in rows],
            },
        )
        changed_ids = {r["id"] for r in changed}
        before = [json_safe(r) for r in rows if r[s.id_column] in changed_ids]
        return Outcome(
            rows_affected=len(before),
            before_image=before,
            details={"ids": [b[s.id_column] for b in before], "reason": s.reason},
        )

    def verify(
        self, conn: TargetConnection, settings: Any, params: dict[str, ParamValue], outcome: Outcome
    ) -> Verification:
        """OK when none of the failed ids is still active with its job missing."""
        s: OrphanedSettings = settings
        ids = list(outcome.details.get("ids", []))
        if not ids:
            return Verification(ok=True, summary="nothing was changed")
        where, binds = _where(s, params)
        still = still_matching(conn, s.table, s.id_column, ids, where, binds)
        if still:
            return Verification(
                ok=False,
                summary=f"{len(still)} orphaned task(s) still active in {s.table}",
                details={"still_active": still},
            )
        return Verification(ok=True, summary=f"{len(ids)} orphaned task(s) now failed")


ACTION = FailOrphanedTasks()

"""``fail_orphaned_tasks``: pending/running tasks whose job row is gone become failed.

Seed ``000_*`` BLUE-BANDED-BEE-3Y: job rows were deleted while their tasks were still
``running``, so the tasks could never finish and the stuck-task monitor fired ~100 times
a day. The runbook's remedy: transition such tasks to ``failed`` with reason
``job_removed``. Plain SQL (``NOT EXISTS`` on the job table) apart from the dialect's
row-locking clause: seed 003's jobs table lives in a SQLite-compatible database.

The work is the catalog-aware state transition (:mod:`bot.actions.transition`): one
statement per batch locks the candidates (``SKIP LOCKED``), updates them by primary key
with status and orphan-hood re-checked (compare-and-set), values cast to each column's
own type; the preview runs that statement and rolls it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Self

from psycopg import sql
from pydantic import Field, model_validator

from bot.actions import transition
from bot.actions.base import (
    ActionSettings,
    Limits,
    Outcome,
    ParamValue,
    Preview,
    Verification,
    need_target,
)
from bot.actions.target import Ident, TargetConnection, ident, scope_filter
from bot.actions.transition import Assign, TransitionSpec
from bot.actions.transition_spec import remembered


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


@remembered
def spec_for(
    conn: TargetConnection, s: OrphanedSettings, params: dict[str, ParamValue]
) -> TransitionSpec:
    """The transition: active tasks whose job row is gone -> failed with ``reason``."""
    scope_sql, binds = scope_filter("t", s.scope, params)
    where = sql.SQL(
        "{active} AND t.{fk} IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM {jobs} AS j WHERE j.{key} = t.{fk}){scope}"
    ).format(
        active=transition.one_of("t", s.status_column, s.active_values, binds, "active"),
        fk=ident(s.job_fk_column),
        jobs=ident(s.job_table),
        key=ident(s.job_key_column),
        scope=scope_sql,
    )
    assignments = {
        s.status_column: Assign("value", s.failed_value),
        s.reason_column: Assign("value", s.reason),
    } | {c: Assign("now") for c in s.set_now_columns}
    return TransitionSpec(
        table=s.table,
        id_column=s.id_column,
        where=where,
        binds=binds,
        set=assignments,
        also_image=(s.job_fk_column,),
    )


class FailOrphanedTasks:
    """Fail tasks left pending/running after their job row was deleted."""

    name: ClassVar[str] = "fail_orphaned_tasks"
    settings_model: ClassVar[type[ActionSettings]] = OrphanedSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    preview_executes: ClassVar[bool] = True

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        """What execute would fail, proved by running it and rolling it back."""
        conn = need_target(conn)
        spec = spec_for(conn, OrphanedSettings.of(settings), params)
        return transition.preview(conn, spec, limits, verb="fail", dead_verb="")

    def run_each_in(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[dict[str, ParamValue]],
        limits: Limits,
    ) -> list[tuple[Preview, Outcome]]:
        """:meth:`execute` for several runs in the caller's transaction, each result also
        as its preview (storm mode, see :class:`~bot.actions.base.SharesTransaction`)."""
        s = OrphanedSettings.of(settings)
        done = transition.run_each_in(
            conn,
            [spec_for(conn, s, params) for params in runs],
            limits,
            verb="fail",
            dead_verb="",
        )
        for _, outcome in done:
            outcome.details["reason"] = s.reason
        return done

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """Fail every orphaned task with ``reason`` (at most ``max_rows``; else refuse)."""
        conn = need_target(conn)
        s = OrphanedSettings.of(settings)
        outcome = transition.execute(conn, spec_for(conn, s, params), limits)
        outcome.details["reason"] = s.reason
        return outcome

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        """OK when none of the failed ids is still active with its job missing."""
        return self.verify_many(need_target(conn), settings, [(params, outcome)])[0]

    def verify_many(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[tuple[dict[str, ParamValue], Outcome]],
    ) -> list[Verification]:
        """:meth:`verify` for several runs, their reads sent together (storm mode)."""
        s = OrphanedSettings.of(settings)
        found = transition.changed_still_matching(
            conn, [(spec_for(conn, s, params), outcome) for params, outcome in runs]
        )
        verdicts: list[Verification] = []
        for changed, still in found:
            if not changed:
                verdicts.append(Verification(ok=True, summary="nothing was changed"))
            elif still:
                summary = f"{len(still)} orphaned task(s) still active in {s.table}"
                verdicts.append(Verification(False, summary, {"still_active": still}))
            else:
                verdicts.append(
                    Verification(ok=True, summary=f"{changed} orphaned task(s) now failed")
                )
        return verdicts


ACTION = FailOrphanedTasks()

"""``requeue_stuck_tasks``: running rows whose owner is gone go back to pending.

Seeds ``000_*`` (BLUE-BANDED-BEE-42: a task ``running`` forever, its worker dead) and
``004_*`` bug 1 (the recovery UPDATE wrote NULL into ``started_at TIMESTAMPTZ NOT NULL``
and failed on every tick); issue #13 (real queues: procrastinate, pg-boss,
graphile-worker). The work is a catalog-aware state transition
(:mod:`bot.actions.transition`): rows by primary key, values cast to each column's own
type, NULL refused for NOT NULL columns, ``FOR UPDATE SKIP LOCKED`` candidates with the
condition re-checked in the UPDATE (compare-and-set), bounded batches, refusal (rolled
back) past ``max_rows``, a preview that runs the very statement and rolls it back.

Two ways to write the settings:

- **explicit** (queue packs): ``status_column``/``running_values`` (optional), ``stale``
  (``owner_heartbeat`` | ``lease`` | ``session_gone``, plus ``age``, which alone needs a
  stated ``no_liveness_signal``), ``set``, ``cap`` + ``dead_letter_set``, ``companions``,
  or ``call`` (the queue's own SQL function, once per stuck row);
- **legacy** (the seed playbooks): ``mode: owner_heartbeat | lease_timeout`` with
  ``pending_value``, ``failed_value``, ``requeue_count_column``, ``max_requeues``,
  ``reason_column``, ``dead_letter_reason``, ``set_now_columns``; compiled into the same
  transition (status, counter + 1, reason on dead-letter, ``now()`` columns).

Timestamps are compared with the target database's own ``now()``: the same clock that
wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Self

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
from bot.actions.dialect import dialect_for
from bot.actions.target import Binds, Ident, TargetConnection, scope_filter
from bot.actions.transition import Assign, TransitionSpec, optional_scope_filter, parse_set
from bot.actions.transition_settings import (
    Age,
    Call,
    Cap,
    Companion,
    OwnerHeartbeat,
    SetValue,
    Staleness,
    cap_condition,
    stale_condition,
)
from bot.actions.transition_spec import remembered

_LEGACY_HEARTBEAT = ("worker_table", "worker_id_column", "worker_heartbeat_column", "lease_seconds")
_LEGACY_LEASE = ("lease_column", "timeout_seconds")
_LEGACY_ONLY = (
    "pending_value",
    "failed_value",
    "requeue_count_column",
    "max_requeues",
    "reason_column",
    "dead_letter_reason",
)


class RequeueSettings(ActionSettings):
    table: Ident
    id_column: Ident = "id"
    status_column: Ident | None = None
    running_values: tuple[str, ...] = Field(default=(), max_length=50)
    # --- explicit form -----------------------------------------------------------------
    stale: Staleness | None = None
    set: dict[Ident, SetValue] = Field(default_factory=dict, max_length=50)
    cap: Cap | None = None
    dead_letter_set: dict[Ident, SetValue] = Field(default_factory=dict, max_length=50)
    companions: tuple[Companion, ...] = Field(default=(), max_length=4)
    call: Call | None = None
    # Narrow by an extracted parameter when it was extracted; no filter when it was not.
    optional_scope: dict[Ident, Ident] = Field(default_factory=dict)
    # --- legacy form (seed playbooks) ----------------------------------------------------
    mode: Literal["owner_heartbeat", "lease_timeout"] | None = None
    pending_value: str | None = None
    failed_value: str | None = None
    requeue_count_column: Ident | None = None
    max_requeues: int | None = Field(default=None, ge=0)
    reason_column: Ident | None = None
    dead_letter_reason: str | None = None
    worker_table: Ident | None = None
    worker_id_column: Ident | None = None
    worker_key_column: Ident = "id"
    worker_heartbeat_column: Ident | None = None
    lease_seconds: float | None = Field(default=None, gt=0)
    heartbeat_multiplier: float = Field(default=2.0, ge=1)
    lease_column: Ident | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    # --- both ----------------------------------------------------------------------------
    scope: dict[Ident, Ident] = Field(default_factory=dict)
    set_now_columns: tuple[Ident, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode is not None:
            self._check_legacy()
        else:
            self._check_explicit()
        parse_set(self.set, where="set")
        parse_set(self.dead_letter_set, where="dead_letter_set")
        if self.status_column is not None and not self.running_values:
            raise ValueError("status_column needs running_values")
        if self.running_values and self.status_column is None:
            raise ValueError("running_values needs status_column")
        return self

    def _check_legacy(self) -> None:
        explicit = [f for f in ("stale", "cap", "call") if getattr(self, f) is not None]
        explicit += [f for f in ("set", "dead_letter_set", "companions") if getattr(self, f)]
        if explicit:
            raise ValueError(f"mode (legacy form) cannot be combined with {', '.join(explicit)}")
        wanted, unwanted = (
            (_LEGACY_HEARTBEAT, _LEGACY_LEASE)
            if self.mode == "owner_heartbeat"
            else (_LEGACY_LEASE, _LEGACY_HEARTBEAT)
        )
        missing = [f for f in wanted if getattr(self, f) is None]
        if missing:
            raise ValueError(f"mode {self.mode} needs: {', '.join(missing)}")
        extra = [f for f in unwanted if getattr(self, f) is not None]
        if extra:
            raise ValueError(f"mode {self.mode} does not use: {', '.join(extra)}")
        if self.max_requeues is not None and self.requeue_count_column is None:
            raise ValueError("max_requeues needs requeue_count_column")
        status = self.status_column or "status"
        owned = {self.id_column, status, self.requeue_count_column, self.reason_column}
        clash = owned.intersection(self.set_now_columns)
        if clash:
            raise ValueError(f"set_now_columns may not include {sorted(c for c in clash if c)}")

    def _check_explicit(self) -> None:
        legacy = [
            f for f in (*_LEGACY_HEARTBEAT, *_LEGACY_LEASE, *_LEGACY_ONLY) if getattr(self, f)
        ]
        if legacy:
            raise ValueError(
                f"{', '.join(legacy)} belong to the legacy form (with mode); "
                "use stale/set/cap/dead_letter_set"
            )
        if self.stale is None:
            raise ValueError("requeue_stuck_tasks needs stale (or the legacy mode)")
        if self.call is not None:
            if self.set or self.dead_letter_set or self.cap or self.companions:
                raise ValueError("call replaces set, cap, dead_letter_set and companions")
        elif not self.set and not self.set_now_columns:
            raise ValueError("requeue_stuck_tasks needs set (or call)")
        if self.dead_letter_set and self.cap is None:
            raise ValueError("dead_letter_set needs cap")
        if self.cap is not None and not self.dead_letter_set:
            raise ValueError("cap needs dead_letter_set (what a row past its cap becomes)")

    @property
    def legacy_status(self) -> str:
        return self.status_column or "status"


def _legacy_stale(s: RequeueSettings) -> Staleness:
    if s.mode == "owner_heartbeat":
        assert s.worker_table and s.worker_id_column and s.worker_heartbeat_column
        assert s.lease_seconds is not None
        return Staleness(
            owner_heartbeat=OwnerHeartbeat(
                table=s.worker_table,
                key_column=s.worker_key_column,
                owner_column=s.worker_id_column,
                heartbeat_column=s.worker_heartbeat_column,
                seconds=s.heartbeat_multiplier * s.lease_seconds,
            )
        )
    assert s.lease_column and s.timeout_seconds is not None
    return Staleness(
        age=Age(
            column=s.lease_column,
            seconds=s.timeout_seconds,
            no_liveness_signal="legacy lease_timeout: the row's own start time is its lease",
        )
    )


@remembered
def spec_for(
    conn: TargetConnection, s: RequeueSettings, params: dict[str, ParamValue]
) -> TransitionSpec:
    """The transition these settings describe, with the scope bound from ``params``."""
    d = dialect_for(conn)
    scope_sql, binds = scope_filter("t", s.scope, params)
    opt_sql, opt_binds = optional_scope_filter("t", s.optional_scope, params)
    binds |= opt_binds
    legacy = s.mode is not None
    status = s.legacy_status if legacy else s.status_column
    running = s.running_values or (("running",) if legacy else ())
    conditions: list[sql.Composable] = []
    if status is not None:
        conditions.append(transition.one_of("t", status, running, binds, "running"))
    stale = _legacy_stale(s) if legacy else s.stale
    assert stale is not None
    conditions.extend(stale_condition(d, stale, binds))
    where = sql.Composed([sql.SQL(" AND ").join(conditions), scope_sql, opt_sql])
    live: dict[str, Assign] = {}
    dead: dict[str, Assign] = {}
    dead_when: sql.Composable | None = None
    if legacy:
        live[s.legacy_status] = Assign("value", s.pending_value or "pending")
        dead[s.legacy_status] = Assign("value", s.failed_value or "failed")
        if s.requeue_count_column:
            live[s.requeue_count_column] = Assign("increment", 1)
        if s.max_requeues is not None and s.requeue_count_column:
            dead_when = cap_condition(
                Cap(count_column=s.requeue_count_column, max=s.max_requeues), binds
            )
            if s.reason_column:
                dead[s.reason_column] = Assign(
                    "value", s.dead_letter_reason or "max_requeues_exceeded"
                )
            if s.requeue_count_column:
                # Shown in the before-image even for dead-lettered rows (left unchanged).
                dead[s.requeue_count_column] = Assign("copy", s.requeue_count_column)
    else:
        live |= parse_set(s.set, where="set")
        dead |= parse_set(s.dead_letter_set, where="dead_letter_set")
        if s.cap is not None:
            dead_when = cap_condition(s.cap, binds)
    for column in s.set_now_columns:
        live.setdefault(column, Assign("now"))
        if dead_when is not None:
            dead.setdefault(column, Assign("now"))
    return TransitionSpec(
        table=s.table,
        id_column=s.id_column,
        where=where,
        binds=binds,
        set=live,
        dead_when=dead_when,
        dead_set=dead if dead_when is not None else {},
        companions=tuple(c.spec() for c in s.companions),
        call=s.call.spec() if s.call is not None else None,
    )


class RequeueStuckTasks:
    """Send tasks stuck in a running state with a dead owner back to pending."""

    name: ClassVar[str] = "requeue_stuck_tasks"
    settings_model: ClassVar[type[ActionSettings]] = RequeueSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    # The preview runs the real statement and rolls it back (not a read-only transaction).
    preview_executes: ClassVar[bool] = True

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        """What execute would change, proved by running it and rolling it back."""
        conn = need_target(conn)
        spec = spec_for(conn, RequeueSettings.of(settings), params)
        return transition.preview(conn, spec, limits, verb="requeue", dead_verb="dead-letter")

    def run_each_in(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[dict[str, ParamValue]],
        limits: Limits,
    ) -> list[tuple[Preview, Outcome]]:
        """:meth:`execute` for several runs in the caller's transaction, each result also
        as its preview (storm mode, see :class:`~bot.actions.base.SharesTransaction`)."""
        s = RequeueSettings.of(settings)
        done = transition.run_each_in(
            conn,
            [spec_for(conn, s, params) for params in runs],
            limits,
            verb="requeue",
            dead_verb="dead-letter",
        )
        for _, outcome in done:
            outcome.details["requeued"] = outcome.details["changed"]
        return done

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """Requeue (or dead-letter) every stuck row, at most ``max_rows``; else refuse.

        The before-image holds, per changed row, its primary key and the old values of
        every column the transition sets, in the database's text form (lossless).
        """
        conn = need_target(conn)
        outcome = transition.execute(
            conn, spec_for(conn, RequeueSettings.of(settings), params), limits
        )
        outcome.details["requeued"] = outcome.details["changed"]
        return outcome

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        """OK when none of the changed rows is still stuck."""
        return self.verify_many(need_target(conn), settings, [(params, outcome)])[0]

    def verify_many(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[tuple[dict[str, ParamValue], Outcome]],
    ) -> list[Verification]:
        """:meth:`verify` for several runs, their reads sent together (storm mode)."""
        s = RequeueSettings.of(settings)
        found = transition.changed_still_matching(
            conn, [(spec_for(conn, s, params), outcome) for params, outcome in runs]
        )
        verdicts: list[Verification] = []
        for changed, still in found:
            if not changed:
                verdicts.append(Verification(ok=True, summary="nothing was changed"))
            elif still:
                summary = f"{len(still)} row(s) still stuck in {s.table}"
                verdicts.append(Verification(False, summary, {"still_stuck": still}))
            else:
                verdicts.append(
                    Verification(ok=True, summary=f"none of the {changed} requeued row(s) is stuck")
                )
        return verdicts


def batch_statement(
    conn: TargetConnection, s: RequeueSettings, params: dict[str, ParamValue]
) -> tuple[sql.Composed, Binds]:
    """The per-batch statement ``execute`` runs and its binds, all but ``limit`` (for
    bench/requeue.py's EXPLAIN)."""
    return transition.statement(conn, spec_for(conn, s, params))


ACTION = RequeueStuckTasks()

"""Playbook settings of a state transition: staleness, cap, companions, the queue's function.

These models are parsed when the playbook loads (``extra="forbid"``, identifiers
checked), and :func:`stale_condition` / :func:`cap_condition` turn them into SQL through
the dialect seam. The staleness vocabulary is small on purpose:

- ``owner_heartbeat``: the row's owner (``owner_column``) has no heartbeat newer than
  ``seconds`` in ``table`` (a NULL owner or a missing worker row counts as gone);
- ``lease``: the row's own lease ran out, ``started_column + interval_column < now()``
  (pg-boss: ``started_on + expire_in``);
- ``session_gone``: no live database session carries the owner as its
  ``application_name`` (or ``pid``), for queues that lock by session;
- ``age``: ``column`` older than ``seconds``. A fixed age knows nothing about the owner,
  so on its own it needs ``no_liveness_signal`` saying why the queue has none; beside a
  liveness signal it is only an extra guard.

Every given condition must hold (they are ANDed).
"""

from __future__ import annotations

from typing import Literal, Self

from psycopg import sql
from pydantic import Field, model_validator

from bot.actions.base import ActionSettings
from bot.actions.dialect import SqlDialect
from bot.actions.target import Binds, Ident, ident
from bot.actions.transition_spec import Assign, CallSpec, CompanionSpec, parse_assign, parse_set
from bot.json_types import JsonArray, JsonObject

# A playbook's ``set`` entry: a scalar, or a mapping/list of JSON (a ``{value: ...}``
# for a json column, or a ``{now: true}`` / ``{increment: n}`` form parse_assign reads).
SetValue = str | int | float | bool | None | JsonObject | JsonArray


class OwnerHeartbeat(ActionSettings):
    table: Ident
    key_column: Ident = "id"
    owner_column: Ident
    heartbeat_column: Ident
    seconds: float = Field(gt=0)


class Lease(ActionSettings):
    started_column: Ident
    interval_column: Ident


class SessionGone(ActionSettings):
    owner_column: Ident
    match: Literal["application_name", "pid"] = "application_name"


class Age(ActionSettings):
    column: Ident
    seconds: float = Field(gt=0)
    no_liveness_signal: str | None = Field(default=None, min_length=10, max_length=500)


class Staleness(ActionSettings):
    owner_heartbeat: OwnerHeartbeat | None = None
    lease: Lease | None = None
    session_gone: SessionGone | None = None
    age: Age | None = None

    @model_validator(mode="after")
    def _safe(self) -> Self:
        signals = [self.owner_heartbeat, self.lease, self.session_gone]
        if not any(signals) and self.age is None:
            raise ValueError("stale needs owner_heartbeat, lease, session_gone or age")
        if not any(signals) and self.age is not None and not self.age.no_liveness_signal:
            raise ValueError(
                "a fixed age alone cannot tell a dead owner from a slow one: add a liveness "
                "signal (owner_heartbeat, lease, session_gone), or say in "
                "age.no_liveness_signal why this queue has none"
            )
        return self


def stale_condition(d: SqlDialect, stale: Staleness, binds: Binds) -> list[sql.Composable]:
    """The staleness conditions on alias ``t`` (binds added to ``binds``)."""
    parts: list[sql.Composable] = []
    hb = stale.owner_heartbeat
    if hb is not None:
        binds["hb_seconds"] = hb.seconds
        # NOT IN over the set of live worker keys: the planner hashes that small set once
        # (a hashed SubPlan), so the re-check inside the UPDATE is one probe per row. A
        # NULL owner counts as gone (procrastinate sets worker_id NULL when it prunes a
        # stalled worker: procrastinate/sql/schema.sql, ON DELETE SET NULL).
        parts.append(
            sql.SQL(
                "(t.{owner} IS NULL OR t.{owner} NOT IN (SELECT w.{key} FROM {workers} AS w"
                " WHERE NOT ({older}) AND w.{key} IS NOT NULL))"
            ).format(
                owner=ident(hb.owner_column),
                key=ident(hb.key_column),
                workers=ident(hb.table),
                older=d.older_than(
                    sql.SQL("w.{}").format(ident(hb.heartbeat_column)),
                    sql.Placeholder("hb_seconds"),
                ),
            )
        )
    if stale.lease is not None:
        parts.append(
            d.lease_expired(
                sql.SQL("t.{}").format(ident(stale.lease.started_column)),
                sql.SQL("t.{}").format(ident(stale.lease.interval_column)),
            )
        )
    if stale.session_gone is not None:
        parts.append(
            sql.SQL("t.{} IS NOT NULL AND {}").format(
                ident(stale.session_gone.owner_column),
                d.session_gone(
                    sql.SQL("t.{}").format(ident(stale.session_gone.owner_column)),
                    stale.session_gone.match,
                ),
            )
        )
    if stale.age is not None:
        binds["age_seconds"] = stale.age.seconds
        parts.append(
            d.older_than(
                sql.SQL("t.{}").format(ident(stale.age.column)), sql.Placeholder("age_seconds")
            )
        )
    return parts


class Cap(ActionSettings):
    """Dead-letter a row once ``count_column`` reached ``max`` or its own ``max_column``."""

    count_column: Ident
    max: int | None = Field(default=None, ge=0)
    max_column: Ident | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.max is None) == (self.max_column is None):
            raise ValueError("cap needs exactly one of max, max_column")
        return self


def cap_condition(cap: Cap, binds: Binds) -> sql.Composable:
    """True (on alias ``t``) when the row is past its cap."""
    if cap.max_column is not None:
        return sql.SQL("COALESCE(t.{}, 0) >= t.{}").format(
            ident(cap.count_column), ident(cap.max_column)
        )
    binds["cap_max"] = cap.max
    return sql.SQL("COALESCE(t.{}, 0) >= {}").format(
        ident(cap.count_column), sql.Placeholder("cap_max")
    )


class Companion(ActionSettings):
    """A bounded update of a related row in the same statement (e.g. a queue lock row)."""

    table: Ident
    key_column: Ident = "id"
    ref_column: Ident
    match: dict[Ident, Ident] = Field(default_factory=dict)
    set: dict[Ident, SetValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _parse(self) -> Self:
        parse_set(self.set, where=f"companions[{self.table}].set")
        return self

    def spec(self) -> CompanionSpec:
        return CompanionSpec(
            self.table,
            self.key_column,
            self.ref_column,
            dict(self.match),
            parse_set(self.set, where="companion"),
        )


class Call(ActionSettings):
    """The queue's own SQL function, called once per stuck row; ``args`` are values,
    ``null``, ``{now: true}`` or ``{column: name}`` (a column of the stuck row)."""

    function: Ident
    args: tuple[SetValue, ...] = Field(max_length=20)

    @model_validator(mode="after")
    def _parse(self) -> Self:
        self.spec()
        return self

    def spec(self) -> CallSpec:
        args: list[Assign] = []
        for i, arg in enumerate(self.args):
            a = parse_assign(arg, where=f"call.args[{i}]")
            if a.kind == "increment":
                raise ValueError(f"call.args[{i}]: a function argument cannot be an increment")
            args.append(a)
        return CallSpec(self.function, tuple(args))

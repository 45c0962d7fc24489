"""The contract every built-in action implements.

An action is a small class registered under its playbook name (``requeue_stuck_tasks``
…). It gets its validated :class:`ActionSettings` (from the playbook file, trusted:
table and column names live here and are checked as identifiers at load time), the
typed parameters extracted from the Sentry event (untrusted: only ever bind
parameters), and :class:`Limits` from the playbook's guards.

- ``preview`` is read-only and says exactly which rows/backends would change.
- ``execute`` runs in ONE transaction with statement_timeout and lock_timeout, and
  rolls back (raising :class:`~bot.errors.TooManyRows`) when it would change more than
  ``limits.max_rows``. It returns the before-image of what it changed.
- ``verify`` checks, after the fact, that the remedy took effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict

from bot.actions.port import TargetConnection, TargetDatabase
from bot.clock import Clock
from bot.errors import RemediationError

ParamValue = str | int


class ActionSettings(BaseModel):
    """Base of every action's settings model: playbook-owned, so extra keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, settings: ActionSettings) -> Self:
        """``settings`` as this model; a playbook parsed for another action is a bug."""
        if not isinstance(settings, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(settings).__name__}")
        return settings


def need_target(conn: TargetConnection | None) -> TargetConnection:
    """The connection an action with ``needs_target`` is always handed (never None)."""
    if conn is None:
        raise RemediationError("this action needs a target connection")
    return conn


@dataclass(frozen=True)
class Limits:
    max_rows: int = 100
    statement_timeout_ms: int = 5_000
    lock_timeout_ms: int = 1_000
    batch_size: int = 500


@dataclass
class Preview:
    """What an action would change. ``rows`` are JSON-safe dicts (ids, states, pids)."""

    summary: str
    rows: list[dict[str, object]] = field(default_factory=list)
    # When ``rows`` is a sample (a retention run deletes too many to list), the exact
    # number of rows the run would change.
    total: int | None = None

    @property
    def count(self) -> int:
        return len(self.rows) if self.total is None else self.total


@dataclass
class Outcome:
    """What an action changed: count, before-image (JSON-safe), details for the journal."""

    rows_affected: int
    before_image: list[dict[str, object]] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


@dataclass
class Verification:
    ok: bool
    summary: str
    details: dict[str, object] = field(default_factory=dict)


class Action(Protocol):
    """One built-in action. ``conn`` is the target connection, None exactly when the
    action does not ``need_target``; ``settings`` is an instance of ``settings_model``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[ActionSettings]]
    needs_target: ClassVar[bool]
    # The typed parameters (from extraction) this action understands, by name.
    accepted_params: ClassVar[frozenset[str]]
    # True when ``preview`` runs the real statement and rolls it back (preview ≡
    # execute), so it needs a read-write transaction; others preview read-only.
    preview_executes: ClassVar[bool]

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview: ...

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome: ...

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification: ...


@runtime_checkable
class BatchedAction(Protocol):
    """An action whose work must NOT be one transaction (``retention_cleanup``: a million
    deletes in one transaction is the very thing it exists to avoid). The executor hands
    it the target itself; it opens one short transaction per batch, pausing through the
    injected clock, and returns the outcome of every committed batch."""

    def execute_batches(
        self,
        target: TargetDatabase,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
        clock: Clock,
    ) -> Outcome: ...


@runtime_checkable
class SharesTransaction(Protocol):
    """An action whose runs may share ONE target transaction (storm mode, see
    :mod:`bot.pipeline.storm`): ``execute`` changes only what its own statements touch,
    and ``run_each_in`` runs exactly those statements for several runs in the caller's
    transaction, returning what each run did as its preview and as its outcome. The
    caller journals the previews before it commits, and rolls back to its savepoint
    when a run raises (:class:`~bot.errors.RunRefused` names it)."""

    def run_each_in(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[dict[str, ParamValue]],
        limits: Limits,
    ) -> list[tuple[Preview, Outcome]]: ...

    def verify_many(
        self,
        conn: TargetConnection,
        settings: ActionSettings,
        runs: Sequence[tuple[dict[str, ParamValue], Outcome]],
    ) -> list[Verification]:
        """``verify`` for several runs in the caller's transaction, reads sent together."""
        ...


def params_used(action: Action, settings: ActionSettings) -> frozenset[str]:
    """Every extracted parameter this configured action binds: its fixed
    ``accepted_params`` plus the parameter names a ``scope`` setting maps columns to
    (``scope: {job_id: job_id}`` binds ``WHERE job_id = <param job_id>``). A playbook
    loader can check these against the playbook's ``extract`` names."""
    scope: dict[str, str] = getattr(settings, "scope", None) or {}
    optional: dict[str, str] = getattr(settings, "optional_scope", None) or {}
    return action.accepted_params | frozenset(scope.values()) | frozenset(optional.values())

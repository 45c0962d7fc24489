"""What the remediation stages share: their collaborators as ports, their result value.

The stages (:mod:`~bot.pipeline.plan` → :mod:`~bot.pipeline.execute` →
:mod:`~bot.pipeline.verify`, and :mod:`~bot.pipeline.recover` after a crash) never reach
for the application: each receives what it talks to as one of these ``Protocol``s, and
each returns a :class:`PlanOutcome`. This module imports no stage, so any module (the
cycle, the event recorder, the wiring) can name the ports without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sqlmodel import Session

from bot.actions.base import Outcome, ParamValue, Preview
from bot.actions.target import TargetDatabase
from bot.playbooks.models import Playbook
from bot.store.models import RemediationRun, TrackedIssue


class EventSink(Protocol):
    """Told about a state change worth announcing (``remediated``, ``failed``, …).

    Called inside the store transaction that records the change, with that ``session``,
    so a notification commits together with what it announces (the outbox). ``extra``
    carries the facts of the event (``reason``, ``error``, ``verify``, …).
    """

    def __call__(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Playbook | None,
        extra: dict[str, object],
        /,
    ) -> None: ...


# One event for :class:`BatchEventSink`: kind, issue, run, playbook, facts.
Event = tuple[str, TrackedIssue, RemediationRun | None, Playbook | None, dict[str, object]]


@runtime_checkable
class BatchEventSink(Protocol):
    """An :class:`EventSink` that can also take many events of one transaction at once
    (a storm's verdicts), reading and writing in bulk; the same messages as one call
    per event."""

    def record_many(self, session: Session, events: Sequence[Event], /) -> None: ...


def no_events(
    session: Session,
    kind: str,
    issue: TrackedIssue,
    run: RemediationRun | None,
    playbook: Playbook | None,
    extra: dict[str, object],
    /,
) -> None:
    """The :class:`EventSink` that announces nothing (tests, one-off CLI runs)."""
    return None


class TargetResolver(Protocol):
    """The target database named by a playbook, or None when it is not configured."""

    def __call__(self, name: str, /) -> TargetDatabase | None: ...


@dataclass
class PlanOutcome:
    """What happened to one matched issue in this cycle (for the cycle report)."""

    issue_id: str
    short_id: str
    playbook_id: str
    mode: str
    status: str
    run_id: str | None = None
    preview: Preview | None = None
    rows_affected: int | None = None
    verify: str | None = None
    note: str = ""
    params: dict[str, ParamValue] = field(default_factory=dict)


class RunExecutor(Protocol):
    """Executes one approved run exactly once (compare-and-set claim), then verifies it.

    The planning and recovery stages hand runs to the execution stage through this port
    (in practice :meth:`Executor.execute_run`, so a subclass that wraps it is honoured).
    """

    def __call__(self, run_id: str, /) -> PlanOutcome: ...


class RunVerifier(Protocol):
    """Verifies a finished run's outcome, journals the verdict and moves its issue."""

    def verify(
        self, out: PlanOutcome, run_id: str, pb: Playbook, outcome: Outcome
    ) -> PlanOutcome: ...

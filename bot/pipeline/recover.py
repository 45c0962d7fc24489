"""Crash recovery: finish what a dead process left half done, never re-run blindly.

Every non-terminal run older than its statement timeout plus a margin (so a live
executor in another process is never disturbed) is brought to a terminal state:

- ``approved``, never claimed: nothing ran; it is executed now (the claim is a
  compare-and-set, so two recovering replicas cannot both run it);
- ``running`` on PostgreSQL: the target is asked whether the journaled target
  transaction committed (``txid_status``). Committed: marked ``interrupted`` and
  verified against its journaled preview. Rolled back, or never started: handed back to
  ``approved`` (compare-and-set on its start time) and executed again;
- ``running`` elsewhere (no transaction id to ask about): ``interrupted`` and verified
  against the journaled preview, never re-executed blindly;
- ``succeeded``/``noop`` but never verified (the issue still ``remediating``): verified
  now, and announced with the verification like any run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from bot.actions.base import BatchedAction, Outcome
from bot.actions.registry import get_action
from bot.clock import Clock, ensure_utc
from bot.errors import BotError
from bot.pipeline.journal import (
    EXECUTED_OK,
    claim,
    left_behind_runs,
    reclaim_stale_running,
    stale_cutoff,
    transition_issue,
    unverified_runs,
)
from bot.pipeline.ports import PlanOutcome, RunExecutor, RunVerifier, TargetResolver
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

log = logging.getLogger(__name__)


class TargetVerdict(StrEnum):
    """Did an interrupted run's target transaction commit? (as far as the target knows)"""

    COMMITTED = "committed"
    NOT_COMMITTED = "not committed"
    IN_PROGRESS = "in progress"
    UNKNOWN = "unknown"


class Recovery:
    """The recovery stage: brings every run a crash left behind to a terminal state."""

    def __init__(
        self,
        store: Store,
        playbooks: Mapping[str, Playbook],
        targets: TargetResolver,
        clock: Clock,
        execute_run: RunExecutor,
        verifier: RunVerifier,
    ) -> None:
        self.store = store
        self.playbooks = playbooks
        self.targets = targets
        self.clock = clock
        self.execute_run = execute_run
        self.verifier = verifier

    def recover_interrupted(self) -> list[str]:
        """Finish what a crash left half done; return the ids of the runs it touched
        (see the module docstring for what happens to each kind of run)."""
        now = self.clock.now()
        recovered: list[str] = []
        with self.store.session() as session:
            rows = left_behind_runs(session)
            unverified = unverified_runs(session)
            for r in rows + unverified:
                session.expunge(r)
        for row in sorted(rows + unverified, key=lambda r: (r.created_at is None, r.created_at)):
            pb = self.playbooks.get(row.playbook_id)
            timeout = pb.guards.statement_timeout_ms if pb else 60_000
            if row.status in EXECUTED_OK:
                since = row.finished_at
                timeout += 1000 * (pb.verify.delay_seconds if pb else 0)
            elif row.status == RunStatus.RUNNING.value:
                since = row.started_at
            else:
                since = row.approved_at or row.created_at
            if since is None or ensure_utc(since) > stale_cutoff(now, timeout):
                continue  # may still be executing (or waiting to verify) in another process
            if pb is None:
                continue  # its playbook is not loaded: leave it for when it is
            try:
                if self._recover_one(row, pb, now):
                    recovered.append(row.id)
            except BotError as exc:
                log.warning("recovering run %s failed: %s", row.id[:8], exc)
        return recovered

    def _recover_one(self, row: RemediationRun, pb: Playbook, now: datetime) -> bool:
        if row.status == RunStatus.APPROVED.value:
            self.execute_run(row.id)  # claims approved -> running itself
            return True
        if row.status in EXECUTED_OK:
            out = self._outcome_of(row, pb)
            self.verifier.verify(out, row.id, pb, executed_outcome(row))
            return True
        verdict = self._target_verdict(row, pb)
        if verdict is TargetVerdict.IN_PROGRESS:
            return False  # its transaction is still open on the target: not ours yet
        if verdict is TargetVerdict.NOT_COMMITTED:
            # Nothing of it reached the target: run it again, exactly once (the CAS on
            # its start time loses to any replica that re-claimed it meanwhile).
            if row.started_at is None or not reclaim_stale_running(
                self.store, row.id, row.started_at
            ):
                return False
            transition_issue(
                self.store,
                row.issue_id,
                LifecycleState.REMEDIATING,
                f"run {row.id[:8]} was interrupted before its target transaction committed; "
                "executing it again",
                self.clock.now(),
            )
            self.execute_run(row.id)
            return True
        if not claim(self.store, row.id, row.status, RunStatus.INTERRUPTED.value, now):
            return False
        out = self._outcome_of(row, pb)
        out.rows_affected = len(journaled_outcome(pb, row).before_image)
        committed = verdict is TargetVerdict.COMMITTED
        self.verifier.verify(out, row.id, pb, journaled_outcome(pb, row))
        with self.store.session() as session:
            again = session.get(RemediationRun, row.id)
            if again is not None:
                again.status = RunStatus.INTERRUPTED.value
                if committed:
                    again.rows_affected = out.rows_affected
                again.error = (
                    "process died while running"
                    + ("; its target transaction committed" if committed else "")
                    + f"; outcome verified against the journaled preview: {out.verify}"
                )
        return True

    def _outcome_of(self, row: RemediationRun, pb: Playbook) -> PlanOutcome:
        with self.store.session() as session:
            issue = session.get(TrackedIssue, row.issue_id)
            short = issue.short_id if issue is not None else row.issue_id
        return PlanOutcome(
            row.issue_id,
            short,
            pb.id,
            row.mode,
            row.status,
            run_id=row.id,
            params=dict(row.params),
            rows_affected=row.rows_affected,
        )

    def _target_verdict(self, row: RemediationRun, pb: Playbook) -> TargetVerdict:
        """Did the interrupted run's target transaction commit?

        ``committed`` / ``not committed`` / ``in progress`` when the target can tell
        (PostgreSQL, ``txid_status`` of the journaled transaction id; no id journaled
        means the action never started), ``unknown`` otherwise.
        """
        action = get_action(pb.action.type)
        if isinstance(action, BatchedAction):
            return TargetVerdict.UNKNOWN  # many short transactions, no single id to ask about
        target = self.targets(pb.action.target or "") if action.needs_target else None
        if target is None:
            return TargetVerdict.UNKNOWN
        g = pb.guards
        with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms, read_only=True) as conn:
            if conn.dialect.name != "postgresql":
                return TargetVerdict.UNKNOWN
            if row.target_xid is None:
                return TargetVerdict.NOT_COMMITTED
            found = conn.fetch_all(
                "SELECT txid_status(%(xid)s::bigint) AS status", {"xid": row.target_xid}
            )
        status = found[0]["status"] if found else None
        if status == "committed":
            return TargetVerdict.COMMITTED
        if status == "aborted":
            return TargetVerdict.NOT_COMMITTED
        if status == "in progress":
            return TargetVerdict.IN_PROGRESS
        return TargetVerdict.UNKNOWN  # too old for the commit log: verify, never re-run


def executed_outcome(run: RemediationRun) -> Outcome:
    """A finished run's outcome as journaled when it was marked succeeded/noop."""
    image = run.before_image or {}
    rows = image.get("rows") or []
    details = image.get("details") or {}
    return Outcome(
        rows_affected=run.rows_affected or 0,
        before_image=list(rows) if isinstance(rows, list) else [],
        details=dict(details) if isinstance(details, dict) else {},
    )


def journaled_outcome(pb: Playbook, run: RemediationRun) -> Outcome:
    """What an interrupted run intended (its journaled preview) in the shape the action's
    ``verify`` reads: the row ids (``ids``) or backend pids (``pids``) it meant to change.
    Without them every verify would answer "nothing was changed" and pass vacuously."""
    rows = [r for r in run.preview.get("rows", []) if isinstance(r, dict)]
    id_column = str(getattr(pb.action.parsed_settings, "id_column", "id"))
    ids = [r.get(id_column, r.get("id")) for r in rows]
    return Outcome(
        rows_affected=len(rows),
        before_image=rows,
        details={
            "ids": [i for i in ids if i is not None],
            "pids": [r["pid"] for r in rows if "pid" in r],
        },
    )

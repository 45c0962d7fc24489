"""``notify_only``: no safe database remedy (frontend errors, code bugs).

The issue is still triaged, tracked, linked to its fix and resolved after the quiet
hours; this action just makes "we changed nothing" explicit in the journal. It needs no
target database and is handed ``conn=None``.
"""

from __future__ import annotations

from typing import ClassVar

from bot.actions.base import ActionSettings, Limits, Outcome, ParamValue, Preview, Verification
from bot.actions.target import TargetConnection


class NotifyOnlySettings(ActionSettings):
    # Optional words for the notification, e.g. the runbook to follow by hand.
    note: str | None = None


class NotifyOnly:
    """Change nothing; notify and track only."""

    name: ClassVar[str] = "notify_only"
    settings_model: ClassVar[type[ActionSettings]] = NotifyOnlySettings
    needs_target: ClassVar[bool] = False
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    preview_executes: ClassVar[bool] = False

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        """Say that nothing will change (``conn`` is ignored and may be None)."""
        note: str | None = getattr(settings, "note", None)
        summary = "notify only: no database change"
        return Preview(summary=f"{summary} ({note})" if note else summary)

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """Change nothing and report zero rows."""
        return Outcome(rows_affected=0, details={"notify_only": True})

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        """Always OK: there is nothing to verify."""
        return Verification(ok=True, summary="notify only: nothing to verify")


ACTION = NotifyOnly()

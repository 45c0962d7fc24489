"""What one quiet-hours check did: counts for the cycle report, the bench and tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class QuietReport:
    """Counts of one :meth:`~bot.pipeline.lifecycle.QuietChecker.check`.

    ``watched``: issues in a watched state; ``due``: of those, quiet long enough by the
    store's lastSeen (no request spent); ``rechecked``: due issues re-read from Sentry;
    ``events_checked``: issues asked about on an events endpoint (only those whose
    fresh lastSeen still said quiet); ``resolved`` = ``resolved_in_commit`` +
    ``resolved_plainly``; ``commit_refused``: resolved plainly because Sentry did not
    know the fix commit; ``restarted``: quiet clocks restarted by a new event;
    ``skipped_moved``: not resolved because the compare-and-set re-read saw a change;
    ``not_quiet_by_events``: lastSeen said quiet but the events endpoint had events;
    ``stopped_watching``: issues Sentry no longer returns or that someone resolved or
    archived there; ``unconfirmed``: asked to resolve but a re-read did not show them
    resolved, so nothing was recorded; ``requests``: Sentry HTTP requests this check sent.
    """

    watched: int = 0
    due: int = 0
    rechecked: int = 0
    events_checked: int = 0
    resolved: int = 0
    resolved_in_commit: int = 0
    resolved_plainly: int = 0
    commit_refused: int = 0
    restarted: int = 0
    skipped_moved: int = 0
    not_quiet_by_events: int = 0
    stopped_watching: int = 0
    unconfirmed: int = 0
    requests: int = 0
    events_fallback: str | None = None
    stopped: str | None = None
    retry_after: float | None = None
    resolved_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Plain data (JSON-ready) for the cycle report and ``status --json``."""
        return asdict(self)

    def render(self) -> str:
        """One summary line, plus a line for a fallback or an early stop."""
        lines = [
            f"quiet check: {self.watched} watched, {self.due} due, {self.resolved} resolved "
            f"({self.resolved_in_commit} in commit, {self.resolved_plainly} plainly), "
            f"{self.restarted} clocks restarted, {self.skipped_moved} moved while resolving, "
            f"{self.requests} Sentry requests"
        ]
        if self.events_fallback:
            lines.append(f"  events: {self.events_fallback}")
        if self.stopped:
            lines.append(f"  stopped early: {self.stopped}")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)

"""Backtest: replay exported issues through the matcher and count what would fire.

Nothing runs; this answers "if these playbooks had been live, which issues would each
one have acted on, and how often would typed extraction have refused a value?" — the
question to ask before moving a playbook out of shadow mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.playbooks.matcher import Matcher
from bot.sentry.models import SentryEvent, SentryIssue

NO_PLAYBOOK = "(no playbook)"


@dataclass
class PlaybookBacktest:
    """One playbook's backtest figures."""

    playbook_id: str
    priority: int
    fired: int = 0
    short_ids: list[str] = field(default_factory=list)
    shadowed: int = 0  # matched, but a higher-priority playbook won the issue
    rejections: int = 0  # rules held, typed extraction refused a value


@dataclass
class BacktestReport:
    issues: int = 0
    unmatched: list[str] = field(default_factory=list)
    rows: list[PlaybookBacktest] = field(default_factory=list)

    def row(self, playbook_id: str) -> PlaybookBacktest:
        """The figures of one playbook (KeyError if it was not part of the backtest)."""
        for r in self.rows:
            if r.playbook_id == playbook_id:
                return r
        raise KeyError(playbook_id)

    def render(self, max_ids: int = 5) -> str:
        """A plain-text table: one line per playbook, plus issues no playbook took."""
        body = [
            [
                r.playbook_id,
                str(r.priority),
                str(r.fired),
                str(r.shadowed),
                str(r.rejections),
                _ids(r.short_ids, max_ids),
            ]
            for r in self.rows
        ]
        body.append(
            [NO_PLAYBOOK, "", str(len(self.unmatched)), "", "", _ids(self.unmatched, max_ids)]
        )
        headers = ["playbook", "priority", "fires", "shadowed", "rejected", "issues"]
        return f"{format_table(headers, body)}\n{self.issues} issue(s) replayed"


def backtest(
    matcher: Matcher, issues_with_events: Iterable[tuple[SentryIssue, SentryEvent | None]]
) -> BacktestReport:
    """Evaluate every issue against every playbook; the winner is what ``match`` picks."""
    rows = {pb.id: PlaybookBacktest(pb.id, pb.priority) for pb in matcher.playbooks}
    report = BacktestReport(rows=list(rows.values()))
    for issue, event in issues_with_events:
        report.issues += 1
        winner: str | None = None
        for ex in matcher.explain(issue, event):
            row = rows[ex.playbook_id]
            if ex.rejection is not None:
                row.rejections += 1
            elif ex.matched and winner is None:
                winner = ex.playbook_id
                row.fired += 1
                row.short_ids.append(issue.short_id)
            elif ex.matched:
                row.shadowed += 1
        if winner is None:
            report.unmatched.append(issue.short_id)
    return report


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def _ids(ids: Sequence[str], limit: int) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown}, … (+{len(ids) - limit})" if len(ids) > limit else shown

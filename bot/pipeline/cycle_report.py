"""The cycle's report: what one poll step (or full cycle) did, as text or JSON.

Counts first (plans by outcome and by playbook), then bounded id lists: a cycle over
thousands of issues still prints a screenful; ``--json`` carries everything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bot.pipeline.poll import PollResult
from bot.pipeline.ports import PlanOutcome


@dataclass
class CycleReport:
    poll: PollResult | None = None
    plans: list[PlanOutcome] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    recovered_runs: list[str] = field(default_factory=list)
    resumed: int = 0  # issues a crash left undecided, decided again this cycle
    awaiting_event: int = 0  # issues waiting for their latest event (fetch budget)
    expired_approvals: int = 0
    errors: list[str] = field(default_factory=list)
    # One line each from the side steps and the deadline check, by step name.
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Everything, JSON-ready (``cycle --json``)."""
        tracked = self.poll.tracked if self.poll else None
        return {
            "polled": tracked.seen if tracked else 0,
            "new": len(tracked.new) if tracked else 0,
            "changed": len(tracked.changed) if tracked else 0,
            "unchanged": tracked.unchanged if tracked else 0,
            "regressed": self.regressed,
            "watermark": self.poll.watermark.isoformat()
            if self.poll and self.poll.watermark
            else None,
            "plans": [
                {
                    "issue": p.short_id,
                    "playbook": p.playbook_id,
                    "mode": p.mode,
                    "status": p.status,
                    "run_id": p.run_id,
                    "rows_affected": p.rows_affected,
                    "would_change": p.preview.count if p.preview else None,
                    "preview": p.preview.summary if p.preview else None,
                    "note": p.note,
                    "verify": p.verify,
                    "params": p.params,
                }
                for p in self.plans
            ],
            "unmatched": self.unmatched,
            "recovered_runs": self.recovered_runs,
            "resumed": self.resumed,
            "awaiting_event": self.awaiting_event,
            "expired_approvals": self.expired_approvals,
            "errors": self.errors,
            **self.extra,
        }

    def summary_lines(self) -> list[str]:
        """Counts first: plans by outcome and by playbook, then what else happened."""
        d = self.as_dict()
        lines = [
            f"polled {d['polled']} issues: {d['new']} new, {d['changed']} changed, "
            f"{d['unchanged']} unchanged"
        ]
        if self.plans:
            outcomes = Counter(_outcome(p) for p in self.plans)
            lines.append(
                f"plans: {len(self.plans)} ("
                + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
                + ")"
            )
            by_playbook = Counter(p.playbook_id for p in self.plans)
            lines.append("by playbook:")  # one line each: never one endless line
            lines += [f"  {n:>4}  {pb}" for pb, n in sorted(by_playbook.items())]
        if self.unmatched:
            lines.append(f"no playbook (triaged, notified, watched): {len(self.unmatched)}")
        if self.regressed:
            lines.append(f"regressed after resolve (escalated): {len(self.regressed)}")
        if self.recovered_runs:
            lines.append(f"interrupted runs recovered: {len(self.recovered_runs)}")
        if self.resumed:
            lines.append(f"undecided issues resumed after an interruption: {self.resumed}")
        if self.awaiting_event:
            lines.append(
                "waiting for their latest event (fetched in later cycles, oldest first): "
                f"{self.awaiting_event}"
            )
        if self.expired_approvals:
            lines.append(f"approvals expired: {self.expired_approvals}")
        lines += list(self.extra.values())
        if self.errors:
            lines.append(f"errors: {len(self.errors)}")
        return lines

    def render(self, *, verbose: bool = False) -> str:
        """The summary, then one block per plan, then bounded id lists and the errors."""
        lines = self.summary_lines()
        if self.plans:
            lines.append("")
        for p in self.plans:
            head = f"- {p.short_id}: playbook {p.playbook_id} [{p.mode}] → {p.status}"
            if p.rows_affected is not None and p.mode != "shadow":
                head += f", {p.rows_affected} rows changed"
            elif p.preview is not None:
                head += f", would change {p.preview.count}"
            lines.append(head)
            if p.params:
                lines.append("    params: " + ", ".join(f"{k}={v}" for k, v in p.params.items()))
            if p.preview is not None:
                lines.append(f"    preview: {p.preview.summary}")
                if verbose:
                    for row in p.preview.rows[:10]:
                        lines.append(f"      {row}")
                    if len(p.preview.rows) > 10:
                        lines.append(f"      … {len(p.preview.rows) - 10} more")
            if p.note:
                lines.append(f"    note: {p.note}")
            if p.verify:
                lines.append(f"    verify: {p.verify}")
        if self.unmatched:
            lines.append(f"no playbook: {_some(self.unmatched)}")
        if self.regressed:
            lines.append(f"regressed: {_some(self.regressed)}")
        if self.recovered_runs:
            lines.append(f"interrupted runs recovered: {_some(self.recovered_runs)}")
        for err in self.errors[:ERRORS_SHOWN]:
            lines.append(f"error: {err}")
        if len(self.errors) > ERRORS_SHOWN:
            lines.append(f"… {len(self.errors) - ERRORS_SHOWN} more errors (--json lists all)")
        return "\n".join(lines)


IDS_SHOWN = 10
ERRORS_SHOWN = 20


def _some(ids: list[str]) -> str:
    """At most IDS_SHOWN ids, then how many more (``--json`` lists them all)."""
    head = ", ".join(ids[:IDS_SHOWN])
    return head + (f" … and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else "")


def _outcome(plan: PlanOutcome) -> str:
    """A plan's outcome for the summary: its status, shadow previews named as such."""
    return "shadow preview" if plan.mode == "shadow" else plan.status

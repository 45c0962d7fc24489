"""Post-incident report: the seed's "Incident Documentation Template" from the journal.

``collect_report_facts(session, key)`` (:mod:`bot.triage.report_facts`) reads the store
(tracked issue, transitions, remediation runs, fix links, incident members) into
:class:`ReportFacts`; ``render_report(facts)``, here, turns them into Markdown.
Everything that came from Sentry, GitHub or an event is untrusted: it is flattened to
one line, truncated, and escaped (HTML entities for ``& < >``, backslashes for Markdown
syntax, ``@`` defused) before it reaches the report; link targets must be http(s).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import quote

from bot.clock import ensure_utc
from bot.safety.text import neutralise_bidi
from bot.triage.models import Category, snippet
from bot.triage.report_facts import (
    ApprovalFact,
    FixFact,
    IssueFacts,
    ReportFacts,
    RunFact,
    TransitionFact,
    collect_report_facts,
    verify_summary,
)

# The facts are re-exported: callers take both halves of the report from here.
__all__ = [
    "ApprovalFact",
    "FixFact",
    "IssueFacts",
    "ReportFacts",
    "RunFact",
    "TransitionFact",
    "action_items",
    "collect_report_facts",
    "md",
    "md_link",
    "render_report",
    "span",
    "verify_summary",
    "when",
]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#!|~])")
_OK_RUN = {"succeeded"}


def md(text: object, limit: int = 200) -> str:
    """Untrusted text as inert inline Markdown: one line, bounded, no HTML, no mentions."""
    flat = neutralise_bidi(snippet(str(text), limit))
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MD_SPECIAL.sub(r"\\\1", flat)
    return flat.replace("@", "@\u200b")  # zero-width space: no @team / @here pings


def md_link(label: str, url: str | None) -> str:
    """``[label](url)`` when url is http(s), else the escaped label alone."""
    text = md(label)
    if not url or not url.lower().startswith(("https://", "http://")):
        return text
    return f"[{text}]({quote(url, safe=':/?#=&%.-_~+,;')})"


def when(value: datetime | None) -> str:
    return ensure_utc(value).strftime("%Y-%m-%d %H:%M UTC") if value else "unknown"


def span(delta: timedelta) -> str:
    """``2 d 3 h 10 min`` (minutes resolution)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rem = divmod(minutes, 1440)
    parts = zip((days, rem // 60, rem % 60), ("d", "h", "min"), strict=True)
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 min"


# ---------------------------------------------------------------- rendering


def _summary(f: ReportFacts) -> list[str]:
    i, t = f.issue, f.triage
    severity = (t.severity.value if t else i.severity) or "untriaged"
    ended = f.resolved_at or i.last_seen
    lines = ["## Summary", ""]
    lines.append(f"- **Issue:** {md_link(i.short_id, i.permalink)} — {md(i.title)}")
    lines.append(
        f"- **Where:** project {md(i.project)}, environment {md(i.environment or 'unknown')},"
        f" level {md(i.level)}, culprit {md(i.culprit or 'unknown')}"
    )
    lines.append(f"- **Date:** {when(i.first_seen)}")
    if i.first_seen and i.last_seen:
        lines.append(
            f"- **Duration:** {span(ensure_utc(i.last_seen) - ensure_utc(i.first_seen))}"
            " (first event → last event)"
        )
    if i.first_seen and ended and f.resolved_at:
        lines.append(
            f"- **Time to resolve:** {span(ensure_utc(ended) - ensure_utc(i.first_seen))}"
            " (first event → resolved)"
        )
    lines.append(f"- **Severity:** {severity.capitalize()}")
    if t:
        # One rank per issue: its severity (which sets the deadline). The category's
        # default priority from the seed table is a property of the category, named as
        # such under Root Cause, never a second, conflicting rank in the summary.
        lines.append(
            f"- **Owner:** {md(t.team)}, respond by {when(t.response_due_at)}"
            f" ({severity} severity; {md(t.escalation_path)})"
        )
    lines.append(f"- **Impact:** {i.user_count} users affected, {i.count} events")
    lines.append(f"- **State:** {md(i.state)}")
    if f.incident_id:
        lines.append(
            f"- **Incident:** {md(f.incident_id)} — {md(f.incident_title or '')}"
            f" ({len(f.members) + 1} related issues)"
        )
    return lines


def _timeline(f: ReportFacts) -> list[str]:
    events: list[tuple[datetime, int, str]] = []
    if f.issue.first_seen:
        events.append((ensure_utc(f.issue.first_seen), 0, "Error first seen in Sentry"))
    for tr in f.transitions:
        who = f"{md(tr.issue)}: " if tr.issue and f.members else ""
        src = md(tr.from_state) if tr.from_state else "∅"
        events.append(
            (ensure_utc(tr.at), 1, f"{who}**{src} → {md(tr.to_state)}** — {md(tr.reason, 300)}")
        )
    for run in f.runs:
        if run.started:
            rows = "?" if run.rows is None else str(run.rows)
            events.append(
                (
                    ensure_utc(run.started),
                    2,
                    f"Remediation run {md(run.id)} ({md(run.playbook)}, {md(run.mode)}):"
                    f" {md(run.status)}, {rows} rows changed, verify {md(run.verify)}",
                )
            )
    for fix in f.fixes:
        if fix.found_at:
            events.append((ensure_utc(fix.found_at), 3, f"Fix linked: {_fix_label(fix)}"))
    if f.issue.last_seen:
        events.append((ensure_utc(f.issue.last_seen), 4, "Last event seen in Sentry"))
    events.sort(key=lambda e: (e[0], e[1]))
    return ["## Timeline", "", *(f"- {when(at)}: {text}" for at, _, text in events)]


def _fix_label(fix: FixFact) -> str:
    ref = f"#{fix.ref}" if fix.kind == "pr" else f"@{fix.ref[:12]}"
    label = md_link(f"{fix.repo}{ref}".replace("@", " "), fix.url)
    merged = " (merged)" if fix.merged else " (not merged)" if fix.kind == "pr" else ""
    return f"{label} {md(fix.title)}{merged}".rstrip()


def _root_cause(f: ReportFacts) -> list[str]:
    t = f.triage
    lines = ["## Root Cause", ""]
    if t is None:
        lines.append(f"Category: {md(f.issue.category or 'not triaged')}.")
        return lines
    label = t.category.value.replace("_", " ").capitalize()
    lines.append(
        f"Category: **{label}** (the seed table's default for this category is"
        f" {t.priority.value}; this issue's severity is {t.severity.value})."
    )
    lines += ["", "| Indicator | Effect | Evidence |", "|---|---|---|"]
    for ind in t.indicators:
        if ind.weight != 0 and ind.kind == "category":
            lines.append(f"| {md(ind.name)} | {md(ind.effect)} | {md(ind.evidence, 160)} |")
    return lines


def _detection(f: ReportFacts) -> list[str]:
    lines = ["## Detection", ""]
    first_tr = min((ensure_utc(tr.at) for tr in f.transitions), default=None)
    if f.issue.first_seen and first_tr:
        delay = span(first_tr - ensure_utc(f.issue.first_seen))
        lines.append(
            f"- Sentry first saw it {when(f.issue.first_seen)}; the bot tracked it"
            f" at {when(first_tr)} ({delay} later)."
        )
    if f.triage:
        why = ", ".join(f"{md(i.name)} {md(i.effect)}" for i in f.triage.deciding("severity"))
        lines.append(
            f"- Severity {f.triage.severity.value} (score {f.triage.severity_score}):"
            f" {why or 'no impact signal'}."
        )
    return lines


def _bot_actions(f: ReportFacts) -> list[str]:
    lines = ["## What the Bot Did", ""]
    if not f.runs:
        return [*lines, "No remediation ran (notify and watch only)."]
    lines += [
        "| Run | Playbook | Mode | Status | Rows changed | Verification | Started | Finished |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in f.runs:
        rows = "—" if r.rows is None else str(r.rows)
        lines.append(
            f"| {md(r.id)} | {md(r.playbook)} | {md(r.mode)} | {md(r.status)} | {rows} |"
            f" {md(r.verify)} | {when(r.started)} | {when(r.finished)} |"
        )
    total = sum(r.rows or 0 for r in f.runs if r.status in _OK_RUN)
    done = sum(1 for r in f.runs if r.status in _OK_RUN)
    lines += ["", f"{len(f.runs)} run(s), {done} succeeded, {total} row(s) changed in total."]
    return lines + _check_lines(f.runs)


def _check_lines(runs: tuple[RunFact, ...]) -> list[str]:
    """Every verification check of every run, with each sample it took."""
    lines: list[str] = []
    for r in runs:
        for c in r.checks:
            samples = ", ".join(
                f"{md(str(s.get('value')))} at {md(str(s.get('at', ''))[11:19])}"
                for s in c.get("samples", [])
                if isinstance(s, dict)
            )
            verdict = "ok" if c.get("ok") else "FAILED"
            error = f" — {md(str(c['error']), 200)}" if c.get("error") else ""
            lines.append(
                f"- Check {md(str(c.get('name')))} (run {md(r.id)}): {verdict}, expected"
                f" {md(str(c.get('expectation')))}; samples: {samples or 'none'}{error}"
            )
    return ["", "### Verification checks", "", *lines] if lines else []


def _approvals(f: ReportFacts) -> list[str]:
    """Who approved or denied which run, when and from where (refusals included)."""
    if not f.approvals:
        return []
    lines = [
        "## Approvals",
        "",
        "| When | Run | Action | Outcome | Who | From |",
        "|---|---|---|---|---|---|",
    ]
    for a in f.approvals:
        lines.append(
            f"| {when(a.at)} | {md(a.run[:8])} | {md(a.action)} | {md(a.outcome)} |"
            f" {md(a.actor, 64)} | {md(a.channel)} |"
        )
    return lines


def _fix_and_resolution(f: ReportFacts) -> list[str]:
    lines = ["## Fix", ""]
    lines += [f"- {_fix_label(x)}" for x in f.fixes] or ["No fix linked yet."]
    lines += ["", "## Resolution", ""]
    if f.resolved_at:
        quiet = ""
        if f.issue.last_seen:
            observed = ensure_utc(f.resolved_at) - ensure_utc(f.issue.last_seen)
            quiet = f"; {span(observed)} without an event since the last one"
        lines.append(
            f"Resolved {when(f.resolved_at)} after the {f.quiet_hours:g} h quiet window{quiet}."
        )
    else:
        lines.append(
            f"Not resolved yet (state {md(f.issue.state)}); the bot resolves after"
            f" {f.quiet_hours:g} quiet hours."
        )
    return lines


_CATEGORY_ACTIONS = {
    Category.CODE_BUG: "Add a regression test that reproduces the failure in {where}",
    Category.DEPENDENCY: "Pin or upgrade the failing library and cover the call in a test",
    Category.INFRASTRUCTURE: "Add health monitoring/alerting for the failing component",
    Category.CONFIGURATION: "Validate required settings at startup so this fails at deploy",
    Category.USER_INPUT: "Validate input at the boundary and answer 4xx instead of erroring",
    Category.EXTERNAL_API: "Add retry with backoff and a graceful error state around the call",
    Category.SECURITY: "Review access logs, block the source, confirm no data was exposed",
}


def action_items(f: ReportFacts) -> list[str]:
    """Follow-ups derived from the facts (hidden debt, missing fix link, tests, ...)."""
    items: list[str] = []
    done = [r for r in f.runs if r.status in _OK_RUN and (r.rows or 0) > 0]
    if len(done) >= 2:
        items.append(
            f"Hidden debt: remediated {len(done)} times — fix the root cause instead of"
            " relying on the bot"
        )
    if not f.fixes:
        items.append(f"Link the fix PR (reference {md(f.issue.short_id)} in the commit or PR)")
    items += [f"Merge the fix {_fix_label(x)}" for x in f.fixes if x.kind == "pr" and not x.merged]
    items += [
        f"Investigate run {md(r.id)}: {md(r.status)}"
        for r in f.runs
        if r.status in {"failed", "verify_failed", "interrupted"}
    ]
    if any(tr.to_state == "regressed" for tr in f.transitions):
        items.append("It came back after resolve: check the fix really shipped")
    if f.triage:
        where = md(f.issue.culprit or "the failing code path")
        items.append(_CATEGORY_ACTIONS[f.triage.category].format(where=where))
    return [f"- [ ] {item}" for item in items]


def _lessons(f: ReportFacts) -> list[str]:
    lines = ["## Lessons Learned", ""]
    first_run = min((ensure_utc(r.finished) for r in f.runs if r.finished), default=None)
    if f.issue.first_seen and first_run:
        took = span(first_run - ensure_utc(f.issue.first_seen))
        lines.append(f"- Time from first event to first remediation: {took}.")
    if f.triage:
        due, met = f.triage.response_due_at, None
        if first_run:
            met = first_run <= due
        verdict = {True: "met", False: "missed", None: "no remediation to measure"}[met]
        lines.append(f"- Response target ({span(f.triage.response_target)}): {verdict}.")
    if len(lines) == 2:
        lines.append("- Nothing measured.")
    return lines


def render_report(facts: ReportFacts) -> str:
    """The Markdown post-incident report; untrusted text is escaped and truncated."""
    title = f"# Incident Report: {md(facts.issue.short_id)} — {md(facts.issue.title, 120)}"
    sections = [
        [title],
        _summary(facts),
        _timeline(facts),
        _root_cause(facts),
        _detection(facts),
        _bot_actions(facts),
        *([_approvals(facts)] if facts.approvals else []),
        _fix_and_resolution(facts),
        ["## Action Items", "", *action_items(facts)],
        _lessons(facts),
    ]
    if facts.members:
        sections.append(
            ["## Related Issues", ""]
            + [
                f"- {md_link(m.short_id, m.permalink)} — {md(m.title)}"
                f" ({md(m.severity or 'untriaged')})"
                for m in facts.members
            ]
        )
    return "\n\n".join("\n".join(s) for s in sections) + "\n"

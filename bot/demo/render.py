"""The demo's output: the story as text an operator reads, or as one JSON object."""

from __future__ import annotations

from typing import Any

from bot.demo.sandbox import PROBES
from bot.demo.story import Story

RULE = "─" * 78


def as_json(story: Story, commands: list[str]) -> dict[str, Any]:
    """One object: ``incidents`` (the fields the README documents, then details), the
    regression, where the state is, and the follow-up commands."""
    keys = (
        "short_id",
        "playbook",
        "action",
        "rows_changed",
        "verified",
        "notified",
        "pr_comment",
        "resolved",
    )
    incidents = [
        {**{k: i[k] for k in keys}, **{k: v for k, v in i.items() if k not in keys}}
        for i in story.incidents
    ]
    return {
        "incidents": incidents,
        "regression": story.regression,
        "sandbox": {
            "target": f"embedded PostgreSQL {story.pg_version}",
            "playbook_changes": story.playbook_changes,
            **story.urls,
        },
        "state": str(story.state_path),
        "commands": commands,
    }


def _short(value: Any) -> str:
    text = "∅" if value is None else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def row_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """Rows that changed, keyed by their first column: ``id=3: status running → pending``."""
    if not before and not after:
        return ["(no rows)"]
    key = next(iter((before or after)[0]))
    old = {r[key]: r for r in before}
    new = {r[key]: r for r in after}
    lines = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k), new.get(k)
        if a is None and b is not None:
            lines.append(f"{key}={k}: (new) {_row(b)}")
        elif b is None and a is not None:
            lines.append(f"{key}={k}: {_row(a)} → gone")
        elif a is not None and b is not None and a != b:
            diffs = [f"{c} {_short(a[c])} → {_short(b.get(c))}" for c in a if a[c] != b.get(c)]
            lines.append(f"{key}={k}: " + ", ".join(diffs))
    unchanged = sum(1 for k in old if old[k] == new.get(k))
    if unchanged:
        lines.append(f"({unchanged} row(s) unchanged)")
    return lines


def _row(row: dict[str, Any]) -> str:
    return ", ".join(f"{c}={_short(v)}" for c, v in row.items())


def _first_line(text: str, width: int = 100) -> str:
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def render(story: Story, commands: list[str]) -> str:
    """The story, incident by incident, readable in a terminal."""
    by_id = {i["short_id"]: i for i in story.incidents}
    out = [
        "sentry-bot demo: the whole loop on embedded parts; nothing leaves this machine.",
        f"  target     embedded PostgreSQL {story.pg_version}, the seeds' broken states staged"
        " (a real idle session holds advisory lock 20260417)",
        f"  Sentry     FakeSentry at {story.urls.get('sentry')} (the 9 seed incidents)",
        f"  GitHub     FakeGitHub at {story.urls.get('github')} (2 merged fix PRs)",
        f"  Slack      recording webhook at {story.urls.get('webhook')}",
        "  playbooks  the shipped ones; FOR THIS SANDBOX ONLY:",
        *[f"               {c}" for c in story.playbook_changes],
        "  clock      simulated (48 quiet hours pass in an instant)",
    ]
    for arrival in story.arrivals:
        i = by_id[arrival.short_id]
        out += ["", RULE, f"{i['short_id']}  {_first_line(i['title'], 70)}"]
        out.append(f"  triage     severity {i['severity'] or '-'}, team {i['team'] or '-'}")
        if i["action"] == "notify_only" or not i["playbook"]:
            out.append(
                f"  playbook   {i['playbook'] or '(none)'}: notify only, nothing to change;"
                " tracked and watched"
            )
        else:
            out.append(f"  playbook   {i['playbook']} → {i['action']} ({i['mode']})")
            probe = PROBES.get(i["short_id"])
            out.append(f"  rows       {i['rows_changed']} changed; {probe.label if probe else ''}")
            if i["short_id"] == "API-1F" and arrival.before and not arrival.after:
                pid = arrival.before[0].get("pid")
                out.append(
                    f"               pid={pid} (role {arrival.before[0].get('role')}, "
                    f"{arrival.before[0].get('state')}) → backend terminated; lock free"
                )
            else:
                out += [
                    f"               {line}" for line in row_changes(arrival.before, arrival.after)
                ]
            verdict = "yes" if i["verified"] else "NO"
            out.append(f"  verified   {verdict}: {i['verification']}")
        if i["pr"]:
            state = "commented" if i["pr_comment"] else "not commented"
            out.append(f"  fix PR     {i['pr']} found and {state}:")
            out += [f"               {line}" for line in _comment_excerpt(i["pr_comment_text"])]
        # What the webhook got on arrival; the resolves come 49 hours later, below.
        early = [(k, t) for k, t in i["notifications"] if k not in ("resolved", "regressed")]
        for kind, text in early[:2]:
            out.append(f"  notified   [{kind}] {_first_line(text)}")
        if not early:
            out.append("  notified   nothing yet (no remedy ran; the resolve is announced)")
        errors = [line for line in arrival.cycle_lines if line.startswith("error:")]
        out += [f"  {line}" for line in errors]
    out += ["", RULE, "49 simulated hours later, no new events:"]
    out += [f"  {line}" for line in story.lifecycle]
    for i in story.incidents:
        how = f"in commit {i['resolved_in_commit'][:12]}" if i["resolved_in_commit"] else "plainly"
        mark = f"resolved {how}" if i["resolved"] else f"NOT resolved ({i['state']})"
        out.append(f"  {i['short_id']:<20} {mark}; notified: {', '.join(i['notified']) or '-'}")
    r = story.regression
    out += [
        "",
        RULE,
        f"Then {r.get('short_id')} fires again after the resolve (Sentry: "
        f"{r.get('sentry_substatus')}):",
        f"  a task is stuck again (id {r.get('stuck_task')}); the bot does not mask it silently:",
        f"  regressed and escalated: {'yes' if r.get('regressed') else 'NO'}; the remedy is "
        f"planned (would change {r.get('would_change')}) and waits for a human: "
        f"sentry-bot approve {str(r.get('awaiting_approval_run') or '-')[:8]}",
        f"  the task is still {r.get('stuck_task_after')}; nothing ran by itself",
        f"  notified: {', '.join(r.get('notified') or [])}",
        "",
        RULE,
        f"State kept in {story.state_path}. Look around:",
        *[f"  {c}" for c in commands],
    ]
    return "\n".join(out)


def _comment_excerpt(body: str) -> list[str]:
    lines = [x for x in body.splitlines() if x.strip() and not x.startswith("<!--")]
    return [_first_line(x, 96) for x in lines[:4]]


__all__ = ["as_json", "render", "row_changes"]

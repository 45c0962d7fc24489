"""The demo's story: the real bot, every vendor faked on loopback, one simulated clock.

:func:`run_story` builds the real :class:`~bot.interfaces.app.App` from explicit settings (never
from the caller's environment: a demo must not reach a real Slack or Sentry), with

* Sentry: :class:`~bot.testing.sentry.FakeSentry` served on loopback, holding the nine seed
  incidents of ``seed_incidents.json``, reached by the real ``HttpSentryClient``;
* GitHub: :class:`~bot.testing.github.FakeGitHub` on loopback with two merged fix PRs
  ("Fixes BLUE-BANDED-BEE-42", and seed 001's advisory-lock hotfix "Fixes API-1F"),
  reached by the real PyGithub adapter;
* Slack: :class:`~bot.testing.webhook.RecordingWebhook` on loopback, reached by the real
  webhook notifier;
* targets: the embedded PostgreSQL :class:`~bot.demo.sandbox.Sandbox`;
* playbooks: the shipped ones, copied with ``mode: auto`` for the sandbox (and seed
  001's idle threshold lowered from 300 s, which a demo cannot wait for).

Incidents arrive one by one and each arrival is followed by one real ``run_cycle``
(poll, triage, match, execute, verify, lifecycle, fix links, outbox); the clock then
jumps 49 hours, the lifecycle resolves what stayed quiet, and one regression follows.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from bot.clock import FakeClock, SystemClock
from bot.demo.sandbox import PROBES, Sandbox
from bot.errors import ConfigError
from bot.interfaces.app import DEMO_REPLAY, App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import run_cycle
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import (
    FixLink,
    LifecycleState,
    OutboxMessage,
    OutboxStatus,
    RemediationRun,
    Setting,
    TrackedIssue,
)
from bot.testing.github import FakeGitHub
from bot.testing.sentry import FakeSentry
from bot.testing.webhook import RecordingWebhook

PLAYBOOKS = Path(__file__).parent / "playbooks"
ORG = "acme"
GITHUB_TOKEN = "ghp_demo_" + "0" * 31
DEMO_MARK = "demo:state"
LOCK_IDLE_SECONDS = 2  # sandbox only: the shipped playbook waits for 300 s of idleness
TARGETS = ("jobs_db", "platform_db", "torrentflow_db", "api_db")
# Arrivals, each followed by one cycle. BEE-42 comes before BEE-3Y: the removed job's
# stuck tasks are first requeued (BEE-42), then failed as orphans (BEE-3Y), as seed 000
# tells it; the other incidents touch separate rows and arrive together.
ARRIVALS = (
    ("BLUE-BANDED-BEE-42",),
    ("BLUE-BANDED-BEE-3Y",),
    ("API-1F", "WORKER-2K", "WORKER-2M", "TORRENTFLOW-API-3"),
    ("BLUE-BANDED-BEE-40", "BLUE-BANDED-BEE-6C", "BLUE-BANDED-BEE-7G"),
)
ORDER = tuple(sid for group in ARRIVALS for sid in group)


@dataclass(frozen=True)
class FixPR:
    repo: str
    number: int
    title: str
    body: str
    sha: str


FIX_PRS = {
    "BLUE-BANDED-BEE-42": FixPR(
        "acme/queue-worker",
        118,
        "Fixes BLUE-BANDED-BEE-42: workers renew their lease; requeue tasks of dead workers",
        "The monitor found tasks left running by a dead worker (seed 000).",
        "9c1d5e7a2b4f6081c3e5a7b9d1f3a5c7e9b1d3f5",
    ),
    "API-1F": FixPR(
        "acme/api",
        10,
        "hotfix(jobs): xact-scoped advisory locks (unstick integrity-hash retry worker)",
        "Fixes API-1F. pg_try_advisory_lock on pooled connection A, pg_advisory_unlock on"
        " B: the lock stayed held by an idle backend (seed 001).",
        "5f0b6c1e8d2a4b6c8e0f1a3b5c7d9e1f2a4b6c8d",
    ),
}


class DemoStateError(ConfigError):
    """--state names a file that is not a demo store (never overwritten)."""


@dataclass
class Arrival:
    """One incident's arrival and the cycle that followed."""

    short_id: str
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    cycle_lines: list[str]


@dataclass
class Story:
    """Everything the renderers need, gathered once the story has run."""

    state_path: Path
    pg_version: str
    arrivals: list[Arrival] = field(default_factory=list)
    lifecycle: list[str] = field(default_factory=list)
    regression: dict[str, Any] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    playbook_changes: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)


# -- setup ---------------------------------------------------------------------------


def prepare_state(path: Path) -> None:
    """Start from an empty demo store; refuse to delete a file that is not one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        store = Store(f"sqlite:///{path}")
        try:
            with store.session() as session:
                mark = session.get(Setting, DEMO_MARK)
        except Exception:  # not a store at all (or an older one): not ours to delete
            mark = None
        finally:
            store.dispose()
        if mark is None:
            raise DemoStateError(
                f"{path} exists and is not a demo state file; choose another --state"
            )
        path.unlink()


def sandbox_playbooks(directory: Path) -> list[str]:
    """Copy the shipped playbooks into ``directory`` switched to ``mode: auto``; return
    what was changed, to be said in the output."""
    directory.mkdir(parents=True, exist_ok=True)
    changes = []
    for source in sorted(PLAYBOOKS.glob("*.yaml")):
        text = source.read_text(encoding="utf-8")
        text, n = re.subn(r"(?m)^(\s*)mode: shadow\b", r"\1mode: auto", text)
        if "min_idle_seconds: 300" in text:
            text = text.replace("min_idle_seconds: 300", f"min_idle_seconds: {LOCK_IDLE_SECONDS}")
            changes.append(
                f"{source.stem}: min_idle_seconds 300 → {LOCK_IDLE_SECONDS} (no 5-minute wait)"
            )
        (directory / source.name).write_text(text, encoding="utf-8")
        if n:
            changes.append(f"{source.stem}: mode shadow → auto")
    return changes


def _seeds() -> dict[str, dict[str, Any]]:
    """The seed issues, by short id, ready to be added to Sentry when they 'arrive'."""
    replay = json.loads(DEMO_REPLAY.read_text(encoding="utf-8"))
    return {i["shortId"]: i for i in replay["issues"]}


def _arrive(fake: FakeSentry, seed: dict[str, Any], clock: FakeClock) -> str:
    """Add one seed issue to FakeSentry as it would appear: the issue, then its event."""
    seed = copy.deepcopy(seed)
    event = seed.pop("latestEvent")
    for derived in ("lastSeen", "tags"):  # Sentry derives these from the events
        seed.pop(derived, None)
    now = clock.now()
    count = max(1, int(seed.pop("count", 1)))
    first_seen = now - timedelta(days=1)
    issue = fake.add_issue(
        project=seed["project"]["slug"],
        project_json=seed.pop("project"),
        id=seed.pop("id"),
        shortId=seed.pop("shortId"),
        **{**seed, "count": str(count - 1), "firstSeen": first_seen},
        lastSeen=first_seen,
    )
    entries = event.get("entries") or []
    message = event.get("message")
    if not message and entries:
        message = entries[0].get("data", {}).get("formatted")
    fake.add_event(
        str(issue["id"]),
        at=now - timedelta(minutes=2),
        message=message,
        entries=copy.deepcopy(entries),
        tags={t["key"]: t["value"] for t in event.get("tags", [])},
        user=None,
        release=next((t["value"] for t in event.get("tags", []) if t["key"] == "release"), None),
    )
    return str(issue["id"])


@dataclass
class World:
    """The wired bot, its fakes and their loopback URLs."""

    app: App
    clock: FakeClock
    sentry: FakeSentry
    github: FakeGitHub
    hook: RecordingWebhook
    urls: dict[str, str]


@contextlib.contextmanager
def demo_world(state: Path, work: Path, sandbox: Sandbox) -> Iterator[World]:
    """The wired bot and its fakes, all on loopback, on one simulated clock."""
    start = SystemClock().now().replace(microsecond=0)
    clock = FakeClock(start.astimezone(UTC))
    token = secrets.token_urlsafe(32)
    sentry = FakeSentry(clock=clock, token=token, org=ORG)
    github = FakeGitHub(token=GITHUB_TOKEN, clock=clock)
    for pr in FIX_PRS.values():
        github.add_pr(pr.repo, pr.number, pr.title, pr.body, merged=True, merge_commit_sha=pr.sha)
        sentry.add_commit(pr.repo, pr.sha)  # Sentry knows the commit: resolve inCommit
    hook = RecordingWebhook()
    with sentry.serve() as sentry_url, github.serve() as github_url, hook.serve() as hook_url:
        environ = {
            "SENTRY_BASE_URL": sentry_url,
            "SENTRY_ORG": ORG,
            "SENTRY_AUTH_TOKEN": token,
            "SLACK_WEBHOOK_URL": hook_url,
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "GITHUB_API_URL": github_url,
            "GITHUB_REPOS": ",".join(sorted({pr.repo for pr in FIX_PRS.values()})),
            "BOT_DATABASE_URL": f"sqlite:///{state}",
            "BOT_PLAYBOOKS_DIR": str(work / "playbooks"),
            "BOT_REPORTS_DIR": str(state.parent / "demo-reports"),
            "BOT_INSTANCE_ID": "sentry-bot-demo",
            **{f"BOT_TARGET_{t.upper()}_URL": sandbox.dsn for t in TARGETS},
        }
        settings = load_settings(environ=environ)
        store = Store(settings.database_url)
        store.upgrade()
        with store.session() as session:
            session.add(Setting(key=DEMO_MARK, value="sentry-bot demo", updated_at=clock.now()))
        app = App(settings=settings, store=store, clock=clock)
        try:
            yield World(
                app,
                clock,
                sentry,
                github,
                hook,
                {"sentry": sentry_url, "github": github_url, "webhook": hook_url},
            )
        finally:
            app.close()


# -- the story -----------------------------------------------------------------------


def _cycle(app: App) -> list[str]:
    """One real cycle; its side steps' one-line summaries and any error, for the output."""
    report = run_cycle(build_cycle(app))
    return [str(v) for v in report.extra.values()] + [f"error: {e}" for e in report.errors]


def run_story(state: Path, work: Path) -> Story:
    """Run the whole loop once; ``work`` is a scratch directory for the playbook copies."""
    prepare_state(state)
    changes = sandbox_playbooks(work / "playbooks")
    with Sandbox() as sandbox:
        sandbox.stage()
        story = Story(state_path=state, pg_version=sandbox.version, playbook_changes=changes)
        with demo_world(state, work, sandbox) as world:
            app, clock, sentry, github, hook = (
                world.app,
                world.clock,
                world.sentry,
                world.github,
                world.hook,
            )
            story.urls = world.urls
            seeds = _seeds()
            ids: dict[str, str] = {}
            for group in ARRIVALS:
                if "API-1F" in group:
                    sandbox.wait_until_lock_idle(LOCK_IDLE_SECONDS + 0.2)
                before = {sid: sandbox.snapshot(sid) for sid in group}
                for short_id in group:
                    ids[short_id] = _arrive(sentry, seeds[short_id], clock)
                lines = _cycle(app)
                story.arrivals += [
                    Arrival(sid, before[sid], sandbox.snapshot(sid), lines) for sid in group
                ]
                clock.advance(minutes=5)
            # No new events: 49 simulated hours pass, then the scheduler's next cycle.
            clock.advance(hours=49)
            story.lifecycle += _cycle(app)
            story.incidents = [_incident(app, sid, ids[sid], sentry, github, hook) for sid in ORDER]
            story.regression = _regress(app, sentry, sandbox, ids, clock)
    return story


def _regress(
    app: App, sentry: FakeSentry, sandbox: Sandbox, ids: dict[str, str], clock: FakeClock
) -> dict[str, Any]:
    """BLUE-BANDED-BEE-42 fires again after the bot resolved it (a task is stuck again):
    a regression, escalated; the remedy is planned but waits for a human."""
    short_id = "BLUE-BANDED-BEE-42"
    issue_id = ids[short_id]
    clock.advance(hours=1)
    task = sandbox.strike_again()
    last = sentry.issues[issue_id].events[-1]
    sentry.add_event(
        issue_id,
        at=clock.now(),
        message=last.get("message"),
        entries=copy.deepcopy(last.get("entries") or []),
        tags={t["key"]: t["value"] for t in last.get("tags", [])},
        user=None,
    )
    report = run_cycle(build_cycle(app))
    with app.store.session() as session:
        row = session.get(TrackedIssue, issue_id)
        assert row is not None
        waiting = session.exec(
            select(RemediationRun)
            .where(RemediationRun.issue_id == issue_id)
            .where(RemediationRun.status == "awaiting_approval")
        ).first()
        kinds = _kinds(session, issue_id)
        return {
            "short_id": short_id,
            "sentry_substatus": sentry.issues[issue_id].data.get("substatus"),
            "regressed": short_id in report.regressed,
            "state": row.state,
            "requires_approval": row.requires_approval,
            "awaiting_approval_run": waiting.id if waiting else None,
            "would_change": len((waiting.preview or {}).get("rows") or []) if waiting else None,
            "stuck_task": task,
            "stuck_task_after": sandbox.snapshot_task(task),
            "notified": kinds,
            "errors": report.errors,
        }


def _kinds(session: Any, issue_id: str) -> list[str]:
    rows = session.exec(
        select(OutboxMessage.kind)
        .where(OutboxMessage.issue_id == issue_id)
        .where(OutboxMessage.channel == "slack")
        .where(OutboxMessage.status == OutboxStatus.SENT.value)
        .order_by(col(OutboxMessage.id))
    ).all()
    return list(dict.fromkeys(rows))


def _incident(
    app: App,
    short_id: str,
    issue_id: str,
    sentry: FakeSentry,
    github: FakeGitHub,
    hook: RecordingWebhook,
) -> dict[str, Any]:
    """The machine-readable facts of one incident, after the 49 hours."""
    with app.store.session() as session:
        row = session.get(TrackedIssue, issue_id)
        assert row is not None
        runs = session.exec(
            select(RemediationRun)
            .where(RemediationRun.issue_id == issue_id)
            .order_by(col(RemediationRun.created_at))
        ).all()
        links = session.exec(select(FixLink).where(FixLink.issue_id == issue_id)).all()
        texts = session.exec(
            select(OutboxMessage.kind, OutboxMessage.payload)
            .where(OutboxMessage.issue_id == issue_id)
            .where(OutboxMessage.channel == "slack")
            .where(OutboxMessage.status == OutboxStatus.SENT.value)
            .order_by(col(OutboxMessage.id))
        ).all()
        kinds = _kinds(session, issue_id)
        run = next((r for r in runs if (r.rows_affected or 0) > 0), runs[0] if runs else None)
        pr_links = [link for link in links if link.kind == "pr" and link.comment_id]
        comment = ""
        if pr_links:
            found = github.comment(int(pr_links[0].comment_id or 0))
            comment = found.body if found else ""
        data = sentry.issues[issue_id].data
        return {
            "short_id": short_id,
            "title": row.title,
            "playbook": row.playbook_id,
            "action": run.action if run else "notify_only",
            "mode": run.mode if run else None,
            "rows_changed": sum(r.rows_affected or 0 for r in runs),
            "verified": bool(run and (run.verify or {}).get("ok")),
            "verification": (run.verify or {}).get("summary") if run else None,
            "notified": kinds,
            "notifications": [[kind, str(p.get("text", ""))] for kind, p in texts],
            "pr_comment": bool(comment),
            "pr": f"{pr_links[0].repo}#{pr_links[0].pr_number}" if pr_links else None,
            "pr_comment_text": comment,
            "resolved": row.state == LifecycleState.RESOLVED.value
            and data.get("status") == "resolved",
            "resolved_in_commit": row.resolved_in_commit,
            "sentry_status": data.get("status"),
            "sentry_notes": len(sentry.comments(issue_id)),
            "probe": PROBES[short_id].label if short_id in PROBES else None,
            "state": row.state,
            "severity": row.severity,
            "team": row.team,
        }


__all__ = ["ORDER", "Arrival", "DemoStateError", "Story", "run_story"]

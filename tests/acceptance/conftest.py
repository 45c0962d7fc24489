"""The world of the issue #4 acceptance tests: every part real except the three vendors.

One :class:`~bot.clock.FakeClock` drives everything. The bot is the real :class:`App`
built by ``load_settings(environ=...)``, its store on SQLite or PostgreSQL, its target
a real PostgreSQL loaded with ``examples/targets.sql``, its playbooks a copy of the
shipped ``bee42-requeue-stuck-tasks.yaml`` switched to ``mode: auto``. The vendors are
the project's own fakes, reached through the real adapters:

* Sentry: :class:`FakeSentry` behind the real ``HttpSentryClient`` (``httpx.MockTransport``),
  seeded with BLUE-BANDED-BEE-42 from ``bot/demo/seed_incidents.json``;
* GitHub: :class:`FakeGitHub` on loopback, reached by the real PyGithub adapter that
  ``fixlinks_step`` builds from ``GITHUB_API_URL`` / ``GITHUB_TOKEN`` / ``GITHUB_REPOS``;
* Slack: :class:`RecordingWebhook` on loopback, reached by the real
  ``SlackWebhookNotifier`` that ``outbox_step`` builds from ``SLACK_WEBHOOK_URL``.

So ``run_cycle(build_cycle(app))`` here is the same call the scheduler makes in production.
"""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from sqlmodel import col, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.interfaces.app import DEMO_REPLAY, App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import run_cycle
from bot.pipeline.cycle_report import CycleReport
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import OutboxMessage, RemediationRun, TrackedIssue, Transition
from bot.testing.github import FakeComment, FakeGitHub
from bot.testing.sentry import FakeSentry
from bot.testing.sentry_data import parse_iso
from bot.testing.webhook import HOOK_PATH, RecordingWebhook, Reply
from tests.conftest import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[2]
TARGETS_SQL = ROOT / "examples" / "targets.sql"
PLAYBOOK = ROOT / "playbooks" / "bee42-requeue-stuck-tasks.yaml"

SHORT_ID = "BLUE-BANDED-BEE-42"
JOB_ID = "0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d"
REPO = "acme/queue-worker"
PR_NUMBER = 118
MERGE_SHA = "9c1d5e7a2b4f6081c3e5a7b9d1f3a5c7e9b1d3f5"
GITHUB_TOKEN = "ghp_acceptance_" + "x" * 24

# Slack headings (bot.notify.messages) by notification kind, to count deliveries.
HEADINGS = {
    "remediated": ":white_check_mark: Remediated",
    "resolved": ":tada: Resolved",
    "regressed": ":repeat: Regressed",
    "escalated": ":rotating_light: Escalated",
    "plan_awaiting_approval": ":raised_hand: Approval needed",
    "triaged": ":mag: Triaged",
}


def seed_issue() -> dict[str, Any]:
    """BLUE-BANDED-BEE-42 exactly as the bundled replay carries it."""
    replay = json.loads(DEMO_REPLAY.read_text())
    [issue] = [i for i in replay["issues"] if i["shortId"] == SHORT_ID]
    return copy.deepcopy(issue)


class Webhook(RecordingWebhook):
    """The RecordingWebhook, plus a hook run after a request is recorded, before the reply."""

    on_receipt: Callable[[], None] | None = None

    def answer(self, raw: bytes, path: str = HOOK_PATH, content_type: str = "") -> Reply:
        reply = super().answer(raw, path, content_type)
        if self.on_receipt is not None:
            self.on_receipt()
        return reply


@dataclass
class World:
    """The bot and the fakes it talks to, on one clock."""

    app: App
    clock: FakeClock
    sentry: FakeSentry
    github: FakeGitHub
    hook: Webhook
    target_dsn: str
    issue_id: str
    event_entries: list[dict[str, Any]]
    event_tags: dict[str, str]

    # -- driving -------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        """One full production cycle; a step error would be a failure of the story."""
        report = run_cycle(build_cycle(self.app))
        assert report.errors == [], report.errors
        return report

    def event(self, at: datetime | None = None) -> None:
        """The monitor fires again: a new event on BLUE-BANDED-BEE-42 (same text)."""
        self.sentry.add_event(
            self.issue_id,
            at=at or self.clock.now(),
            message=self.event_entries[0]["data"]["formatted"],
            entries=copy.deepcopy(self.event_entries),
            tags=dict(self.event_tags),
            user=None,
            release="queue-worker@1.42.0",
        )

    def cycles_until(self, when: datetime, every: timedelta = timedelta(hours=6)) -> int:
        """Run a cycle every ``every`` (scheduler-like) until the clock reaches ``when``."""
        n = 0
        while self.clock.now() + every <= when:
            self.clock.advance(seconds=every.total_seconds())
            self.cycle()
            n += 1
        self.clock.set(when)
        return n

    # -- what the fakes and the store say --------------------------------------------
    def sentry_issue(self) -> dict[str, Any]:
        return self.sentry.issues[self.issue_id].data

    def settings_hook_url(self) -> str:
        """The webhook URL the bot was configured with (the loopback RecordingWebhook)."""
        url = self.app.settings.slack_webhook_url
        assert url is not None
        return url.get_secret_value()

    def sentry_last_seen(self) -> datetime:
        """The issue's ``lastSeen`` as Sentry (the fake) reports it."""
        seen = parse_iso(self.sentry_issue()["lastSeen"])
        assert seen is not None
        return seen

    def pr_comments(self) -> list[FakeComment]:
        return self.github.comments(REPO, PR_NUMBER)

    def delivered(self, kind: str) -> list[dict[str, Any]]:
        """Slack payloads of one kind that the webhook accepted (2xx)."""
        return [p for p in self.hook.delivered if str(p.get("text", "")).startswith(HEADINGS[kind])]

    def tracked(self) -> TrackedIssue:
        with self.app.store.session() as session:
            row = session.get(TrackedIssue, self.issue_id)
            assert row is not None
            session.expunge(row)
            return row

    def states(self) -> list[str]:
        """The issue's journaled lifecycle states, oldest first."""
        with self.app.store.session() as session:
            return list(
                session.exec(
                    select(Transition.to_state)
                    .where(Transition.issue_id == self.issue_id)
                    .where(col(Transition.from_state) != col(Transition.to_state))
                    .order_by(col(Transition.id))
                ).all()
            )

    def outbox(self, channel: str = "slack") -> list[OutboxMessage]:
        """The outbox rows of one channel, oldest first."""
        with self.app.store.session() as session:
            rows = session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.channel == channel)
                .order_by(col(OutboxMessage.id))
            ).all()
            for row in rows:
                session.expunge(row)
            return list(rows)

    def runs(self) -> list[RemediationRun]:
        with self.app.store.session() as session:
            rows = session.exec(
                select(RemediationRun).order_by(col(RemediationRun.created_at))
            ).all()
            for row in rows:
                session.expunge(row)
            return list(rows)

    def tasks(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.target_dsn, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT id, job_id::text AS job_id, status, worker_id, requeue_count, "
                "failure_reason FROM tasks ORDER BY id"
            ).fetchall()


def _playbooks_dir(tmp_path: Path) -> Path:
    text = PLAYBOOK.read_text()
    assert text.count("mode: shadow") == 1
    directory = tmp_path / "playbooks"
    directory.mkdir()
    (directory / PLAYBOOK.name).write_text(text.replace("mode: shadow", "mode: auto"))
    return directory


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The bot's own store: a SQLite file, or its own fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.db'}"
        return
    admin: str = request.getfixturevalue("pg_admin_dsn")
    name = f"bot_store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sqlalchemy_url(psycopg.conninfo.make_conninfo(admin, dbname=name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def world(store_url: str, pg_dsn: str, clock: FakeClock, tmp_path: Path) -> Iterator[World]:
    """BLUE-BANDED-BEE-42 seen 3 minutes ago, a merged fix PR, the bot not yet started."""
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(TARGETS_SQL.read_text())

    token = secrets.token_urlsafe(48)
    fake = FakeSentry(clock=clock, token=token, org="acme")
    seed = seed_issue()
    event = seed.pop("latestEvent")  # the list endpoint never carries it; events do
    for derived in ("lastSeen", "tags"):  # set by the event below, as in Sentry
        seed.pop(derived)
    tags = {t["key"]: t["value"] for t in event["tags"]}
    last_event = clock.now() - timedelta(minutes=3)
    issue = fake.add_issue(
        project="queue-worker",
        project_json=seed.pop("project"),
        id=seed.pop("id"),
        shortId=seed.pop("shortId"),
        **{**seed, "count": 718, "firstSeen": clock.now() - timedelta(days=7)},
        lastSeen=last_event - timedelta(minutes=1),
    )
    github = FakeGitHub(token=GITHUB_TOKEN, clock=clock)
    github.add_pr(
        REPO,
        PR_NUMBER,
        f"Fixes {SHORT_ID}",
        body="Workers renew their lease; the monitor requeues tasks of dead workers.",
        merged=True,
        merge_commit_sha=MERGE_SHA,
    )
    fake.add_commit(REPO, MERGE_SHA)
    hook = Webhook()

    with github.serve() as github_url, hook.serve() as hook_url:
        settings = load_settings(
            environ={
                "SENTRY_ORG": "acme",
                "SENTRY_AUTH_TOKEN": token,
                "SLACK_WEBHOOK_URL": hook_url,
                "GITHUB_TOKEN": GITHUB_TOKEN,
                "GITHUB_API_URL": github_url,
                "GITHUB_REPOS": REPO,
                "BOT_DATABASE_URL": store_url,
                "BOT_TARGET_JOBS_DB_URL": pg_dsn,
                "BOT_PLAYBOOKS_DIR": str(_playbooks_dir(tmp_path)),
            }
        )
        store = Store(settings.database_url)
        store.upgrade()
        app = App(settings=settings, store=store, clock=clock)
        app._sentry = HttpSentryClient(
            org="acme",
            token=token,
            clock=clock,
            transport=httpx.MockTransport(fake.handler),
        )
        world = World(
            app=app,
            clock=clock,
            sentry=fake,
            github=github,
            hook=hook,
            target_dsn=pg_dsn,
            issue_id=str(issue["id"]),
            event_entries=event["entries"],
            event_tags=tags,
        )
        world.event(at=last_event)
        try:
            yield world
        finally:
            app.close()

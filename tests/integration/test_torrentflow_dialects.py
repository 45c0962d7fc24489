"""Seed 003 (TorrentFlow RB-02 "Compute Agent Offline") on every target dialect.

TorrentFlow's jobs live in Cloudflare D1 (SQLite): the shipped playbook, switched to
``auto`` and run by the real executor against a D1-shaped SQLite file (TEXT timestamps
written by ``datetime('now')``, INTEGER rowid keys), a MariaDB copy (``ENUM`` status,
``DATETIME(6)``) and PostgreSQL, requeues exactly the offline agent's jobs and leaves the
online agent's job alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import target_resolver
from bot.pipeline.execute import Executor
from bot.playbooks.loader import load_playbooks_strict
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.settings import Settings
from tests.helpers_engine import make_store, track_issue
from tests.targets import TargetDb

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = "torrentflow-agent-5d9c8b7f6-q4wz2"
ONLINE = "torrentflow-agent-5d9c8b7f6-h8k2m"
STATUS = {
    "postgresql": "text NOT NULL",
    "mariadb": "ENUM('queued','submitted','running','uploading','done','failed') NOT NULL",
    "sqlite": "TEXT NOT NULL CHECK (status IN ('queued','submitted','running','uploading',"
    "'done','failed'))",
}
SCHEMA = (
    "CREATE TABLE tf_agents (id {text} PRIMARY KEY, last_heartbeat {ts} NOT NULL);"
    "CREATE TABLE tf_jobs (id {pk}, status {status}, worker_id {text},"
    " requeue_count {int} NOT NULL DEFAULT 0, error TEXT,"
    " updated_at {ts} NOT NULL DEFAULT {now})"
)


def shipped(mode: str = "auto") -> Playbook:
    [pb] = [
        p
        for p in load_playbooks_strict(ROOT / "playbooks")
        if p.id == "torrentflow-requeue-offline-agent-jobs"
    ]
    return pb.model_copy(update={"guards": pb.guards.model_copy(update={"mode": mode})})


@pytest.fixture
def tf(target_db: TargetDb) -> TargetDb:
    db = target_db
    db.sql(db.ddl(SCHEMA.replace("{status}", STATUS[db.dialect])))
    for agent, ago in ((OFFLINE, 300), (ONLINE, 0)):
        db.sql(
            f"INSERT INTO tf_agents (id, last_heartbeat) VALUES (%(a)s, {db.ago(ago)})",  # noqa: S608
            {"a": agent},
        )
    for status, agent, ago in (
        ("submitted", OFFLINE, 720),
        ("submitted", OFFLINE, 660),
        ("running", OFFLINE, 600),
        ("running", ONLINE, 0),
    ):
        insert = f"INSERT INTO tf_jobs (status, worker_id, updated_at) VALUES (%(s)s, %(a)s, {db.ago(ago)})"  # noqa: E501, S608
        db.sql(insert, {"s": status, "a": agent})
    return db


def jobs(db: TargetDb) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in db.sql("SELECT worker_id, status, requeue_count, error FROM tf_jobs ORDER BY id")
    ]


def test_auto_playbook_requeues_exactly_the_offline_agents_jobs(
    tf: TargetDb, tmp_path: Path, clock: FakeClock
) -> None:
    # The target comes from BOT_TARGET_TORRENTFLOW_DB_URL through the bot's own wiring
    # (before issue #14 a sqlite:/// URL failed here: 'missing "=" after "sqlite:///..."').
    settings = Settings.model_validate(
        {
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "targets": {"torrentflow_db": tf.url},
        }
    )
    store = make_store(settings.database_url)
    app = App(settings=settings, store=store, clock=clock)
    pb = shipped("auto")
    executor = Executor(store, {pb.id: pb}, target_resolver(app), clock)
    preview, why = executor.preview(pb, {"worker_id": OFFLINE})
    assert why == "" and preview is not None and preview.count == 3
    issue = track_issue(store, clock, title="Compute agent offline")
    before_updated = tf.sql("SELECT id, updated_at FROM tf_jobs ORDER BY id")

    out = executor.plan(issue, MatchResult(pb, {"worker_id": OFFLINE}))

    assert (out.mode, out.status, out.rows_affected) == ("auto", "succeeded", 3), out.note
    assert out.verify == "none of the 3 requeued row(s) is stuck"
    assert jobs(tf) == [
        (OFFLINE, "queued", 1, None),
        (OFFLINE, "queued", 1, None),
        (OFFLINE, "queued", 1, None),
        (ONLINE, "running", 0, None),
    ]
    after_updated = tf.sql("SELECT id, updated_at FROM tf_jobs ORDER BY id")
    assert [a[1] != b[1] for a, b in zip(after_updated, before_updated, strict=True)] == [
        True,
        True,
        True,
        False,
    ]
    if tf.dialect == "sqlite":
        # D1's own form: datetime('now') text, UTC, seconds.
        stamp = str(after_updated[0][1])
        assert len(stamp) == 19 and stamp[10] == " ", stamp
    # Running it again changes nothing: the offline agent has no stuck job left.
    again = executor.plan(
        track_issue(store, clock, issue_id="4712"), MatchResult(pb, {"worker_id": OFFLINE})
    )
    assert again.rows_affected in (0, None)


def test_preview_is_the_executed_statement_rolled_back(tf: TargetDb) -> None:
    pb = shipped("shadow")
    action: Any = __import__("bot.actions.requeue", fromlist=["ACTION"]).ACTION
    g = pb.guards
    settings = pb.action.parsed_settings
    with tf.target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
        preview = action.preview(conn, settings, {"worker_id": OFFLINE}, g.limits())
    assert preview.count == 3
    assert jobs(tf)[0] == (OFFLINE, "submitted", 0, None)  # rolled back
    with tf.target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
        outcome = action.execute(conn, settings, {"worker_id": OFFLINE}, g.limits())
    assert [r["id"] for r in preview.rows] == [r["id"] for r in outcome.before_image]
    assert preview.rows == outcome.before_image


def test_an_online_agent_scope_changes_nothing(tf: TargetDb) -> None:
    pb = shipped("shadow")
    action: Any = __import__("bot.actions.requeue", fromlist=["ACTION"]).ACTION
    g = pb.guards
    with tf.target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
        outcome = action.execute(conn, pb.action.parsed_settings, {"worker_id": ONLINE}, g.limits())
    assert outcome.rows_affected == 0
    assert [j[1] for j in jobs(tf)] == ["submitted", "submitted", "running", "running"]


def test_rb03_stuck_uploads_requeued_and_capped_on_every_dialect(tf: TargetDb) -> None:
    # Seed 003 RB-03 (shipped torrentflow-retry-stuck-uploads): explicit set, increment,
    # now(), cap + dead_letter_set on the same D1-shaped / MariaDB / PostgreSQL tf_jobs.
    [pb] = [
        p
        for p in load_playbooks_strict(ROOT / "playbooks")
        if p.id == "torrentflow-retry-stuck-uploads"
    ]
    for requeues, ago in ((0, 3600), (3, 3600), (0, 60)):
        insert = f"INSERT INTO tf_jobs (status, worker_id, requeue_count, updated_at) VALUES ('uploading', %(a)s, %(r)s, {tf.ago(ago)})"  # noqa: E501, S608
        tf.sql(insert, {"a": ONLINE, "r": requeues})
    action: Any = __import__("bot.actions.requeue", fromlist=["ACTION"]).ACTION
    g = pb.guards
    with tf.target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
        outcome = action.execute(conn, pb.action.parsed_settings, {}, g.limits())
    assert (outcome.details["changed"], outcome.details["dead_lettered"]) == (1, 1)
    assert jobs(tf)[4:] == [
        (ONLINE, "queued", 1, "re-submitted after R2 upload failures (RB-03)"),
        (ONLINE, "failed", 3, "R2 upload failed after 3 re-submissions (RB-03)"),
        (ONLINE, "uploading", 0, None),  # still within its 30 minutes
    ]
    with tf.target.transaction(g.statement_timeout_ms, g.lock_timeout_ms, read_only=True) as c:
        assert action.verify(c, pb.action.parsed_settings, {}, outcome).ok

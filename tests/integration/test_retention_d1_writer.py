"""Seed 003 RB-04 on D1: TorrentFlow's ``job_events`` lives in Cloudflare D1 (SQLite, one
writer at a time). The shipped retention playbook, through the real executor in auto mode
on a D1-shaped SQLite file, must let the app's writer in between its batches (the
dialect suite, test_retention_dialects.py, covers what is deleted on every engine)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.clock import FakeClock, SystemClock
from bot.pipeline.execute import Executor
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from tests.helpers_engine import build_playbook, make_store, track_issue
from tests.targets import TargetDb, TargetFactory

ROOT = Path(__file__).resolve().parents[2]

EVENTS = (
    "CREATE TABLE job_events (id {pk}, job_id {int} NOT NULL, kind {text} NOT NULL,"
    " created_at {ts} NOT NULL DEFAULT {now});"
    "CREATE INDEX job_events_created_at ON job_events (created_at)"
)
DAY = 86_400


def shipped(name: str, **settings: Any) -> Playbook:
    data = yaml.safe_load((ROOT / "playbooks" / f"{name}.yaml").read_text())
    data["action"]["target"] = "jobs_db"
    data["action"]["settings"].update(settings)
    data["guards"] = {**data["guards"], "mode": "auto", "cooldown_minutes": 0}
    return build_playbook(data)


def executor(db: TargetDb, pb: Playbook, tmp_path: Path, clock: Any) -> tuple[Executor, str]:
    store = make_store(f"sqlite:///{tmp_path / 'state.db'}")
    issue_id = track_issue(store, FakeClock(), short_id="TF-RB")
    targets = {"jobs_db": db.target}
    return Executor(store, {pb.id: pb}, targets.get, clock), issue_id


def add_events(db: TargetDb, *, old: int, new: int) -> None:
    db.sql(db.ddl(EVENTS))
    for i in range(old):
        db.sql(
            f"INSERT INTO job_events (job_id, kind, created_at)"  # noqa: S608
            f" VALUES (%(j)s, 'old', {db.ago(91 * DAY + 60 * i)})",
            {"j": i},
        )
    for i in range(new):
        db.sql(
            f"INSERT INTO job_events (job_id, kind, created_at)"  # noqa: S608
            f" VALUES (%(j)s, 'new', {db.ago(89 * DAY - 60 * i)})",
            {"j": i},
        )


def kinds(db: TargetDb) -> dict[str, int]:
    return {
        str(k): int(n) for k, n in db.sql("SELECT kind, count(*) FROM job_events GROUP BY kind")
    }


@pytest.fixture
def d1(tmp_path: Path) -> Iterator[TargetDb]:
    """A D1-shaped SQLite file (the single-writer lock is SQLite's; row locks elsewhere)."""
    yield from TargetFactory(None, None, tmp_path).create("sqlite")


def test_rb04_on_d1_lets_a_writer_in_between_batches(d1: TargetDb, tmp_path: Path) -> None:
    """SQLite has one writer at a time: each batch holds it (BEGIN IMMEDIATE) only for
    itself and pauses before the next, so the app's inserts land between batches. The
    interleaving is read from the database: one AUTOINCREMENT log both sides write."""
    db = d1
    add_events(db, old=60, new=0)
    db.sql("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL)")
    db.admin.execute(  # one statement with ';' inside: straight to sqlite3
        "CREATE TRIGGER job_events_del AFTER DELETE ON job_events"
        " BEGIN INSERT INTO log (what) VALUES ('delete'); END"
    )
    pb = shipped(
        "torrentflow-job-events-retention", min_table_rows=None, batch_size=10, pause_ms=100
    )
    run, issue_id = executor(db, pb, tmp_path, SystemClock())
    stop = threading.Event()

    def writer() -> None:
        conn = sqlite3.connect(db.url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        try:
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO job_events (job_id, kind) VALUES (1, 'live')")
                conn.execute("INSERT INTO log (what) VALUES ('insert')")
                conn.execute("COMMIT")
                stop.wait(0.005)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        out = run.plan(issue_id, MatchResult(pb, {}))
    finally:
        stop.set()
        thread.join(timeout=30)

    assert out.status == "succeeded" and out.rows_affected == 60
    log = [str(r[0]) for r in db.sql("SELECT what FROM log ORDER BY seq")]
    first, last = log.index("delete"), len(log) - 1 - log[::-1].index("delete")
    between = log[first : last + 1]
    # Six batches of ten deletes; writers got the database between them.
    assert between.count("delete") == 60 and "insert" in between
    runs = "".join("d" if w == "delete" else "i" for w in between).split("i")
    assert max(len(r) for r in runs) <= 10 * 2, "a writer waited through more than 2 batches"
    assert kinds(db)["live"] >= 1 and "old" not in kinds(db)

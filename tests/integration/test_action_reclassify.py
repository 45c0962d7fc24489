"""reclassify_failures on real PostgreSQL, MariaDB and SQLite targets: seed 004 bug 2
(mongo/redis auth failures bucketed as transient 'dump')."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from bot.actions.base import Limits, Outcome
from bot.actions.reclassify import ACTION, ReclassifySettings
from bot.errors import LockTimeout, RemediationError, TooManyRows
from tests.targets import TargetDb

MONGO = (
    "mongodump: ... auth error: sasl conversation error: unable to authenticate using "
    'mechanism "SCRAM-SHA-256": ... socket was unexpectedly closed: EOF'
)
REDIS = (
    "redis-cli --rdb: AUTH failed: WRONGPASS invalid username-password pair or user is disabled."
)
TRANSIENT = "mongodump: ... socket was unexpectedly closed: EOF"
REFUSED = "dial tcp 10.0.0.3:6379: connect: connection refused"
LIMITS = Limits(max_rows=10, statement_timeout_ms=5_000, lock_timeout_ms=500)
SCHEMA = (
    "CREATE TABLE resource_backups (id {uuid} PRIMARY KEY,"
    " resource_id {text} NOT NULL DEFAULT 'r1', status {text} NOT NULL,"
    " fail_reason {text} NOT NULL, internal_detail TEXT,"
    " started_at {ts} NOT NULL DEFAULT {now})"
)


@pytest.fixture
def db(target_db: TargetDb) -> TargetDb:
    target_db.sql(target_db.ddl(SCHEMA))
    return target_db


def add(db: TargetDb, detail: str | None, bucket: str = "dump", status: str = "failed") -> str:
    row_id = str(uuid.uuid4())
    db.sql(
        "INSERT INTO resource_backups (id, status, fail_reason, internal_detail)"
        " VALUES (%(id)s, %(status)s, %(bucket)s, %(detail)s)",
        {"id": row_id, "status": status, "bucket": bucket, "detail": detail},
    )
    return row_id


def buckets(db: TargetDb) -> dict[str, str]:
    return {str(k): v for k, v in db.sql("SELECT id, fail_reason FROM resource_backups")}


def settings(**overrides: Any) -> ReclassifySettings:
    return ReclassifySettings.model_validate(
        {
            "table": "resource_backups",
            "text_column": "internal_detail",
            "bucket_column": "fail_reason",
            "from_buckets": ["dump"],
            "status_column": "status",
            "status_values": ["failed"],
        }
        | overrides
    )


def ids(rows: list[Any]) -> list[str]:
    return sorted(str(r) for r in rows)


def test_moves_exactly_the_auth_rows(db: TargetDb) -> None:
    mongo, redis = add(db, MONGO), add(db, REDIS)
    transient, refused, empty = add(db, TRANSIENT), add(db, REFUSED), add(db, None)
    already = add(db, MONGO, bucket="auth")
    running = add(db, REDIS, status="running")
    target = db.target

    with target.transaction(5_000, 500) as conn:  # the preview rolls itself back
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert ids([r["id"] for r in preview.rows]) == ids([mongo, redis])
    assert buckets(db)[mongo] == "dump"

    with target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)

    assert ids(outcome.details["ids"]) == ids([mongo, redis])  # preview == execute
    assert {b["fail_reason"] for b in outcome.before_image} == {"dump"}
    assert {b["code"] for b in outcome.before_image} == {"mongo:18", "redis:WRONGPASS"}
    assert buckets(db) == {
        mongo: "auth",
        redis: "auth",
        transient: "dump",
        refused: "dump",
        empty: "dump",
        already: "auth",
        running: "dump",
    }
    with target.transaction(5_000, 500) as conn:
        assert ACTION.verify(conn, settings(), {}, outcome).ok
        again = ACTION.execute(conn, settings(), {}, LIMITS)
    assert again.rows_affected == 0


def test_max_rows_exceeded_changes_nothing(db: TargetDb) -> None:
    for _ in range(3):
        add(db, REDIS)
    with pytest.raises(TooManyRows), db.target.transaction(5_000, 500) as conn:
        ACTION.execute(conn, settings(), {}, Limits(max_rows=2))
    assert set(buckets(db).values()) == {"dump"}


@pytest.mark.parametrize(
    "hostile", ["r1' OR '1'='1", "r1\\' OR 1=1 -- ", "'; DROP TABLE resource_backups; --"]
)
def test_scope_binds_hostile_values(db: TargetDb, hostile: str) -> None:
    add(db, REDIS)
    with db.target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(
            conn, settings(scope={"resource_id": "resource_id"}), {"resource_id": hostile}, LIMITS
        )
    assert outcome.rows_affected == 0
    assert set(buckets(db).values()) == {"dump"}


def test_hostile_failure_text_is_only_read(db: TargetDb) -> None:
    hostile = "WRONGPASS'); UPDATE resource_backups SET fail_reason = 'pwned'; --"
    row = add(db, hostile)
    other = add(db, TRANSIENT)
    with db.target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
    assert ids(outcome.details["ids"]) == [row]
    assert buckets(db) == {row: "auth", other: "dump"}


def test_scan_limit_bounds_the_rows_read(db: TargetDb) -> None:
    rows = sorted(add(db, REDIS) for _ in range(4))
    with db.target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(scan_limit=2), {}, LIMITS)
    assert ids(outcome.details["ids"]) == rows[:2]


def test_verify_detects_a_row_moved_back(db: TargetDb) -> None:
    row = add(db, REDIS, bucket="dump")
    with db.target.transaction(5_000, 500, read_only=True) as conn:
        check = ACTION.verify(conn, settings(), {}, Outcome(1, details={"ids": [row]}))
    assert not check.ok


def test_a_row_a_worker_holds_is_skipped_or_the_run_times_out(db: TargetDb) -> None:
    held, free = add(db, REDIS), add(db, MONGO)
    worker = db.connect()
    if db.dialect == "sqlite":
        # No row locks: the worker's write transaction holds the whole file, and the run
        # gives up after lock_timeout instead of waiting on it.
        db.sql("BEGIN IMMEDIATE", conn=worker)
        with pytest.raises(LockTimeout), db.target.transaction(5_000, 300) as conn:
            ACTION.execute(conn, settings(), {}, LIMITS)
        db.sql("ROLLBACK", conn=worker)
        assert set(buckets(db).values()) == {"dump"}
        return
    db.sql("BEGIN", conn=worker)
    db.sql("SELECT id FROM resource_backups WHERE id = %(id)s FOR UPDATE", {"id": held}, worker)
    with db.target.transaction(5_000, 500) as conn:  # waiting would raise LockTimeout
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
    db.sql("ROLLBACK", conn=worker)
    assert ids(outcome.details["ids"]) == [free]
    assert buckets(db) == {held: "dump", free: "auth"}


def test_concurrent_runs_move_each_row_exactly_once(db: TargetDb) -> None:
    rows = [add(db, REDIS) for _ in range(30)]
    barrier = threading.Barrier(3)
    moved: list[str] = []
    errors: list[BaseException] = []
    limits = Limits(max_rows=100, statement_timeout_ms=20_000, lock_timeout_ms=15_000)

    def run() -> None:
        try:
            barrier.wait()
            with db.target.transaction(20_000, 15_000) as conn:
                moved.extend(ACTION.execute(conn, settings(), {}, limits).details["ids"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert ids(moved) == sorted(rows)
    assert set(buckets(db).values()) == {"auth"}


def test_to_bucket_must_differ_from_the_from_buckets() -> None:
    with pytest.raises(ValidationError):
        settings(from_buckets=["dump", "auth"])


@pytest.mark.parametrize("target_db", ["postgresql", "mariadb"], indirect=True)
def test_enum_buckets_and_a_refused_bucket_reported_by_the_preview(db: TargetDb) -> None:
    # Issue #13: plain strings against an enum column; the preview runs the real UPDATE.
    if db.dialect == "postgresql":
        db.sql("CREATE TYPE bucket AS ENUM ('dump', 'auth', 'other')")
        db.sql(
            "ALTER TABLE resource_backups ALTER COLUMN fail_reason TYPE bucket"
            " USING fail_reason::bucket"
        )
        refusal = 'invalid input value for enum bucket: "credentials"'
    else:
        db.sql(
            "ALTER TABLE resource_backups MODIFY fail_reason ENUM('dump', 'auth', 'other') NOT NULL"
        )
        refusal = "Data truncated for column 'fail_reason'"  # strict mode: an error
    mongo = add(db, MONGO)
    add(db, REFUSED)
    with db.target.transaction(5_000, 500) as conn:
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert ids([r["id"] for r in preview.rows]) == [mongo]
    assert buckets(db)[mongo] == "dump"
    with pytest.raises(RemediationError, match=refusal), db.target.transaction(5_000, 500) as c:
        ACTION.preview(c, settings(to_bucket="credentials"), {}, LIMITS)
    with db.target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
    assert buckets(db)[mongo] == "auth"
    with db.target.transaction(5_000, 500, read_only=True) as conn:
        assert ACTION.verify(conn, settings(), {}, outcome).ok


def test_playbook_rules_reach_the_action(db: TargetDb) -> None:
    vault = add(db, "secret read failed: E_VAULT_DENIED for role backup")
    mongo = add(db, MONGO)
    rules = [
        {"pattern": r"\bE_VAULT_DENIED\b", "kind": "auth", "code": "vault:denied"},
        {"pattern": "unable to authenticate", "kind": "transient"},  # overrides a built-in
    ]
    with db.target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(rules=rules), {}, LIMITS)
    assert ids(outcome.details["ids"]) == [vault]
    assert outcome.before_image[0]["code"] == "vault:denied"
    assert buckets(db)[mongo] == "dump"
    with pytest.raises(ValueError, match="repeated group"):
        settings(rules=[{"pattern": "(a+)+$", "kind": "auth"}])

"""reclassify_failures on a real PostgreSQL: seed 004 bug 2 (mongo/redis auth failures
bucketed as transient 'dump')."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bot.actions.base import Limits, Outcome
from bot.actions.reclassify import ACTION, ReclassifySettings
from bot.actions.target import PgTarget
from bot.errors import RemediationError, TooManyRows

pytestmark = pytest.mark.postgres

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


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE resource_backups (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " resource_id text NOT NULL DEFAULT 'r1', status text NOT NULL,"
            " fail_reason text NOT NULL, internal_detail text,"
            " started_at timestamptz NOT NULL DEFAULT now())"
        )
        yield conn


def add(db: Any, detail: str | None, bucket: str = "dump", status: str = "failed") -> str:
    row = db.execute(
        "INSERT INTO resource_backups (status, fail_reason, internal_detail)"
        " VALUES (%s, %s, %s) RETURNING id",
        (status, bucket, detail),
    ).fetchone()
    return str(row[0])


def buckets(db: Any) -> dict[str, str]:
    return {str(k): v for k, v in db.execute("SELECT id, fail_reason FROM resource_backups")}


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


def test_moves_exactly_the_auth_rows(db: Any, pg_dsn: str) -> None:
    mongo, redis = add(db, MONGO), add(db, REDIS)
    transient, refused, empty = add(db, TRANSIENT), add(db, REFUSED), add(db, None)
    already = add(db, MONGO, bucket="auth")
    running = add(db, REDIS, status="running")
    target = PgTarget(pg_dsn)

    with target.transaction(5_000, 500) as conn:  # the preview rolls itself back
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert sorted(r["id"] for r in preview.rows) == sorted([mongo, redis])
    assert buckets(db)[mongo] == "dump"

    with target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)

    assert sorted(outcome.details["ids"]) == sorted([mongo, redis])
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


def test_max_rows_exceeded_changes_nothing(db: Any, pg_dsn: str) -> None:
    for _ in range(3):
        add(db, REDIS)
    with (
        pytest.raises(TooManyRows),
        PgTarget(pg_dsn).transaction(5_000, 500) as conn,
    ):
        ACTION.execute(conn, settings(), {}, Limits(max_rows=2))
    assert set(buckets(db).values()) == {"dump"}


def test_scope_binds_hostile_values(db: Any, pg_dsn: str) -> None:
    add(db, REDIS)
    with PgTarget(pg_dsn).transaction(5_000, 500) as conn:
        outcome = ACTION.execute(
            conn,
            settings(scope={"resource_id": "resource_id"}),
            {"resource_id": "r1' OR '1'='1"},
            LIMITS,
        )
    assert outcome.rows_affected == 0
    assert set(buckets(db).values()) == {"dump"}


def test_scan_limit_bounds_the_rows_read(db: Any, pg_dsn: str) -> None:
    ids = sorted(add(db, REDIS) for _ in range(4))
    with PgTarget(pg_dsn).transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(scan_limit=2), {}, LIMITS)
    assert sorted(outcome.details["ids"]) == ids[:2]


def test_verify_detects_a_row_moved_back(db: Any, pg_dsn: str) -> None:
    row = add(db, REDIS, bucket="dump")
    with PgTarget(pg_dsn).transaction(5_000, 500, read_only=True) as conn:
        check = ACTION.verify(conn, settings(), {}, Outcome(1, details={"ids": [row]}))
    assert not check.ok


def test_enum_buckets_and_a_refused_bucket_reported_by_the_preview(db: Any, pg_dsn: str) -> None:
    # Issue #13: plain strings against an enum column; the preview runs the real UPDATE.
    db.execute("CREATE TYPE bucket AS ENUM ('dump', 'auth', 'other')")
    db.execute(
        "ALTER TABLE resource_backups ALTER COLUMN fail_reason TYPE bucket"
        " USING fail_reason::bucket"
    )
    mongo = add(db, MONGO)
    add(db, REFUSED)
    target = PgTarget(pg_dsn)
    with target.transaction(5_000, 500) as conn:
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert [r["id"] for r in preview.rows] == [mongo]
    assert buckets(db)[mongo] == "dump"
    with (
        pytest.raises(RemediationError, match='invalid input value for enum bucket: "credentials"'),
        target.transaction(5_000, 500) as conn,
    ):
        ACTION.preview(conn, settings(to_bucket="credentials"), {}, LIMITS)
    with target.transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
    assert buckets(db)[mongo] == "auth"
    with target.transaction(5_000, 500, read_only=True) as conn:
        assert ACTION.verify(conn, settings(), {}, outcome).ok


def test_playbook_rules_reach_the_action(db: Any, pg_dsn: str) -> None:
    vault = add(db, "secret read failed: E_VAULT_DENIED for role backup")
    mongo = add(db, MONGO)
    rules = [
        {"pattern": r"\bE_VAULT_DENIED\b", "kind": "auth", "code": "vault:denied"},
        {"pattern": "unable to authenticate", "kind": "transient"},  # overrides a built-in
    ]
    with PgTarget(pg_dsn).transaction(5_000, 500) as conn:
        outcome = ACTION.execute(conn, settings(rules=rules), {}, LIMITS)
    assert outcome.details["ids"] == [vault]
    assert outcome.before_image[0]["code"] == "vault:denied"
    assert buckets(db)[mongo] == "dump"
    with pytest.raises(ValueError, match="repeated group"):
        settings(rules=[{"pattern": "(a+)+$", "kind": "auth"}])

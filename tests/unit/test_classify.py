"""Truth table for classify_failure over the seeds' real strings and their look-alikes."""

from __future__ import annotations

import pytest

from bot.actions.classify import classify_failure

SEED_004_MONGO = (
    "mongodump: error connecting to host: could not connect to server: connection() error "
    "occurred during connection handshake: auth error: sasl conversation error: unable to "
    'authenticate using mechanism "SCRAM-SHA-256": connection(mongodb-0:27017[-3]) '
    "socket was unexpectedly closed: EOF"
)
SEED_004_REDIS = (
    "redis-cli --rdb: AUTH failed: WRONGPASS invalid username-password pair or user is disabled."
)
SEED_004_PQ_NOT_NULL = (
    'pq: null value in column "started_at" of relation "resource_backups" violates '
    "not-null constraint"
)


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        # seed 004: the real strings that were misbucketed as "dump"
        (SEED_004_MONGO, "auth", "mongo:18"),
        (SEED_004_REDIS, "auth", "redis:WRONGPASS"),
        ("NOAUTH Authentication required.", "auth", "redis:NOAUTH"),
        # PostgreSQL class 28 in its dialects
        (
            'pq: password authentication failed for user "app" (28P01)',
            "auth",
            "28P01",
        ),
        (
            'FATAL: password authentication failed for user "app" (SQLSTATE 28P01)',
            "auth",
            "28P01",
        ),
        ("ERROR: SQLSTATE 28000: role is not permitted to log in", "auth", "28000"),
        (
            'FATAL: no pg_hba.conf entry for host "10.0.0.3", user "app", database "db"',
            "auth",
            "28000",
        ),
        ('password authentication failed for user "backup"', "auth", "28P01"),
        # MongoDB
        ("(AuthenticationFailed) Authentication failed.", "auth", "mongo:18"),
        (
            '{ ok: 0, errmsg: "Authentication failed.", code: 18, codeName: '
            '"AuthenticationFailed" }',
            "auth",
            "mongo:18",
        ),
        ("mongo: command failed with code: 18", "auth", "mongo:18"),
        # MySQL
        (
            "ERROR 1045 (28000): Access denied for user 'app'@'10.0.0.3' (using password: YES)",
            "auth",
            "mysql:1045",
        ),
        ("Error 1045: Access denied for user 'app'@'%'", "auth", "mysql:1045"),
        # transient look-alikes stay transient
        ("mongodump: socket was unexpectedly closed: EOF", "transient", None),
        ("unexpected EOF", "transient", None),
        ("dial tcp 10.0.0.3:5432: connect: connection refused", "transient", None),
        ("context deadline exceeded", "transient", None),
        ("i/o timeout", "transient", None),
        ("read tcp: connection reset by peer", "transient", None),
        (
            "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
            "transient",
            "57P01",
        ),
        (
            "server closed the connection unexpectedly\n\tThis probably means the server "
            "terminated abnormally",
            "transient",
            None,
        ),
        ("redis: connection pool timeout", "transient", None),
        ("FATAL: sorry, too many clients already (SQLSTATE 53300)", "transient", "53300"),
        # near misses that must NOT read as auth
        ("listening on port 28000", "unknown", None),
        ("processed 1045 rows", "unknown", None),
        ("task error code: 18 retries", "unknown", None),
        ("NOAUTHORITY record missing", "unknown", None),
        ("auth_token refreshed; 128P011 bytes", "unknown", None),
        (SEED_004_PQ_NOT_NULL, "unknown", None),
        ("", "unknown", None),
    ],
)
def test_classify_failure(text: str, kind: str, code: str | None) -> None:
    result = classify_failure(text)
    assert (result.kind, result.code) == (kind, code), result.reason


def test_none_is_unknown() -> None:
    assert classify_failure(None).kind == "unknown"


def test_structured_auth_code_beats_transient_marker() -> None:
    text = "dial tcp: i/o timeout after SQLSTATE 28P01"
    assert classify_failure(text).kind == "auth"

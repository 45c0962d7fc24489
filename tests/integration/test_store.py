"""The state store on SQLite and a real PostgreSQL: migrations, drift, unique keys, time zones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel, select

from bot.clock import ensure_utc
from bot.errors import StoreError
from bot.store.db import Store
from bot.store.models import FixLink, OutboxMessage, PollWatermark, RemediationRun, TrackedIssue
from tests.conftest import sqlalchemy_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on an empty database (not upgraded)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = sqlalchemy_url(request.getfixturevalue("pg_dsn"))
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture
def store(empty_store: Store) -> Store:
    empty_store.upgrade()
    return empty_store


def head_revision(store: Store) -> str | None:
    return ScriptDirectory.from_config(store._alembic_config()).get_current_head()


def run(key: str, **overrides: Any) -> RemediationRun:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "idempotency_key": key,
        "playbook_id": "stuck-tasks",
        "issue_id": "1",
        "action": "requeue",
        "mode": "auto",
        "status": "running",
        "created_at": NOW,
    }
    return RemediationRun(**{**values, **overrides})


def outbox(key: str) -> OutboxMessage:
    return OutboxMessage(
        channel="slack", dedupe_key=key, payload={"text": "hi"}, next_attempt_at=NOW, created_at=NOW
    )


def fix_link(ref: str) -> FixLink:
    return FixLink(issue_id="1", repo="acme/api", kind="pr", ref=ref, found_at=NOW)


def test_upgrade_from_empty_reaches_head_with_every_table(empty_store: Store) -> None:
    assert empty_store.current_revision() is None
    empty_store.upgrade()
    head = head_revision(empty_store)
    assert head is not None
    assert empty_store.current_revision() == head
    tables = set(inspect(empty_store.engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables


def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    with store.session() as session:
        session.add(outbox("kept"))
    before = store.current_revision()
    store.upgrade()
    assert store.current_revision() == before
    with store.session() as session:
        assert [m.dedupe_key for m in session.exec(select(OutboxMessage))] == ["kept"]


def test_migrations_match_the_models_no_drift(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (lambda: run("plan:1:stuck"), lambda: run("plan:1:stuck")),
        (lambda: outbox("slack:triaged:1:0"), lambda: outbox("slack:triaged:1:0")),
        (lambda: fix_link("42"), lambda: fix_link("42")),
    ],
    ids=["remediation_run.idempotency_key", "outbox.dedupe_key", "fix_link"],
)
def test_unique_keys_refuse_duplicates(store: Store, first: Any, second: Any) -> None:
    with store.session() as session:
        session.add(first())
    with pytest.raises(StoreError, match="IntegrityError"), store.session() as session:
        session.add(second())
    table = type(first()).__table__
    with store.engine.connect() as conn:
        assert len(conn.execute(select(table)).fetchall()) == 1


def test_distinct_keys_are_all_kept(store: Store) -> None:
    with store.session() as session:
        session.add_all([run("a"), run("b"), outbox("a"), outbox("b"), fix_link("1")])
        session.add(FixLink(issue_id="1", repo="acme/api", kind="commit", ref="1", found_at=NOW))
        session.add(FixLink(issue_id="2", repo="acme/api", kind="pr", ref="1", found_at=NOW))
    with store.session() as session:
        assert len(session.exec(select(RemediationRun)).all()) == 2
        assert len(session.exec(select(OutboxMessage)).all()) == 2
        assert len(session.exec(select(FixLink)).all()) == 3


def test_a_failed_session_rolls_back_everything_in_it(store: Store) -> None:
    with store.session() as session:
        session.add(run("taken"))
    with pytest.raises(StoreError), store.session() as session:
        session.add(outbox("would-be-lost"))
        session.flush()
        session.add(run("taken"))
    with store.session() as session:
        assert session.exec(select(OutboxMessage)).all() == []


def test_timezone_aware_datetimes_round_trip(store: Store) -> None:
    # What the bot writes: aware UTC, from Sentry's "...Z" stamps and the injected clock.
    seen = datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)
    with store.session() as session:
        session.add(
            TrackedIssue(
                id="7",
                short_id="API-7",
                title="Error: tz",
                first_seen=seen - timedelta(days=1),
                last_seen=seen,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        session.add(PollWatermark(source="sentry:x", last_seen=seen, updated_at=NOW))
    with store.session() as session:
        row = session.get(TrackedIssue, "7")
        mark = session.get(PollWatermark, "sentry:x")
        assert row is not None and row.last_seen is not None and row.created_at is not None
        assert mark is not None and mark.last_seen is not None
        # SQLite hands back naive UTC, PostgreSQL aware: ensure_utc makes both the same instant.
        assert ensure_utc(row.last_seen) == seen
        assert ensure_utc(row.last_seen).utcoffset() == timedelta(0)
        assert ensure_utc(row.last_seen).microsecond == 123456
        assert ensure_utc(mark.last_seen) == seen
        assert ensure_utc(row.created_at) == NOW
    with store.session() as session:
        later = session.exec(
            select(TrackedIssue).where(TrackedIssue.last_seen >= seen - timedelta(seconds=1))
        ).all()
        assert [r.id for r in later] == ["7"]


def test_a_non_utc_offset_keeps_its_instant(store: Store) -> None:
    seen = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    with store.session() as session:
        session.add(PollWatermark(source="sentry:y", last_seen=seen, updated_at=NOW))
    with store.session() as session:
        mark = session.get(PollWatermark, "sentry:y")
        assert mark is not None and mark.last_seen is not None
        assert ensure_utc(mark.last_seen) == seen

"""``journal_run``: a run and its follow-up commit together; a duplicate idempotency key
returns the run already journaled; any other refusal is raised, never mistaken for a
duplicate (on SQLite and PostgreSQL, the ``store`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from bot.errors import StoreError
from bot.pipeline.journal import journal_run
from bot.store.db import Store
from bot.store.models import RemediationRun, TrackedIssue

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(key: str) -> RemediationRun:
    return RemediationRun(
        id="",
        idempotency_key=key,
        playbook_id="pb",
        issue_id="1",
        action="notify_only",
        mode="shadow",
        status="shadow",
        params={},
        preview={},
        created_at=NOW,
    )


def test_duplicate_key_returns_the_journaled_run(store: Store) -> None:
    first, inserted = journal_run(store, _run("k1"))
    again, inserted_again = journal_run(store, _run("k1"))
    assert inserted and not inserted_again
    assert again.id == first.id


def test_another_refusal_in_the_follow_up_is_raised_and_nothing_commits(store: Store) -> None:
    def follow_up(session: Session, run: RemediationRun) -> None:
        session.add(TrackedIssue(id="1", short_id="API-1", title="t"))  # NOT NULL columns missing
        session.flush()

    with pytest.raises(StoreError):
        journal_run(store, _run("k2"), follow_up)
    with store.session() as session:
        assert session.exec(select(RemediationRun)).all() == []

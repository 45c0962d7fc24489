"""bot.store.bulk (SQLite only): rows inserted below the ORM read back exactly like rows
the ORM wrote; PostgreSQL is refused (the tracker uses SQLAlchemy there); a failed write
says what failed without the statement's rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select

from bot.errors import StoreError
from bot.store.bulk import insert_many, insert_statements, sqlite_utc_text
from bot.store.db import Store
from bot.store.models import TrackedIssue, Transition, UtcDateTime

PLUS2 = timezone(timedelta(hours=2))
SEEN = datetime(2026, 3, 4, 14, 30, 0, tzinfo=PLUS2)  # whole second, not UTC
NOW = datetime(2026, 3, 4, 13, 0, 0, 123456, tzinfo=UTC)
# The store fixture on SQLite only: the module refuses other dialects.
sqlite_store = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
HOSTILE = "Robert'); DROP TABLE tracked_issue;-- %s %(x)s ? \u00e9 \U0001f600"


def orm_issue(issue_id: str) -> TrackedIssue:
    return TrackedIssue(
        id=issue_id,
        short_id=f"S-{issue_id}",
        title=HOSTILE,
        message=None,
        count=7,
        first_seen=SEEN,
        last_seen=None,
        raw={"id": issue_id, "title": HOSTILE, "nested": {"n": [1, None, True]}},
        triage={},
        created_at=NOW,
        updated_at=NOW,
    )


VARYING = ("id", "short_id", "title", "count", "first_seen", "last_seen", "raw")


def bulk_insert(store: Store, issue_ids: list[str]) -> None:
    """The same rows as orm_issue(), written by insert_many (raw given as JSON text)."""
    rows = [
        (
            i,
            f"S-{i}",
            HOSTILE,
            7,
            SEEN,
            None,
            json.dumps({"id": i, "title": HOSTILE, "nested": {"n": [1, None, True]}}),
        )
        for i in issue_ids
    ]
    constants = {k: v for k, v in orm_issue("x").model_dump().items() if k not in VARYING}
    with store.session() as session:
        insert_many(
            session,
            TrackedIssue.__table__,  # type: ignore[attr-defined]
            VARYING,
            rows,
            constants=constants,
            json_text=("raw",),
        )


def readable(row: TrackedIssue) -> dict[str, object]:
    data = row.model_dump()
    data.pop("id")
    data.pop("short_id")
    data["raw"] = {k: v for k, v in row.raw.items() if k != "id"}
    return data


@sqlite_store
def test_bulk_rows_read_back_like_orm_rows(store: Store) -> None:
    with store.session() as session:
        session.add(orm_issue("orm"))
    bulk_insert(store, ["bulk"])
    with store.session() as session:
        orm = session.get(TrackedIssue, "orm")
        bulk = session.get(TrackedIssue, "bulk")
        assert orm is not None and bulk is not None
        assert readable(bulk) == readable(orm)
        assert bulk.first_seen == SEEN and bulk.created_at == NOW
        assert bulk.title == HOSTILE  # bound, never spliced into the SQL
        # Timestamps compare in SQL the same way whichever path wrote them.
        same = session.exec(
            select(TrackedIssue.id).where(TrackedIssue.first_seen == SEEN)  # type: ignore[arg-type]
        ).all()
        assert sorted(same) == ["bulk", "orm"]


@sqlite_store
def test_many_rows_span_several_statements(store: Store) -> None:
    ids = [str(n) for n in range(12_000)]
    dialect = store.engine.dialect
    statements = insert_statements(
        dialect,
        Transition.__table__,  # type: ignore[attr-defined]
        ("issue_id", "reason"),
        [(i, f"r{i}") for i in ids],
        constants={"from_state": None, "to_state": "new", "at": NOW},
    )
    assert len(statements) > 1
    with store.session() as session:
        insert_many(
            session,
            Transition.__table__,  # type: ignore[attr-defined]
            ("issue_id", "reason"),
            [(i, f"r{i}") for i in ids],
            constants={"from_state": None, "to_state": "new", "at": NOW},
        )
    with store.session() as session:
        rows = session.exec(select(Transition)).all()
    assert sorted(r.issue_id for r in rows) == sorted(ids)
    assert {r.at for r in rows} == {NOW} and {r.to_state for r in rows} == {"new"}


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    dialect = sqlite.dialect()
    table = Transition.__table__  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        insert_statements(dialect, table, ("issue_id", "nope"), [("1", "x")])
    with pytest.raises(ValueError, match="2 columns"):
        insert_statements(dialect, table, ("issue_id", "reason"), [("1", "x"), ("2",)])
    with pytest.raises(ValueError, match="both varying and constant"):
        insert_statements(dialect, table, ("reason",), [("x",)], constants={"reason": "y"})
    assert insert_statements(dialect, table, ("issue_id",), []) == []
    with pytest.raises(NotImplementedError, match="SQLite only"):
        insert_statements(postgresql.psycopg.dialect(), table, ("issue_id",), [("1",)])


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=PLUS2),
        datetime(999, 1, 1, 0, 0, 0, 123, tzinfo=UTC),
        None,
    ],
)
def test_sqlite_timestamp_text_is_what_sqlalchemy_would_bind(value: datetime | None) -> None:
    dialect = sqlite.dialect()
    expected = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)(value)  # type: ignore[misc]
    assert sqlite_utc_text(value) == expected


def test_sqlite_timestamp_text_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        sqlite_utc_text(datetime(2026, 1, 1))


@sqlite_store
def test_a_failed_write_raises_a_short_store_error_and_rolls_back(store: Store) -> None:
    table = Transition.__table__  # type: ignore[attr-defined]
    cols = ("issue_id", "reason", "to_state")
    with pytest.raises(StoreError, match="bulk insert failed") as info, store.session() as session:
        insert_many(session, table, cols, [("1", "a", "n")], constants={"at": NOW})
        # to_state is NOT NULL: the second write fails.
        insert_many(session, table, cols, [("2", "b", None)], constants={"at": NOW})
    assert len(str(info.value)) <= 500  # not the whole statement and its rows
    with store.session() as session:  # the failed session rolled back both writes
        assert session.exec(select(Transition)).all() == []

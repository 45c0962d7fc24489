"""The catalog-aware state transition on a real PostgreSQL (issue #13): enums, domains,
jsonb, partitioned tables, composite keys, NULL refusal, per-row caps, companions, the
queue's own function, and a preview that is the executed statement rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import ValidationError

from bot.actions.base import Limits
from bot.actions.dialect import PostgresDialect, register_dialect
from bot.actions.requeue import ACTION, RequeueSettings
from bot.actions.target import POSTGRESQL, Dialect
from bot.adapters.targets.postgres import PgTarget
from bot.errors import RemediationError, TooManyRows

pytestmark = pytest.mark.postgres

LIMITS = Limits(max_rows=50, statement_timeout_ms=10_000, lock_timeout_ms=1_000, batch_size=7)

# Modelled on pg-boss 10's own schema (timgit/pg-boss src/plans.js createTableJob,
# createPrimaryKey: PRIMARY KEY (name, id) on a table PARTITIONED BY LIST (name)).
SCHEMA = """
CREATE SCHEMA q;
CREATE TYPE q.job_state AS ENUM ('created', 'retry', 'active', 'completed', 'cancelled', 'failed');
CREATE DOMAIN q.short_text AS text CHECK (length(VALUE) < 40);
CREATE TABLE q.job (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    state q.job_state NOT NULL DEFAULT 'created',
    retry_limit integer NOT NULL DEFAULT 2,
    retry_count integer NOT NULL DEFAULT 0,
    started_on timestamptz,
    expire_in interval NOT NULL DEFAULT interval '15 minutes',
    completed_on timestamptz,
    output jsonb,
    note q.short_text,
    owner text
) PARTITION BY LIST (name);
ALTER TABLE q.job ADD PRIMARY KEY (name, id);
CREATE TABLE q.j_alpha PARTITION OF q.job FOR VALUES IN ('alpha');
CREATE TABLE q.j_beta PARTITION OF q.job FOR VALUES IN ('beta');
CREATE TABLE q.queue_lock (id text PRIMARY KEY, locked_by text, locked_at timestamptz);
"""


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        yield conn


@pytest.fixture
def target(pg_dsn: str) -> PgTarget:
    return PgTarget(pg_dsn, name="queue_db")


def add(
    db: psycopg.Connection[Any],
    name: str,
    *,
    started_ago: str = "1 hour",
    expire_in: str = "1 minute",
    retries: int = 0,
    limit: int = 2,
    owner: str | None = None,
) -> str:
    row = db.execute(
        "INSERT INTO q.job (name, state, started_on, expire_in, retry_count, retry_limit, owner)"
        " VALUES (%s, 'active', now() - %s::interval, %s::interval, %s, %s, %s) RETURNING id",
        (name, started_ago, expire_in, retries, limit, owner),
    ).fetchone()
    assert row is not None
    return str(row[0])


def job(db: psycopg.Connection[Any], job_id: str) -> dict[str, Any]:
    cur = db.cursor(row_factory=dict_row)
    row = cur.execute("SELECT * FROM q.job WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def settings(**overrides: Any) -> RequeueSettings:
    values: dict[str, Any] = {
        "table": "q.job",
        "status_column": "state",
        "running_values": ["active"],
        "stale": {"lease": {"started_column": "started_on", "interval_column": "expire_in"}},
        "set": {"state": "retry", "output": {"value": {"message": "expired"}}},
        "cap": {"count_column": "retry_count", "max_column": "retry_limit"},
        "dead_letter_set": {
            "state": "failed",
            "completed_on": {"now": True},
            "output": {"value": {"message": "expired"}},
        },
    }
    return RequeueSettings.model_validate(values | overrides)


def execute(target: PgTarget, s: RequeueSettings, params: dict[str, Any] | None = None) -> Any:
    with target.transaction(LIMITS.statement_timeout_ms, LIMITS.lock_timeout_ms) as conn:
        return ACTION.execute(conn, s, params or {}, LIMITS)


def test_enum_jsonb_and_per_row_cap_on_a_partitioned_table(db: Any, target: PgTarget) -> None:
    expired = add(db, "alpha")
    capped = add(db, "beta", retries=2, limit=2)
    healthy_older = add(db, "alpha", started_ago="2 hours", expire_in="1 day")  # own lease

    outcome = execute(target, settings())

    assert sorted(outcome.details["ids"]) == sorted([expired, capped])
    assert job(db, expired)["state"] == "retry"
    assert job(db, expired)["retry_count"] == 0  # the queue counts retries itself
    assert job(db, expired)["output"] == {"message": "expired"}
    assert job(db, expired)["completed_on"] is None
    assert job(db, capped)["state"] == "failed"
    assert job(db, capped)["completed_on"] is not None
    assert job(db, healthy_older)["state"] == "active"
    assert outcome.details["dead_lettered"] == 1
    with target.transaction(5_000, 500, read_only=True) as conn:
        assert ACTION.verify(conn, settings(), {}, outcome).ok


def test_same_ctid_in_two_partitions_is_named_once_each(db: Any, target: PgTarget) -> None:
    # The first row of each partition has ctid (0,1): row identity by ctid would name one
    # job twice and the other never (issue #13, pg-boss).
    a = add(db, "alpha")
    b = add(db, "beta")
    ctids = db.execute("SELECT ctid::text FROM q.job ORDER BY name").fetchall()
    assert ctids[0] == ctids[1]

    outcome = execute(target, settings())

    named = [(entry["name"], entry["id"]) for entry in outcome.before_image]
    assert sorted(named) == [("alpha", a), ("beta", b)]
    assert outcome.details["keys"] == [{"name": n, "id": i} for n, i in named]
    assert all(entry["state"] == "active" for entry in outcome.before_image)
    assert {job(db, a)["state"], job(db, b)["state"]} == {"retry"}


def test_null_into_a_not_null_column_is_refused_by_preview_and_execute(
    db: Any, target: PgTarget
) -> None:
    stuck = add(db, "alpha")
    bad = settings(set={"state": "retry", "started_on": None, "expire_in": None})
    with (
        pytest.raises(RemediationError, match=r"expire_in to NULL: the column is NOT NULL"),
        target.transaction(5_000, 500) as conn,
    ):
        ACTION.preview(conn, bad, {}, LIMITS)
    with pytest.raises(RemediationError, match="NOT NULL"):
        execute(target, bad)
    assert job(db, stuck)["state"] == "active"


def test_preview_of_a_statement_that_cannot_execute_reports_the_database_error(
    db: Any, target: PgTarget
) -> None:
    stuck = add(db, "alpha")
    # 'paused' is not a q.job_state label; a domain CHECK violation is refused the same way.
    for bad in (
        settings(set={"state": "paused"}),
        settings(set={"state": "retry", "note": "x" * 60}),
    ):
        with (
            pytest.raises(RemediationError, match="database error") as err,
            target.transaction(5_000, 500) as conn,
        ):
            ACTION.preview(conn, bad, {}, LIMITS)
        assert "would" not in str(err.value)
    assert job(db, stuck)["state"] == "active"


def test_preview_equals_execute(db: Any, target: PgTarget) -> None:
    for name in ("alpha", "beta", "alpha"):
        add(db, name)
    add(db, "beta", retries=5, limit=1)
    with target.transaction(5_000, 500) as conn:
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    outcome = execute(target, settings())
    assert "would requeue 3 and dead-letter 1 row(s) in q.job" in preview.summary
    assert sorted(map(str, preview.rows)) == sorted(map(str, outcome.before_image))


def test_preview_reports_refusal_past_max_rows(db: Any, target: PgTarget) -> None:
    for _ in range(4):
        add(db, "alpha")
    small = Limits(max_rows=3, statement_timeout_ms=5_000, lock_timeout_ms=500, batch_size=2)
    with target.transaction(5_000, 500) as conn:
        preview = ACTION.preview(conn, settings(), {}, small)
    assert preview.summary.startswith("execute would refuse: more than max_rows=3")
    assert preview.count == 0


def test_copy_increment_and_companion_lock_row(db: Any, target: PgTarget) -> None:
    stuck = add(db, "alpha", owner="w-dead")
    other = add(db, "beta", owner="w-other", started_ago="1 second", expire_in="1 hour")
    db.execute(
        "INSERT INTO q.queue_lock VALUES ('alpha', 'w-dead', now()), ('beta', 'w-other', now()),"
        " ('gamma', 'w-dead', now())"
    )
    s = settings(
        set={
            "state": "retry",
            "owner": None,
            "note": {"copy": "name"},
            "retry_count": {"increment": 1},
        },
        cap=None,
        dead_letter_set={},
        companions=[
            {
                "table": "q.queue_lock",
                "key_column": "id",
                "ref_column": "name",
                "match": {"locked_by": "owner"},
                "set": {"locked_by": None, "locked_at": None},
            }
        ],
    )
    outcome = execute(target, s)
    after = job(db, stuck)
    assert (after["state"], after["owner"], after["note"], after["retry_count"]) == (
        "retry",
        None,
        "alpha",
        1,
    )
    assert job(db, other)["state"] == "active"
    locks = dict(db.execute("SELECT id, locked_by FROM q.queue_lock").fetchall())
    # Only the changed job's own queue row, and only because its owner matched.
    assert locks == {"alpha": None, "beta": "w-other", "gamma": "w-dead"}
    [image] = outcome.details["companions"]["q.queue_lock"]
    assert (image["id"], image["locked_by"]) == ("alpha", "w-dead")


def test_companion_must_be_found_by_its_primary_key(db: Any, target: PgTarget) -> None:
    add(db, "alpha", owner="w-dead")
    s = settings(
        companions=[
            {
                "table": "q.queue_lock",
                "key_column": "locked_by",
                "ref_column": "owner",
                "set": {"locked_at": None},
            }
        ]
    )
    with pytest.raises(RemediationError, match="must be its primary key"):
        execute(target, s)


def test_session_gone_spares_rows_whose_owner_session_is_alive(
    db: Any, target: PgTarget, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn, application_name="worker-alive") as alive:
        alive.execute("SELECT 1")
        mine = add(db, "alpha", owner="worker-alive")
        dead = add(db, "alpha", owner="worker-crashed")
        s = settings(
            stale={"session_gone": {"owner_column": "owner"}}, cap=None, dead_letter_set={}
        )
        outcome = execute(target, s)
        assert outcome.details["ids"] == [dead]
        assert job(db, mine)["state"] == "active"


def test_call_runs_the_queues_own_function_per_row(db: Any, target: PgTarget) -> None:
    db.execute(
        "CREATE FUNCTION q.retry(job_id uuid, at timestamptz, why text) RETURNS void"
        " LANGUAGE sql AS $$ UPDATE q.job SET state = 'retry', completed_on = at,"
        " output = jsonb_build_object('why', why) WHERE id = job_id AND state = 'active' $$"
    )
    stuck = add(db, "alpha")
    s = settings(
        set={},
        cap=None,
        dead_letter_set={},
        call={"function": "q.retry", "args": [{"column": "id"}, {"now": True}, "stalled"]},
    )
    outcome = execute(target, s)
    assert outcome.details["ids"] == [stuck]
    assert job(db, stuck)["state"] == "retry"
    assert job(db, stuck)["output"] == {"why": "stalled"}
    assert outcome.before_image[0]["state"] == "active"


def test_optional_scope_narrows_only_when_extracted(db: Any, target: PgTarget) -> None:
    a = add(db, "alpha")
    b = add(db, "beta")
    s = settings(optional_scope={"name": "queue"})
    assert execute(target, s, {"queue": "beta"}).details["ids"] == [b]
    assert execute(target, s).details["ids"] == [a]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stale": {"age": {"column": "started_on", "seconds": 30}}}, "liveness signal"),
        ({"set": {"state": {"nowish": True}}}, "expected a value"),
        ({"set": {"state": [1]}}, "list value"),
        ({"cap": None}, "dead_letter_set needs cap"),
        ({"mode": "lease_timeout"}, "cannot be combined"),
        ({"status_column": None}, "running_values needs status_column"),
        ({"set": {"state; DROP TABLE x": "retry"}}, "valid SQL identifier"),
        ({"call": {"function": "f", "args": [{"increment": 1}]}}, "cannot be an increment"),
        ({"call": {"function": "f", "args": []}}, "call replaces"),
    ],
)
def test_settings_refused_at_load(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**overrides)


def test_age_with_a_stated_reason_is_allowed(db: Any, target: PgTarget) -> None:
    stuck = add(db, "alpha")
    s = settings(
        stale={
            "age": {
                "column": "started_on",
                "seconds": 600,
                "no_liveness_signal": "this queue has no heartbeat and no lease",
            }
        }
    )
    assert execute(target, s).details["ids"] == [stuck]


def test_a_shadow_run_of_a_statement_that_cannot_execute_reports_the_database_error(
    db: Any, pg_dsn: str, tmp_path: Any, clock: Any
) -> None:
    from bot.pipeline.execute import Executor
    from bot.playbooks.matcher import MatchResult
    from tests.helpers_engine import build_playbook, make_store, track_issue

    stuck = add(db, "alpha")
    store = make_store(f"sqlite:///{tmp_path / 'state.db'}")
    pb = build_playbook(
        {
            "id": "bad-enum",
            "priority": 1,
            "match": {"title": "stuck"},
            "action": {
                "type": "requeue_stuck_tasks",
                "target": "queue_db",
                "settings": settings(
                    set={"state": "paused"}, cap=None, dead_letter_set={}
                ).model_dump(exclude_defaults=True),
            },
            "guards": {"mode": "shadow"},
        }
    )
    issue = track_issue(store, clock)
    executor = Executor(
        store, {pb.id: pb}, lambda n: PgTarget(pg_dsn, name=n) if n == "queue_db" else None, clock
    )
    out = executor.plan(issue, MatchResult(pb, {}))
    assert out.preview is None
    assert "preview failed: database error" in out.note
    assert 'invalid input value for enum q.job_state: "paused"' in out.note
    assert "would" not in out.note
    assert job(db, stuck)["state"] == "active"
    store.dispose()


class _PortablePostgres(PostgresDialect):
    """The portable path (for engines without UPDATE ... RETURNING) run on PostgreSQL,
    so it is proved on a real server before MariaDB/SQLite adapters use it."""

    name = "postgresql-portable"
    update_returning = False


class _PortableConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return replace(POSTGRESQL, name="postgresql-portable")

    @property
    def memo(self) -> dict[object, object]:
        return self._conn.memo

    def fetch_all(self, query: Any, params: Any = None) -> list[dict[str, Any]]:
        return self._conn.fetch_all(query, params)

    def execute(self, query: Any, params: Any = None) -> int:
        return self._conn.execute(query, params)


def test_portable_path_matches_the_single_statement_path(db: Any, target: PgTarget) -> None:
    register_dialect(_PortablePostgres())
    expired = add(db, "alpha")
    capped = add(db, "beta", retries=2, limit=2)
    healthy = add(db, "alpha", started_ago="2 hours", expire_in="1 day")
    small = Limits(max_rows=10, statement_timeout_ms=5_000, lock_timeout_ms=500, batch_size=1)
    with target.transaction(5_000, 500) as raw:
        conn = _PortableConnection(raw)
        preview = ACTION.preview(conn, settings(), {}, small)
        outcome = ACTION.execute(conn, settings(), {}, small)
        assert ACTION.verify(conn, settings(), {}, outcome).ok
    assert "would requeue 1 and dead-letter 1" in preview.summary
    assert sorted(map(str, preview.rows)) == sorted(map(str, outcome.before_image))
    assert sorted(outcome.details["ids"]) == sorted([expired, capped])
    assert (job(db, expired)["state"], job(db, capped)["state"]) == ("retry", "failed")
    assert job(db, capped)["completed_on"] is not None
    assert job(db, healthy)["state"] == "active"
    companions = settings(
        companions=[{"table": "q.queue_lock", "ref_column": "name", "set": {"locked_by": None}}]
    )
    with (
        target.transaction(5_000, 500) as raw,
        pytest.raises(RemediationError, match="companions need UPDATE"),
    ):
        ACTION.execute(_PortableConnection(raw), companions, {}, small)
    too_few = Limits(max_rows=1, statement_timeout_ms=5_000, lock_timeout_ms=500, batch_size=5)
    add(db, "alpha")
    add(db, "beta")
    with pytest.raises(TooManyRows), target.transaction(5_000, 500) as raw:
        ACTION.execute(_PortableConnection(raw), settings(), {}, too_few)
    assert db.execute("SELECT count(*) FROM q.job WHERE state = 'active'").fetchone() == (3,)


def test_a_table_without_primary_key_is_refused(db: Any, target: PgTarget) -> None:
    db.execute("CREATE TABLE q.loose (state text NOT NULL, started_on timestamptz)")
    db.execute("INSERT INTO q.loose VALUES ('active', now() - interval '1 day')")
    s = RequeueSettings.model_validate(
        {
            "table": "q.loose",
            "status_column": "state",
            "running_values": ["active"],
            "stale": {
                "age": {"column": "started_on", "seconds": 60, "no_liveness_signal": "a test table"}
            },
            "set": {"state": "retry"},
        }
    )
    with pytest.raises(RemediationError, match="no primary key"):
        execute(target, s)
    with pytest.raises(RemediationError, match="does not exist"):
        execute(target, settings(table="q.nope"))
    with pytest.raises(RemediationError, match="has no column 'missing'"):
        execute(target, settings(set={"missing": 1}, cap=None, dead_letter_set={}))


def test_a_set_that_leaves_rows_stuck_is_refused_not_looped(db: Any, target: PgTarget) -> None:
    add(db, "alpha")
    add(db, "beta")
    looping = settings(set={"output": {"value": {"seen": True}}}, cap=None, dead_letter_set={})
    small = Limits(max_rows=50, statement_timeout_ms=5_000, lock_timeout_ms=500, batch_size=1)
    with (
        pytest.raises(RemediationError, match="leaves changed rows matching"),
        target.transaction(5_000, 500) as conn,
    ):
        ACTION.execute(conn, looping, {}, small)
    assert db.execute("SELECT count(*) FROM q.job WHERE output IS NULL").fetchone() == (2,)

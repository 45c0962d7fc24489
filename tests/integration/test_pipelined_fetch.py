"""``fetch_each`` on the real PostgreSQL adapter: statements sent in one psycopg pipeline.

A storm verifies a thousand runs with a thousand independent reads; the PostgreSQL
adapter sends them together (psycopg's pipeline mode: one round trip) instead of one by
one. Checked on the real server: the same rows, in order, as one statement at a time;
binds stay binds (a hostile value is data); a statement the server refuses raises the
bot's translated error and the transaction rolls back (nothing of it commits); the
other adapters answer the same through the one-by-one path.
"""

from __future__ import annotations

import psycopg
import pytest

from bot.actions.port import Pipelining, fetch_each
from bot.adapters.targets.postgres import PgTarget
from bot.errors import RemediationError

pytestmark = pytest.mark.postgres

HOSTILE = "x'); DROP TABLE t; --\x01"


@pytest.fixture
def target(pg_dsn: str) -> PgTarget:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 50) AS g")
    return PgTarget(pg_dsn, name="jobs_db")


def test_pipelined_reads_answer_what_one_at_a_time_answers(target: PgTarget) -> None:
    statements: list[tuple[str, dict[str, object]]] = [
        ("SELECT id, name FROM t WHERE id = %(i)s", {"i": n}) for n in range(0, 60, 3)
    ]
    statements.append(("SELECT count(*) AS n FROM t WHERE name = %(h)s", {"h": HOSTILE}))
    with target.transaction(5000, 1000, read_only=True) as conn:
        assert isinstance(conn, Pipelining)
        together = fetch_each(conn, statements)
        alone = [conn.fetch_all(q, p) for q, p in statements]
    assert together == alone
    assert together[1] == [{"id": 3, "name": "n3"}] and together[0] == []  # id 0: none
    assert together[-1] == [{"n": 0}]  # the hostile text stayed a value
    target.close()


def test_a_refused_statement_raises_translated_and_nothing_commits(
    target: PgTarget, pg_dsn: str
) -> None:
    statements: list[tuple[str, dict[str, object]]] = [
        ("UPDATE t SET name = 'changed' WHERE id = %(i)s RETURNING id", {"i": 1}),
        ("SELECT 1 / (id - id) AS boom FROM t WHERE id = %(i)s", {"i": 2}),
        ("UPDATE t SET name = 'changed' WHERE id = %(i)s RETURNING id", {"i": 3}),
    ]
    with (
        pytest.raises(RemediationError, match="division by zero"),
        target.transaction(5000, 1000) as conn,
    ):
        fetch_each(conn, statements)
    with psycopg.connect(pg_dsn) as check:
        row = check.execute("SELECT count(*) FROM t WHERE name = 'changed'").fetchone()
    assert row == (0,)
    # The pool is not poisoned: the next transaction works.
    with target.transaction(5000, 1000, read_only=True) as conn:
        assert fetch_each(conn, [("SELECT 7 AS x", {})]) == [[{"x": 7}]]
    target.close()

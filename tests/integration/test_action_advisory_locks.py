"""release_advisory_locks on real connections: seed 001 (a session advisory lock left held
by an idle pooled connection after pg_advisory_unlock ran on another connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.actions.advisory_locks import (
    ACTION,
    TERMINATE_SQL,
    AdvisoryLockSettings,
    ReleaseAdvisoryLocks,
    lock_triple,
)
from bot.actions.base import Limits, Outcome
from bot.adapters.targets.postgres import PgTarget
from bot.clock import FakeClock
from bot.errors import TooManyRows

pytestmark = pytest.mark.postgres

KEY = 20260417
LIMITS = Limits(max_rows=5, statement_timeout_ms=10_000, lock_timeout_ms=1_000)
Connect = Callable[..., psycopg.Connection[Any]]


@pytest.fixture
def admin(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def connect(pg_dsn: str, victim_role: str) -> Iterator[Connect]:
    opened: list[psycopg.Connection[Any]] = []

    def _connect(*, user: str | None = victim_role, autocommit: bool = True) -> Any:
        dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=user) if user else pg_dsn
        conn = psycopg.connect(dsn, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def settings(**overrides: Any) -> AdvisoryLockSettings:
    return AdvisoryLockSettings.model_validate(
        {"allowed_keys": [KEY], "min_idle_seconds": 0} | overrides
    )


def execute(target: PgTarget, s: AdvisoryLockSettings, limits: Limits = LIMITS) -> Outcome:
    with target.transaction(limits.statement_timeout_ms, limits.lock_timeout_ms) as conn:
        return ACTION.execute(conn, s, {}, limits)


def holders(admin: psycopg.Connection[Any], key: int = KEY) -> list[int]:
    classid, objid, objsubid = lock_triple(key)
    rows = admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = %s"
        # This test's database only: other tests on the server may hold the same key.
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (classid, objid, objsubid),
    ).fetchall()
    return [r[0] for r in rows]


def alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def test_seed_001_lock_stranded_by_wrong_connection_unlock_is_released(
    admin: Any, connect: Connect, pg_dsn: str
) -> None:
    a = connect()
    b = connect()
    assert a.execute("SELECT pg_try_advisory_lock(%s)", (KEY,)).fetchone() == (True,)
    notices: list[str] = []
    b.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    # The seed bug: unlock on another pooled connection is a silent no-op.
    assert b.execute("SELECT pg_advisory_unlock(%s)", (KEY,)).fetchone() == (False,)
    assert any("you don't own a lock" in n for n in notices)  # the WARNING
    assert holders(admin) == [a.info.backend_pid]

    target = PgTarget(pg_dsn)
    with target.transaction(10_000, 1_000, read_only=True) as conn:
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert [r["pid"] for r in preview.rows] == [a.info.backend_pid]
    assert preview.rows[0]["keys"] == [KEY]

    outcome = execute(target, settings())

    assert outcome.details["pids"] == [a.info.backend_pid]
    assert holders(admin) == []
    assert not alive(a)
    assert alive(b)
    checker = ReleaseAdvisoryLocks(clock=FakeClock())
    with target.transaction(10_000, 1_000, read_only=True) as conn:
        assert checker.verify(conn, settings(), {}, outcome).ok


def test_active_holder_is_not_terminated(admin: Any, connect: Connect, pg_dsn: str) -> None:
    a = connect()
    pid = a.info.backend_pid
    errors: list[BaseException] = []

    def busy() -> None:
        try:
            a.execute("SELECT pg_advisory_lock(%s), pg_sleep(60)", (KEY,))
        except psycopg.errors.QueryCanceled as exc:
            errors.append(exc)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        for _ in range(500):
            if holders(admin) == [pid]:
                break
            threading.Event().wait(0.01)
        assert holders(admin) == [pid]
        outcome = execute(PgTarget(pg_dsn), settings(idle_states=["idle", "idle in transaction"]))
        assert outcome.rows_affected == 0
    finally:
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(timeout=30)
    assert errors  # it was cancelled by us, not terminated by the action
    assert alive(a)


@pytest.mark.parametrize(
    ("held", "overrides"),
    [
        (42, {}),  # not allowlisted
        (KEY, {"min_idle_seconds": 3600}),  # idle, but not for long enough
    ],
)
def test_holder_outside_the_rules_is_not_terminated(
    admin: Any, connect: Connect, pg_dsn: str, held: int, overrides: dict[str, Any]
) -> None:
    a = connect()
    a.execute("SELECT pg_advisory_lock(%s)", (held,))
    outcome = execute(PgTarget(pg_dsn), settings(**overrides))
    assert outcome.rows_affected == 0
    assert alive(a)
    assert holders(admin, held) == [a.info.backend_pid]


def test_superuser_holder_is_not_terminated(admin: Any, connect: Connect, pg_dsn: str) -> None:
    su = connect(user=None)
    su.execute("SELECT pg_advisory_lock(%s)", (KEY,))
    assert execute(PgTarget(pg_dsn), settings()).rows_affected == 0
    assert alive(su)


def test_own_session_holding_the_key_is_not_terminated(pg_dsn: str, admin: Any) -> None:
    target = PgTarget(pg_dsn)
    with target.transaction(10_000, 1_000) as conn:
        conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(sql.Literal(KEY)))
        outcome = ACTION.execute(conn, settings(), {}, LIMITS)
        assert conn.fetch_all(sql.SQL("SELECT 1 AS one")) == [{"one": 1}]
    assert outcome.rows_affected == 0


def test_idle_in_transaction_only_when_configured(
    admin: Any, connect: Connect, pg_dsn: str
) -> None:
    a = connect(autocommit=False)
    a.execute("SELECT pg_advisory_lock(%s)", (KEY,))  # leaves the transaction open
    target = PgTarget(pg_dsn)
    assert execute(target, settings()).rows_affected == 0
    assert holders(admin) == [a.info.backend_pid]
    outcome = execute(target, settings(idle_states=["idle in transaction"]))
    assert outcome.details["pids"] == [a.info.backend_pid]
    assert holders(admin) == []


def test_two_int_key_form(admin: Any, connect: Connect, pg_dsn: str) -> None:
    a = connect()
    a.execute("SELECT pg_advisory_lock(7, -42)")
    outcome = execute(PgTarget(pg_dsn), settings(allowed_keys=[[7, -42]]))
    assert outcome.before_image[0]["keys"] == [[7, -42]]
    assert not alive(a)


def test_more_backends_than_max_rows_terminates_none(
    admin: Any, connect: Connect, pg_dsn: str
) -> None:
    a, b = connect(), connect()
    a.execute("SELECT pg_advisory_lock(1)")
    b.execute("SELECT pg_advisory_lock(2)")
    with pytest.raises(TooManyRows):
        execute(PgTarget(pg_dsn), settings(allowed_keys=[1, 2]), Limits(max_rows=1))
    assert alive(a)
    assert alive(b)


def test_terminate_rechecks_backend_identity(admin: Any, connect: Connect, pg_dsn: str) -> None:
    a = connect()
    a.execute("SELECT pg_advisory_lock(%s)", (KEY,))
    start = admin.execute(
        "SELECT backend_start FROM pg_stat_activity WHERE pid = %s", (a.info.backend_pid,)
    ).fetchone()[0]
    with PgTarget(pg_dsn).transaction(10_000, 1_000) as conn:
        rows = conn.fetch_all(
            TERMINATE_SQL,
            {
                "wait_ms": 0,
                "pid": a.info.backend_pid,
                "backend_start": start.replace(microsecond=(start.microsecond + 1) % 1_000_000),
                "states": ["idle"],
                "min_idle": 0,
            },
        )
    assert rows == []  # a recycled pid (different backend_start) is never signalled
    assert alive(a)


def test_verify_polls_a_bounded_number_of_times(connect: Connect, pg_dsn: str) -> None:
    a = connect()
    a.execute("SELECT pg_advisory_lock(%s)", (KEY,))
    clock = FakeClock()
    checker = ReleaseAdvisoryLocks(clock=clock)
    s = settings(verify_attempts=3, verify_interval_seconds=0.5)
    with PgTarget(pg_dsn).transaction(10_000, 1_000, read_only=True) as conn:
        check = checker.verify(conn, s, {}, Outcome(1, details={"pids": [a.info.backend_pid]}))
    assert not check.ok
    assert clock.sleeps == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("key", "triple"),
    [
        (20260417, (0, 20260417, 1)),
        (2**32 + 5, (1, 5, 1)),
        (-1, (0xFFFFFFFF, 0xFFFFFFFF, 1)),
        ((7, 42), (7, 42, 2)),
        ((-1, 3), (0xFFFFFFFF, 3, 2)),
    ],
)
def test_lock_triple_matches_pg_locks(
    admin: Any, connect: Connect, key: Any, triple: tuple[int, int, int]
) -> None:
    assert lock_triple(key) == triple
    a = connect()
    if isinstance(key, tuple):
        a.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", key)
    else:
        a.execute("SELECT pg_advisory_lock(%s::int8)", (key,))
    row = admin.execute(
        "SELECT classid::bigint, objid::bigint, objsubid::int FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = %s",
        (a.info.backend_pid,),
    ).fetchone()
    assert row == triple

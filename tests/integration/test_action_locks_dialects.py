"""release_advisory_locks over every dialect: seed 001 (a session lock left held by an
idle pooled connection after the unlock ran on another connection).

PostgreSQL: ``pg_try_advisory_lock`` / ``pg_advisory_unlock``. MariaDB: ``GET_LOCK`` /
``RELEASE_LOCK`` (the bug reproduced on MariaDB 10.11: RELEASE_LOCK on another
connection returns 0 and the lock stays; DESIGN.md "Verified on our machines"). SQLite
has no session locks: the action refuses. PostgreSQL-only details (two-int keys, the
stats snapshot) stay in test_action_advisory_locks.py.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql

from bot.actions import user_locks_mysql
from bot.actions.advisory_locks import ACTION, AdvisoryLockSettings
from bot.actions.base import Limits, Outcome
from bot.errors import RemediationError, TooManyRows
from tests.targets import TargetDb, mysql_connect

KEY = 20260417
OTHER_KEY = 42
LIMITS = Limits(max_rows=5, statement_timeout_ms=10_000, lock_timeout_ms=1_000)


@dataclass
class Locks:
    """The dialect's lock calls and a non-superuser login, through raw drivers."""

    db: TargetDb
    user: str

    def connect(self, *, superuser: bool = False) -> Any:
        if superuser:
            return self.db.connect()
        if self.db.dialect == "postgresql":
            conn = psycopg.connect(
                psycopg.conninfo.make_conninfo(self.db.url, user=self.user), autocommit=True
            )
        else:
            conn = pymysql.connect(
                host="127.0.0.1",
                port=int(self.db.url.rsplit(":", 1)[1].split("/")[0]),
                user=self.user,
                autocommit=True,
            )
        self.db.opened.append(conn)
        return conn

    def one(self, conn: Any, text: str, params: dict[str, Any]) -> Any:
        rows = self.db.sql(text, params, conn)
        return rows[0][0] if rows else None

    def take(self, conn: Any, key: int) -> bool:
        if self.db.dialect == "postgresql":
            return bool(self.one(conn, "SELECT pg_try_advisory_lock(%(k)s)", {"k": key}))
        return self.one(conn, "SELECT GET_LOCK(%(k)s, 0)", {"k": str(key)}) == 1

    def unlock(self, conn: Any, key: int) -> bool:
        if self.db.dialect == "postgresql":
            return bool(self.one(conn, "SELECT pg_advisory_unlock(%(k)s)", {"k": key}))
        return self.one(conn, "SELECT RELEASE_LOCK(%(k)s)", {"k": str(key)}) == 1

    def conn_id(self, conn: Any) -> int:
        if self.db.dialect == "postgresql":
            return int(conn.info.backend_pid)
        return int(conn.thread_id())

    def holders(self, key: int = KEY) -> list[int]:
        if self.db.dialect == "postgresql":
            rows = self.db.sql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objid = %(k)s::bigint::oid AND objsubid = 1 AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())",
                {"k": key},
            )
            return [r[0] for r in rows]
        holder = self.one(self.db.admin, "SELECT IS_USED_LOCK(%(k)s)", {"k": str(key)})
        return [] if holder is None else [int(holder)]

    def alive(self, conn: Any) -> bool:
        try:
            self.one(conn, "SELECT 1", {})
            return True
        except (psycopg.OperationalError, pymysql.err.OperationalError):
            return False
        except pymysql.err.InterfaceError:
            return False


@pytest.fixture
def locks(target_db: TargetDb) -> Iterator[Locks]:
    if target_db.dialect == "sqlite":
        yield Locks(target_db, "")
        return
    user = f"bot_victim_{uuid.uuid4().hex[:8]}"
    if target_db.dialect == "postgresql":
        target_db.sql(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(user)).as_string(None))
    else:
        target_db.sql(f"CREATE USER '{user}'@'%'")
    try:
        yield Locks(target_db, user)
    finally:
        target_db.close()
        target_db.opened.clear()
        target_db._admin = None
        if target_db.dialect == "postgresql":
            with psycopg.connect(target_db.url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (user,),
                )
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
        else:
            with mysql_connect(target_db.url) as admin, admin.cursor() as cur:
                cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def settings(**overrides: Any) -> AdvisoryLockSettings:
    return AdvisoryLockSettings.model_validate(
        {"allowed_keys": [KEY], "min_idle_seconds": 0, "verify_interval_seconds": 0.1} | overrides
    )


def execute(db: TargetDb, s: AdvisoryLockSettings, limits: Limits = LIMITS) -> Outcome:
    with db.target.transaction(limits.statement_timeout_ms, limits.lock_timeout_ms) as conn:
        return ACTION.execute(conn, s, {}, limits)


# Session locks exist on the servers; SQLite's refusal has its own test at the end.
servers = pytest.mark.parametrize("target_db", ["postgresql", "mariadb"], indirect=True)


@servers
def test_seed_001_lock_stranded_by_the_wrong_connection_is_released(locks: Locks) -> None:
    a, b = locks.connect(), locks.connect()
    assert locks.take(a, KEY)
    assert not locks.unlock(b, KEY)  # the seed bug: a silent no-op on the other connection
    assert locks.holders() == [locks.conn_id(a)]

    with locks.db.target.transaction(10_000, 1_000, read_only=True) as conn:
        preview = ACTION.preview(conn, settings(), {}, LIMITS)
    assert [r["pid"] for r in preview.rows] == [locks.conn_id(a)]
    assert [str(k) for k in preview.rows[0]["keys"]] == [str(KEY)]

    outcome = execute(locks.db, settings())

    assert outcome.details["pids"] == [locks.conn_id(a)]  # preview == execute
    assert locks.holders() == []
    assert not locks.alive(a)
    assert locks.alive(b)
    with locks.db.target.transaction(10_000, 1_000, read_only=True) as conn:
        check = ACTION.verify(conn, settings(), {}, outcome)
    assert check.ok, check.summary
    if locks.db.dialect == "mariadb":
        free = locks.one(locks.db.admin, "SELECT IS_FREE_LOCK(%(k)s)", {"k": str(KEY)})
        assert free == 1


@servers
def test_an_active_holder_is_left_alone(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, KEY)
    me = locks.conn_id(holder)
    sleep = "SELECT pg_sleep(30)" if locks.db.dialect == "postgresql" else "SELECT SLEEP(30)"

    def run_query() -> None:
        # Cancelled below: PostgreSQL raises QueryCanceled, MariaDB 1317 "interrupted".
        with contextlib.suppress(psycopg.errors.QueryCanceled, pymysql.err.OperationalError):
            locks.db.sql(sleep, {}, holder)

    busy = threading.Thread(target=run_query, daemon=True)
    busy.start()
    active = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %(id)s AND state = 'active'"
        if locks.db.dialect == "postgresql"
        else "SELECT count(*) FROM information_schema.PROCESSLIST"
        " WHERE ID = %(id)s AND COMMAND = 'Query'"
    )
    for _ in range(400):  # poll (up to ~40 s on a slow host) until the holder is running
        if locks.one(locks.db.admin, active, {"id": me}):
            break
        threading.Event().wait(0.1)
    else:
        pytest.fail("the holder never started its query")
    try:
        outcome = execute(locks.db, settings())
        assert outcome.rows_affected == 0
        assert locks.holders() == [me]
    finally:
        cancel = (
            "SELECT pg_cancel_backend(%(id)s)"
            if locks.db.dialect == "postgresql"
            else "KILL QUERY %(id)s"
        )
        locks.db.sql(cancel, {"id": me})
        busy.join(timeout=30)


@servers
def test_recently_active_holder_is_not_idle_long_enough(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, KEY)
    assert execute(locks.db, settings(min_idle_seconds=3600)).rows_affected == 0
    assert locks.holders() == [locks.conn_id(holder)]


@servers
def test_a_lock_not_on_the_allowlist_is_left_alone(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, OTHER_KEY)
    assert execute(locks.db, settings()).rows_affected == 0
    assert locks.holders(OTHER_KEY) == [locks.conn_id(holder)]
    assert locks.alive(holder)


@servers
def test_a_superuser_holder_is_left_alone(locks: Locks) -> None:
    root = locks.connect(superuser=True)
    assert locks.take(root, KEY)
    assert execute(locks.db, settings()).rows_affected == 0
    assert locks.alive(root)


@servers
def test_idle_in_transaction_only_when_asked(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, KEY)
    if locks.db.dialect == "postgresql":
        locks.db.sql("BEGIN; SELECT txid_current()", None, holder)
    else:
        # An InnoDB transaction shows in INNODB_TRX once it has a snapshot.
        locks.db.sql("START TRANSACTION WITH CONSISTENT SNAPSHOT", None, holder)
    assert execute(locks.db, settings()).rows_affected == 0
    assert locks.alive(holder)
    wide = settings(idle_states=["idle", "idle in transaction"])
    assert execute(locks.db, wide).details["pids"] == [locks.conn_id(holder)]


@servers
def test_max_rows_refuses_and_kills_nobody(locks: Locks) -> None:
    first, second = locks.connect(), locks.connect()
    assert locks.take(first, KEY) and locks.take(second, 314159)
    with pytest.raises(TooManyRows):
        execute(locks.db, settings(allowed_keys=[KEY, 314159]), Limits(max_rows=1))
    assert locks.alive(first) and locks.alive(second)


@pytest.mark.parametrize("target_db", ["mariadb"], indirect=True)
def test_mariadb_identity_recheck_spares_a_changed_connection(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, KEY)
    with locks.db.target.transaction(10_000, 1_000) as conn:
        [cand] = user_locks_mysql.candidates(conn, [str(KEY)], 0, ("idle",))
        locks.one(holder, "SELECT 1", {})  # the holder runs something: a new QUERY_ID
        assert not user_locks_mysql.kill_if_unchanged(conn, cand, 0, ("idle",))
        moved = cand | {"host": "10.9.9.9:1"}
        assert not user_locks_mysql.kill_if_unchanged(conn, moved, 0, ("idle",))
    assert locks.alive(holder)


@servers
def test_hostile_lock_key_param_never_widens_the_allowlist(locks: Locks) -> None:
    holder = locks.connect()
    assert locks.take(holder, KEY)
    with locks.db.target.transaction(10_000, 1_000) as conn:
        outcome = ACTION.execute(conn, settings(), {"lock_key": f"{KEY}' OR '1'='1"}, LIMITS)
    assert outcome.rows_affected == 0
    assert locks.alive(holder)


@pytest.mark.parametrize("target_db", ["sqlite"], indirect=True)
def test_sqlite_has_no_session_locks_to_release(locks: Locks) -> None:
    assert "sqlite" not in ACTION.dialects
    with (
        pytest.raises(RemediationError, match="no session-level locks"),
        locks.db.target.transaction(1_000, 1_000, read_only=True) as conn,
    ):
        ACTION.preview(conn, settings(), {}, LIMITS)


def test_a_sqlite_target_refuses_the_playbook_at_load(tmp_path: Any) -> None:
    from pathlib import Path

    from bot.clock import FakeClock
    from bot.interfaces.app import App
    from bot.interfaces.wiring import load_matcher
    from bot.settings import Settings
    from bot.store.db import Store

    shipped = Path(__file__).resolve().parents[2] / "playbooks"
    settings = Settings.model_validate(
        {
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "BOT_PLAYBOOKS_DIR": str(shipped),
            "targets": {
                "api_db": f"sqlite:///{tmp_path / 'api.db'}",
                "torrentflow_db": "mariadb://root@127.0.0.1/tf",
            },
        }
    )
    app = App(settings=settings, store=Store(settings.database_url), clock=FakeClock())
    _, playbooks = load_matcher(app)
    assert "api-release-integrity-hash-lock" not in playbooks  # refused, with the reason:
    [error] = app.playbook_errors
    assert "api-release-integrity-hash-lock.yaml" in error
    assert "release_advisory_locks cannot run on target api_db" in error
    assert "SQLite has no session-level locks" in error
    # Everything else still loads, the MariaDB-targeted requeue included.
    assert "torrentflow-requeue-offline-agent-jobs" in playbooks


def test_a_postgresql_only_action_is_refused_at_load_on_other_dialects(tmp_path: Any) -> None:
    from pathlib import Path

    from bot.playbooks.loader import load_playbooks

    (tmp_path / "flag.yaml").write_text(
        "id: throttle\npriority: 1\nmatch: {title: x}\naction:\n  type: set_flag\n"
        "  target: api_db\n  settings: {table: rate_limits, key_column: name,"
        " key: page_discovery, value_column: max_per_minute, value: 10}\n"
    )
    for dialect, loads in (("postgresql", True), ("mariadb", False), ("sqlite", False)):
        result = load_playbooks(Path(tmp_path), target_dialect=lambda _n, d=dialect: d)
        assert bool(result.playbooks) is loads
        if not loads:
            [error] = result.errors
            assert f"set_flag cannot run on target api_db: it is a {dialect} database" in str(error)

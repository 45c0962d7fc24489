"""The target layer on a real PostgreSQL: one transaction, SET LOCAL timeouts, error
translation without secrets; identifier checks; every registered action's contract."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.actions.base import ActionSettings, Limits
from bot.actions.registry import action_names, get_action
from bot.actions.target import check_identifier
from bot.adapters.targets.postgres import PgTarget
from bot.errors import LockTimeout, RemediationError, TargetUnavailable


@pytest.mark.parametrize(
    "name",
    ["tasks", "_t", "public.tasks", "Tasks_2", "a" * 63, "s" * 63 + "." + "t" * 63],
)
def test_valid_identifiers(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1tasks",
        "tasks;",
        "tasks\n",
        "tasks; DROP TABLE x",
        'ta"sks',
        "a.b.c",
        "a" * 64,
        "tâches",
        "tasks ",
        ".tasks",
        "tasks.",
    ],
)
def test_invalid_identifiers(name: str) -> None:
    with pytest.raises(ValueError):
        check_identifier(name)


@pytest.mark.postgres
def test_transaction_applies_local_timeouts_and_commits(pg_dsn: str) -> None:
    target = PgTarget(pg_dsn)
    with target.transaction(1_500, 250) as conn:
        row = conn.fetch_all(
            sql.SQL(
                "SELECT current_setting('statement_timeout') AS st,"
                " current_setting('lock_timeout') AS lt"
            )
        )[0]
        conn.execute(sql.SQL("CREATE TABLE kept (id int)"))
    assert row == {"st": "1500ms", "lt": "250ms"}
    with psycopg.connect(pg_dsn) as check:
        assert check.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)


@pytest.mark.postgres
def test_exception_rolls_back(pg_dsn: str) -> None:
    with pytest.raises(ZeroDivisionError), PgTarget(pg_dsn).transaction(1_000, 1_000) as conn:
        conn.execute(sql.SQL("CREATE TABLE dropped (id int)"))
        _ = 1 / 0
    with psycopg.connect(pg_dsn) as check:
        assert check.execute("SELECT to_regclass('dropped') IS NULL").fetchone() == (True,)


@pytest.mark.postgres
def test_read_only_transaction_refuses_writes(pg_dsn: str) -> None:
    with (
        pytest.raises(RemediationError) as info,
        PgTarget(pg_dsn).transaction(1_000, 1_000, read_only=True) as conn,
    ):
        conn.execute(sql.SQL("CREATE TABLE nope (id int)"))
    assert isinstance(info.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)


@pytest.mark.postgres
def test_statement_timeout_is_lock_timeout_error(pg_dsn: str) -> None:
    with (
        pytest.raises(LockTimeout) as info,
        PgTarget(pg_dsn, name="jobs_db").transaction(100, 100) as conn,
    ):
        conn.fetch_all(sql.SQL("SELECT pg_sleep(5)"))
    assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
    assert info.value.context["target"] == "jobs_db"


@pytest.mark.postgres
def test_other_database_errors_are_remediation_errors(pg_dsn: str) -> None:
    with pytest.raises(RemediationError) as info, PgTarget(pg_dsn).transaction(1_000, 1_000) as c:
        c.fetch_all(sql.SQL("SELECT * FROM missing_table"))
    assert not isinstance(info.value, LockTimeout | TargetUnavailable)
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


@pytest.mark.postgres
def test_connection_killed_mid_transaction_is_unavailable(pg_dsn: str) -> None:
    with (
        pytest.raises(TargetUnavailable),
        PgTarget(pg_dsn).transaction(5_000, 1_000) as conn,
        psycopg.connect(pg_dsn, autocommit=True) as admin,
    ):
        pid = conn.fetch_all(sql.SQL("SELECT pg_backend_pid() AS pid"))[0]["pid"]
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        conn.fetch_all(sql.SQL("SELECT 1"))


def test_unreachable_target_hides_the_password() -> None:
    target = PgTarget("postgresql://app:s3cr3t-pw@127.0.0.1:1/jobs", connect_timeout_s=1)
    with pytest.raises(TargetUnavailable) as info, target.transaction(1_000, 1_000):
        pass
    assert "s3cr3t-pw" not in str(info.value)
    assert "s3cr3t-pw" not in repr(target)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError), PgTarget("dbname=x").transaction(0, 1_000):
        pass


@pytest.mark.parametrize("name", action_names())
def test_every_registered_action_honours_the_contract(name: str) -> None:
    action: Any = get_action(name)
    assert action.name == name
    assert issubclass(action.settings_model, ActionSettings)
    assert action.settings_model.model_config.get("extra") == "forbid"
    assert isinstance(action.accepted_params, frozenset)
    assert action.needs_target is (name != "notify_only")


def test_notify_only_changes_nothing() -> None:
    action: Any = get_action("notify_only")
    settings = action.settings_model(note="see RB-06")
    assert "no database change" in action.preview(None, settings, {}, Limits()).summary
    assert action.execute(None, settings, {}, Limits()).rows_affected == 0
    assert action.verify(None, settings, {}, action.execute(None, settings, {}, Limits())).ok


def test_params_used_includes_scope_params() -> None:
    from bot.actions.base import params_used
    from bot.actions.orphaned import OrphanedSettings

    action: Any = get_action("fail_orphaned_tasks")
    settings = OrphanedSettings(reason_column="why", scope={"job_id": "job"})
    assert params_used(action, settings) == frozenset({"job"})
    locks: Any = get_action("release_advisory_locks")
    assert params_used(locks, locks.settings_model(allowed_keys=[1])) == frozenset({"lock_key"})

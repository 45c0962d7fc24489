"""The target adapters on real servers, one suite over PostgreSQL, MariaDB and SQLite:
one transaction, timeouts, read-only, error translation without secrets, hostile values
bound (never spliced), list membership, the server's own clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from psycopg import sql

from bot.actions.target import ident
from bot.adapters.targets.factory import open_target, url_dialect
from bot.adapters.targets.mysql import MySqlDsn, MySqlTarget, parse_version
from bot.adapters.targets.sqlite import SqliteTarget, sqlite_path
from bot.errors import ConfigError, LockTimeout, RemediationError, TargetUnavailable
from tests.targets import TargetDb

HOSTILE = [
    "'; DROP TABLE items; --",
    "it's \\' \\\\ \" `back` %s %(x)s %% :name ?",
    "ünïcødé — 🚀 \u2028 line\nbreak\ttab",
    "x" * 5_000,
]


def make_items(db: TargetDb) -> None:
    db.sql(db.ddl("CREATE TABLE items (id {pk}, label {text} NOT NULL, body TEXT)"))
    for label in ("a", "b", "c"):
        db.sql("INSERT INTO items (label) VALUES (%(l)s)", {"l": label})


def labels(db: TargetDb) -> list[str]:
    return [r[0] for r in db.sql("SELECT label FROM items ORDER BY id")]


def test_one_transaction_commits(target_db: TargetDb) -> None:
    make_items(target_db)
    with target_db.target.transaction(5_000, 1_000) as conn:
        n = conn.execute(
            sql.SQL("UPDATE {} SET {} = {} WHERE {} = {}").format(
                ident("items"),
                ident("label"),
                sql.Placeholder("new"),
                ident("label"),
                sql.Placeholder("old"),
            ),
            {"new": "z", "old": "a"},
        )
    assert n == 1
    assert labels(target_db) == ["z", "b", "c"]


def test_an_exception_rolls_everything_back(target_db: TargetDb) -> None:
    make_items(target_db)
    with pytest.raises(ZeroDivisionError), target_db.target.transaction(5_000, 1_000) as conn:
        conn.execute("UPDATE items SET label = 'gone'")
        _ = 1 / 0
    assert labels(target_db) == ["a", "b", "c"]


def test_read_only_transaction_refuses_writes(target_db: TargetDb) -> None:
    make_items(target_db)
    with (
        pytest.raises(RemediationError) as info,
        target_db.target.transaction(5_000, 1_000, read_only=True) as conn,
    ):
        assert conn.fetch_all("SELECT count(*) AS n FROM items") == [{"n": 3}]
        conn.execute("UPDATE items SET label = 'nope'")
    assert not isinstance(info.value, LockTimeout | TargetUnavailable)
    assert labels(target_db) == ["a", "b", "c"]


def test_rowcount_counts_matched_rows_even_when_unchanged(target_db: TargetDb) -> None:
    # A compare-and-set reads "1 row" as "the row still matched", as PostgreSQL reports it
    # (MySQL would report 0 changed rows without the FOUND_ROWS client flag).
    make_items(target_db)
    with target_db.target.transaction(5_000, 1_000) as conn:
        assert conn.execute("UPDATE items SET label = 'a' WHERE label = 'a'") == 1


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_round_trip_as_bind_parameters(target_db: TargetDb, value: str) -> None:
    make_items(target_db)
    with target_db.target.transaction(5_000, 1_000) as conn:
        conn.execute(
            sql.SQL("UPDATE items SET body = {v} WHERE label = {l}").format(
                v=sql.Placeholder("v"), l=sql.Placeholder("l")
            ),
            {"v": value, "l": "b"},
        )
        found = conn.fetch_all(
            sql.SQL("SELECT label FROM items WHERE body = {v}").format(v=sql.Placeholder("v")),
            {"v": value},
        )
    assert found == [{"label": "b"}]
    assert target_db.sql("SELECT body FROM items WHERE label = 'b'") == [(value,)]
    assert len(target_db.sql("SELECT id FROM items")) == 3


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], []), (["a", "c"], ["a", "c"]), (["a' OR '1'='1", "c"], ["c"]), (["b"], ["b"])],
)
def test_list_membership_binds_each_value(
    target_db: TargetDb, values: list[str], expected: list[str]
) -> None:
    make_items(target_db)
    with target_db.target.transaction(5_000, 1_000, read_only=True) as conn:
        member = conn.dialect.member(sql.SQL("label"), "wanted")
        rows = conn.fetch_all(
            sql.SQL("SELECT label FROM items WHERE {} ORDER BY label").format(member),
            {"wanted": values},
        )
    assert [r["label"] for r in rows] == expected


def test_percent_signs_mean_the_same_on_every_driver(target_db: TargetDb) -> None:
    make_items(target_db)
    target_db.sql("UPDATE items SET label = 'x%y' WHERE label = 'a'")
    with target_db.target.transaction(5_000, 1_000, read_only=True) as conn:
        rows = conn.fetch_all("SELECT label FROM items WHERE label LIKE 'x%%'")
    assert rows == [{"label": "x%y"}]


def test_the_servers_own_clock_orders_timestamps(target_db: TargetDb) -> None:
    target_db.sql(target_db.ddl("CREATE TABLE beats (id {pk}, at {ts} NOT NULL)"))
    for seconds in (3600, 5):  # an int, rendered as the dialect's own interval syntax
        target_db.sql(f"INSERT INTO beats (at) VALUES ({target_db.ago(seconds)})")  # noqa: S608
    with target_db.target.transaction(5_000, 1_000, read_only=True) as conn:
        older = sql.SQL("SELECT id FROM beats WHERE at < {} ORDER BY id").format(
            conn.dialect.seconds_ago.format(sql.Placeholder("s"))
        )
        assert [r["id"] for r in conn.fetch_all(older, {"s": 600})] == [1]
        assert [r["id"] for r in conn.fetch_all(older, {"s": 1.5})] == [1, 2]


def test_statement_timeout_is_a_lock_timeout_error(target_db: TargetDb) -> None:
    slow = {
        "postgresql": "SELECT pg_sleep(5)",
        "mariadb": "SELECT SLEEP(5)",
        # A long recursive count: interrupted by the progress handler.
        "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
        " WHERE i < 1000000000) SELECT count(*) FROM n",
    }[target_db.dialect]
    with pytest.raises(LockTimeout) as info, target_db.target.transaction(300, 300) as conn:
        conn.fetch_all(slow)  # type: ignore[arg-type]
    assert info.value.context["target"] == "jobs_db"


def test_a_held_lock_times_out_and_rolls_back(target_db: TargetDb) -> None:
    make_items(target_db)
    holder = target_db.connect()
    lock = {
        "postgresql": "BEGIN; UPDATE items SET label = 'held' WHERE label = 'a'",
        "mariadb": "BEGIN; UPDATE items SET label = 'held' WHERE label = 'a'",
        "sqlite": "BEGIN IMMEDIATE; UPDATE items SET label = 'held' WHERE label = 'a'",
    }[target_db.dialect]
    target_db.sql(lock, conn=holder)
    with pytest.raises(LockTimeout), target_db.target.transaction(10_000, 300) as conn:
        conn.execute("UPDATE items SET label = 'mine' WHERE label = 'b'")
        conn.execute("UPDATE items SET label = 'mine' WHERE label IN ('a', 'held')")
    target_db.sql("ROLLBACK", conn=holder)
    assert labels(target_db) == ["a", "b", "c"]


def test_other_database_errors_are_remediation_errors(target_db: TargetDb) -> None:
    with (
        pytest.raises(RemediationError) as info,
        target_db.target.transaction(5_000, 1_000) as conn,
    ):
        conn.fetch_all("SELECT * FROM missing_table")
    assert not isinstance(info.value, LockTimeout | TargetUnavailable)
    assert info.value.__cause__ is not None


# A SQLite file has no server connection to kill: the servers only (not a skip).
@pytest.mark.parametrize("target_db", ["postgresql", "mariadb"], indirect=True)
def test_connection_killed_mid_transaction_is_unavailable(target_db: TargetDb) -> None:
    whoami, kill = {
        "postgresql": (
            "SELECT pg_backend_pid() AS id",
            "SELECT pg_terminate_backend(%(id)s, 5000)",
        ),
        "mariadb": ("SELECT CONNECTION_ID() AS id", "KILL CONNECTION %(id)s"),
    }[target_db.dialect]
    with pytest.raises(TargetUnavailable), target_db.target.transaction(5_000, 1_000) as conn:
        me = conn.fetch_all(whoami)[0]["id"]  # type: ignore[arg-type]
        target_db.sql(kill, {"id": me})
        conn.fetch_all("SELECT 1 AS one")


def test_two_concurrent_transactions_each_commit(target_db: TargetDb) -> None:
    make_items(target_db)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def bump(label: str) -> None:
        try:
            barrier.wait()
            with target_db.target.transaction(10_000, 8_000) as conn:
                conn.execute(
                    "UPDATE items SET body = COALESCE(body, '') || 'x' WHERE label = %(l)s"
                    if target_db.dialect != "mariadb"
                    else "UPDATE items SET body = CONCAT(COALESCE(body, ''), 'x')"
                    " WHERE label = %(l)s",
                    {"l": label},
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(x,)) for x in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert target_db.sql("SELECT label, body FROM items ORDER BY id") == [
        ("a", "x"),
        ("b", "x"),
        ("c", None),
    ]


# --- URLs, without a server ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("postgresql://u@h/db", "postgresql"),
        ("postgres://u@h/db", "postgresql"),
        ("host=h dbname=db", "postgresql"),
        ("mysql://u@h/db", "mysql"),
        ("mariadb://u@h/db", "mariadb"),
        ("sqlite:///rel.db", "sqlite"),
        ("sqlite:////abs/x.db", "sqlite"),
    ],
)
def test_url_scheme_chooses_the_dialect(url: str, dialect: str) -> None:
    assert url_dialect(url) == dialect


@pytest.mark.parametrize("url", ["oracle://u@h/db", "redis://h/0", "sqlite:rel.db"])
def test_unknown_schemes_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        url_dialect(url)


def test_open_target_picks_the_adapter() -> None:
    assert isinstance(open_target("mariadb://u@h/db", name="x"), MySqlTarget)
    assert isinstance(open_target("sqlite:///x.db", name="x"), SqliteTarget)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/",
        "mysql://u@h/a/b",
        "mysql://u@h:notaport/db",
        "mysql://u@h/db?sslmode=require",
        "postgresql://u@h/db",
    ],
)
def test_bad_mysql_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError):
        MySqlDsn.parse(url)


def test_mysql_url_parts() -> None:
    dsn = MySqlDsn.parse("mariadb://app:p%40ss@db.internal:3307/jobs?charset=utf8mb4")
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == (
        "db.internal",
        3307,
        "app",
        "p@ss",
        "jobs",
    )
    assert dsn.options == {"charset": "utf8mb4"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.11.19-MariaDB-0+deb12u1", (True, (10, 11, 19))),
        ("5.5.5-10.6.12-MariaDB", (True, (10, 6, 12))),
        ("8.0.36", (False, (8, 0, 36))),
    ],
)
def test_server_versions(text: str, expected: tuple[bool, tuple[int, ...]]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///state/x.db", "state/x.db"), ("sqlite:////var/lib/x.db", "/var/lib/x.db")],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert str(sqlite_path(url)) == path


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ValueError):
        sqlite_path(url)


def test_unreachable_mysql_hides_the_password() -> None:
    target = MySqlTarget("mysql://app:s3cr3t-pw@127.0.0.1:1/jobs", connect_timeout_s=1)
    with pytest.raises(TargetUnavailable) as info, target.transaction(1_000, 1_000):
        pass
    assert "s3cr3t-pw" not in str(info.value)
    assert "s3cr3t-pw" not in repr(target)


def test_a_missing_sqlite_file_is_never_created(tmp_path: Any) -> None:
    missing = tmp_path / "typo.db"
    with (
        pytest.raises(TargetUnavailable),
        SqliteTarget(f"sqlite:///{missing}").transaction(1_000, 1_000),
    ):
        pass
    assert not missing.exists()


@pytest.mark.parametrize("make", [MySqlTarget, SqliteTarget])
def test_timeouts_must_be_positive(make: Any) -> None:
    with pytest.raises(ValueError), make("mysql://u@h/db").transaction(0, 1_000):
        pass


def test_a_long_list_is_bound_whole(target_db: TargetDb) -> None:
    # More values than SQLite allows binds in one statement (32,766): one JSON bind there.
    make_items(target_db)
    wanted = ["b", *(f"x{i}" for i in range(40_000)), "c"]
    with target_db.target.transaction(10_000, 1_000, read_only=True) as conn:
        member = conn.dialect.member(sql.SQL("label"), "wanted")
        rows = conn.fetch_all(
            sql.SQL("SELECT label FROM items WHERE {} ORDER BY label").format(member),
            {"wanted": wanted},
        )
    assert [r["label"] for r in rows] == ["b", "c"]

"""``release_advisory_locks`` on MySQL / MariaDB: user-level ``GET_LOCK`` locks.

Seed 001's bug, MySQL flavour (reproduced on MariaDB 10.11, DESIGN.md "Verified on our
machines"): ``GET_LOCK('k', 0)`` on pooled connection A, ``RELEASE_LOCK('k')`` on
connection B returns 0 and the lock stays with A, idle in the pool, forever. Only ending
A's session frees it.

- The holder is found with ``IS_USED_LOCK(name)`` and read from
  ``information_schema.PROCESSLIST`` (``performance_schema`` is OFF by default on
  MariaDB, so ``performance_schema.metadata_locks`` is not relied on).
- Candidate rules, as on PostgreSQL: an allowlisted lock name; the holder is not this
  connection, is idle (``COMMAND = 'Sleep'``) for at least ``min_idle_seconds``, is not
  a replication or system thread (those never sleep as ``Sleep``), and its user holds no
  ``SUPER`` privilege. ``idle`` means no open InnoDB transaction
  (``information_schema.INNODB_TRX``); ``idle in transaction`` means there is one.
- Identity is re-checked right before ``KILL CONNECTION``: same thread id, same user,
  same client ``host:port`` (a new TCP connection has a new port), still idle, still the
  lock's holder, and on MariaDB the same ``QUERY_ID`` (the connection has run nothing
  since it was read). MariaDB does not expose a connection start time without
  performance_schema; the client port and QUERY_ID stand in for PostgreSQL's
  ``backend_start``.
- Verify polls ``IS_USED_LOCK`` until no killed thread holds an allowlisted name.

Needs ``PROCESS`` (see every thread and InnoDB transactions), ``CONNECTION ADMIN`` or
``SUPER`` (kill other users' threads), and read access to the grant tables so
``USER_PRIVILEGES`` shows other accounts' ``SUPER``.
"""

from __future__ import annotations

from psycopg import sql

from bot.actions.target import Row, TargetConnection, as_int

# A lock name is a string up to 64 characters (MySQL 5.7.5+ limit; MariaDB allows more).
MAX_NAME = 64

_IN_TRX = sql.SQL(
    "EXISTS (SELECT 1 FROM information_schema.INNODB_TRX AS x WHERE x.trx_mysql_thread_id = p.ID)"
)
# GRANTEE reads 'user'@'host'; any account of that user name with SUPER protects it.
_NOT_SUPER = sql.SQL(
    "NOT EXISTS (SELECT 1 FROM information_schema.USER_PRIVILEGES AS g"
    " WHERE g.PRIVILEGE_TYPE = 'SUPER'"
    " AND SUBSTRING_INDEX(g.GRANTEE, '@', 1) = CONCAT('''', p.USER, ''''))"
)

CANDIDATE_SQL = sql.SQL(
    "SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.DB AS db, p.COMMAND AS command,"
    " p.TIME AS idle_seconds, {query_id} AS query_id, {in_trx} AS in_transaction"
    " FROM information_schema.PROCESSLIST AS p"
    " WHERE p.ID = IS_USED_LOCK({name}) AND p.ID <> CONNECTION_ID()"
    " AND p.COMMAND = 'Sleep' AND p.TIME >= {min_idle} AND {not_super}"
)

# Everything read above must still hold, and the connection must have run nothing since.
RECHECK_SQL = sql.SQL(
    "SELECT p.ID AS id, {in_trx} AS in_transaction FROM information_schema.PROCESSLIST AS p"
    " WHERE p.ID = {id} AND p.ID = IS_USED_LOCK({name}) AND p.USER = {user} AND p.HOST = {host}"
    " AND p.COMMAND = 'Sleep' AND p.TIME >= {min_idle} AND {same_query}"
)

KILL_SQL = sql.SQL("KILL CONNECTION {id}")

HOLDER_SQL = sql.SQL("SELECT IS_USED_LOCK({name}) AS holder")


def lock_name(key: int | str | tuple[int, int]) -> str:
    """The ``GET_LOCK`` name an allowlisted key stands for (an int key is its digits)."""
    if isinstance(key, tuple):
        raise ValueError(f"a two-int key {list(key)} is PostgreSQL-only; name the MySQL lock")
    name = str(key)
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"lock name {name!r} must be 1..{MAX_NAME} characters")
    return name


def _query_id(conn: TargetConnection) -> sql.Composable:
    # MariaDB's PROCESSLIST has QUERY_ID; MySQL's does not.
    return sql.SQL("p.QUERY_ID" if conn.dialect.name == "mariadb" else "NULL")


def _allowed_states(idle_states: tuple[str, ...]) -> set[bool]:
    """The ``in_transaction`` values the configured PostgreSQL-style states allow."""
    allowed = set()
    if "idle" in idle_states:
        allowed.add(False)
    if {"idle in transaction", "idle in transaction (aborted)"} & set(idle_states):
        allowed.add(True)
    return allowed


def candidates(
    conn: TargetConnection, names: list[str], min_idle: float, idle_states: tuple[str, ...]
) -> list[Row]:
    """One entry per holder thread with the allowlisted names it holds."""
    allowed = _allowed_states(idle_states)
    by_id: dict[int, Row] = {}
    held: dict[int, list[str]] = {}
    query = CANDIDATE_SQL.format(
        query_id=_query_id(conn),
        in_trx=_IN_TRX,
        name=sql.Placeholder("name"),
        min_idle=sql.Placeholder("min_idle"),
        not_super=_NOT_SUPER,
    )
    for name in names:
        for row in conn.fetch_all(query, {"name": name, "min_idle": min_idle}):
            if bool(row["in_transaction"]) not in allowed:
                continue
            pid = as_int(row["id"])
            by_id.setdefault(
                pid,
                {
                    "pid": pid,
                    "user": row["user"],
                    "host": row["host"],
                    "db": row["db"],
                    "state": "idle in transaction" if row["in_transaction"] else "idle",
                    "idle_seconds": as_int(row["idle_seconds"]),
                    "query_id": row["query_id"],
                },
            )
            held.setdefault(pid, []).append(name)
    return [entry | {"keys": held[pid]} for pid, entry in by_id.items()]


def kill_if_unchanged(
    conn: TargetConnection, cand: Row, min_idle: float, idle_states: tuple[str, ...]
) -> bool:
    """``KILL CONNECTION`` the candidate only if its identity and idleness still hold."""
    same_query = (
        sql.SQL("p.QUERY_ID = {}").format(sql.Placeholder("query_id"))
        if cand["query_id"] is not None
        else sql.SQL("TRUE")
    )
    query = RECHECK_SQL.format(
        in_trx=_IN_TRX,
        id=sql.Placeholder("id"),
        name=sql.Placeholder("name"),
        user=sql.Placeholder("user"),
        host=sql.Placeholder("host"),
        min_idle=sql.Placeholder("min_idle"),
        same_query=same_query,
    )
    keys = cand["keys"]
    if not isinstance(keys, list) or not keys:
        raise TypeError("a candidate from candidates() names the locks it holds")
    binds = {
        "id": cand["pid"],
        "name": keys[0],
        "user": cand["user"],
        "host": cand["host"],
        "min_idle": min_idle,
        "query_id": cand["query_id"],
    }
    rows = conn.fetch_all(query, binds)
    if not rows or bool(rows[0]["in_transaction"]) not in _allowed_states(idle_states):
        return False
    conn.execute(KILL_SQL.format(id=sql.Placeholder("id")), {"id": cand["pid"]})
    return True


def still_held(conn: TargetConnection, names: list[str], ids: list[object]) -> list[Row]:
    """The allowlisted names some killed thread still holds."""
    held: list[Row] = []
    killed = set(ids)
    for name in names:
        holder = conn.fetch_all(HOLDER_SQL.format(name=sql.Placeholder("name")), {"name": name})
        if holder and holder[0]["holder"] is not None and as_int(holder[0]["holder"]) in killed:
            held.append({"pid": as_int(holder[0]["holder"]), "key": name})
    return held

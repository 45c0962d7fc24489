"""``release_advisory_locks``: terminate the idle backend that holds an allowlisted key.

Seed ``001_*``: a job took a session-scoped ``pg_try_advisory_lock(20260417)`` on a
pooled connection; ``pg_advisory_unlock`` later ran on a different connection, returned
false, and the lock stayed held by an idle pid forever. Only ending that session frees
the lock. The blast radius is a whole backend, so the candidate rules are strict:

- a granted advisory lock in *this* database on an allowlisted key;
- the holder is a ``client backend`` (never a walsender or other background process),
  not a superuser, not our own ``pg_backend_pid()``;
- its state is one of ``idle_states`` and has been for at least ``min_idle_seconds``.

Termination re-checks identity (pid AND ``backend_start``, so a recycled pid is never
hit) and idleness in the same statement that signals. Needs a role with
``pg_signal_backend`` and ``pg_read_all_stats``.

On MySQL / MariaDB the same remedy applies to ``GET_LOCK`` user-level locks (see
:mod:`bot.actions.user_locks_mysql`); an allowlisted key is then a lock name (an int key
names the lock spelled by its digits). SQLite has no session-level locks: a playbook
pointing this action at a SQLite target is refused when it loads.

Advisory keys in ``pg_locks``: ``pg_advisory_lock(bigint k)`` shows ``classid`` = high 32
bits, ``objid`` = low 32 bits, ``objsubid`` = 1; ``pg_advisory_lock(int a, int b)`` shows
``classid`` = a, ``objid`` = b, ``objsubid`` = 2 (both as unsigned oids).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from psycopg import sql
from pydantic import Field

from bot.actions import user_locks_mysql as mysql_locks
from bot.actions.base import (
    ActionSettings,
    Limits,
    Outcome,
    ParamValue,
    Preview,
    Verification,
    need_target,
)
from bot.actions.target import Binds, Row, TargetConnection, as_int, json_row
from bot.clock import Clock, SystemClock
from bot.errors import RemediationError, TooManyRows

IdleState = Literal["idle", "idle in transaction", "idle in transaction (aborted)"]
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


Key = int | str | tuple[int, int]


class AdvisoryLockSettings(ActionSettings):
    # PostgreSQL: a bigint key (20260417) or a two-int key ([classid, objid]).
    # MySQL/MariaDB: a GET_LOCK name ("jobs:sync"; 20260417 names the lock '20260417').
    allowed_keys: tuple[Key, ...] = Field(min_length=1)
    min_idle_seconds: float = Field(default=300, ge=0)
    idle_states: tuple[IdleState, ...] = Field(default=("idle",), min_length=1)
    # pg_terminate_backend(pid, timeout): wait this long for the backend to exit.
    terminate_wait_ms: int = Field(default=5_000, ge=0, le=60_000)
    verify_attempts: int = Field(default=20, ge=1, le=600)
    verify_interval_seconds: float = Field(default=0.25, gt=0, le=10)


def lock_triple(key: Key) -> tuple[int, int, int]:
    """The (classid, objid, objsubid) under which ``pg_locks`` shows an advisory key."""
    if isinstance(key, str):
        raise RemediationError(f"lock name {key!r} is a MySQL/MariaDB GET_LOCK name")
    if isinstance(key, tuple):
        a, b = key
        if not all(_INT32[0] <= v <= _INT32[1] for v in (a, b)):
            raise ValueError(f"two-int advisory key {key} is out of int4 range")
        return a & 0xFFFFFFFF, b & 0xFFFFFFFF, 2
    if not _INT64[0] <= key <= _INT64[1]:
        raise ValueError(f"advisory key {key} is out of bigint range")
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF, 1


def _key_label(classid: int, objid: int, objsubid: int) -> int | list[int]:
    if objsubid == 2:
        return [_signed32(classid), _signed32(objid)]
    value = (classid << 32) | objid
    return value - 2**64 if value >= 2**63 else value


def _signed32(v: int) -> int:
    return v - 2**32 if v >= 2**31 else v


_KEY_MATCH = sql.SQL(
    "(l.classid::bigint, l.objid::bigint, l.objsubid::integer) IN"
    " (SELECT * FROM unnest({c}::bigint[], {o}::bigint[], {s}::integer[]))"
).format(c=sql.Placeholder("k_class"), o=sql.Placeholder("k_obj"), s=sql.Placeholder("k_sub"))

CANDIDATES_SQL = sql.SQL(
    "SELECT a.pid, a.backend_start, a.state, a.state_change, a.usename,"
    " a.application_name, l.classid::bigint AS classid, l.objid::bigint AS objid,"
    " l.objsubid::integer AS objsubid,"
    " extract(epoch FROM now() - a.state_change)::float8 AS idle_seconds"
    " FROM pg_locks AS l"
    " JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " JOIN pg_roles AS r ON r.oid = a.usesysid"
    " WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND a.pid <> pg_backend_pid()"
    " AND a.backend_type = 'client backend'"
    " AND NOT r.rolsuper"
    " AND a.state = ANY({states})"
    " AND a.state_change <= now() - make_interval(secs => {min_idle})"
    " AND {key_match}"
    " ORDER BY a.pid, l.classid, l.objid"
).format(
    states=sql.Placeholder("states"),
    min_idle=sql.Placeholder("min_idle"),
    key_match=_KEY_MATCH,
)

# pg_stat_activity is cached per transaction (stats_fetch_consistency): drop the cache so
# the identity/idleness re-check below reads the backend's state as of now.
CLEAR_STATS_SNAPSHOT_SQL = sql.SQL("SELECT pg_stat_clear_snapshot()")

TERMINATE_SQL = sql.SQL(
    "SELECT pg_terminate_backend(a.pid, {wait_ms}) AS terminated"
    " FROM pg_stat_activity AS a"
    " WHERE a.pid = {pid} AND a.backend_start = {backend_start}"
    " AND a.state = ANY({states})"
    " AND a.state_change <= now() - make_interval(secs => {min_idle})"
).format(
    wait_ms=sql.Placeholder("wait_ms"),
    pid=sql.Placeholder("pid"),
    backend_start=sql.Placeholder("backend_start"),
    states=sql.Placeholder("states"),
    min_idle=sql.Placeholder("min_idle"),
)

STILL_HELD_SQL = sql.SQL(
    "SELECT l.pid, l.classid::bigint AS classid, l.objid::bigint AS objid,"
    " l.objsubid::integer AS objsubid FROM pg_locks AS l"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.pid = ANY({pids}) AND {key_match}"
).format(pids=sql.Placeholder("pids"), key_match=_KEY_MATCH)


def _binds(s: AdvisoryLockSettings, keys: list[Key]) -> Binds:
    triples = [lock_triple(k) for k in keys]
    return {
        "k_class": [t[0] for t in triples],
        "k_obj": [t[1] for t in triples],
        "k_sub": [t[2] for t in triples],
        "states": list(s.idle_states),
        "min_idle": s.min_idle_seconds,
    }


def _keys(s: AdvisoryLockSettings, params: dict[str, ParamValue]) -> list[Key]:
    """The allowlist, narrowed to the extracted ``lock_key`` when the event names one."""
    wanted = params.get("lock_key")
    if wanted is None:
        return list(s.allowed_keys)
    return [k for k in s.allowed_keys if str(k) == str(wanted)]


def _is_mysql(conn: TargetConnection) -> bool:
    """MySQL/MariaDB (GET_LOCK) or PostgreSQL (advisory locks); refuse anything else."""
    name = conn.dialect.name
    if name in ("mysql", "mariadb"):
        return True
    if name != "postgresql":
        raise RemediationError(
            f"release_advisory_locks cannot run on a {name} target: it has no session-level"
            " locks held by other connections",
        )
    return False


class ReleaseAdvisoryLocks:
    """Terminate idle, non-superuser client backends holding an allowlisted advisory lock."""

    name: ClassVar[str] = "release_advisory_locks"
    settings_model: ClassVar[type[ActionSettings]] = AdvisoryLockSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset({"lock_key"})
    preview_executes: ClassVar[bool] = False
    # SQLite has no session-level locks: nothing to release there.
    dialects: ClassVar[frozenset[str]] = frozenset({"postgresql", "mysql", "mariadb"})

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()

    def _candidates(
        self, conn: TargetConnection, s: AdvisoryLockSettings, params: dict[str, ParamValue]
    ) -> list[Row]:
        """One entry per backend (pid) with the allowlisted keys it holds."""
        keys = _keys(s, params)
        if not keys:
            return []
        if _is_mysql(conn):
            names = [mysql_locks.lock_name(k) for k in keys]
            return mysql_locks.candidates(conn, names, s.min_idle_seconds, s.idle_states)
        by_pid: dict[int, Row] = {}
        held: dict[int, list[int | list[int]]] = {}
        for row in conn.fetch_all(CANDIDATES_SQL, _binds(s, keys)):
            pid = as_int(row["pid"])
            by_pid.setdefault(
                pid,
                {
                    k: row[k]
                    for k in (
                        "pid",
                        "backend_start",
                        "state",
                        "state_change",
                        "usename",
                        "application_name",
                        "idle_seconds",
                    )
                },
            )
            label = _key_label(
                as_int(row["classid"]), as_int(row["objid"]), as_int(row["objsubid"])
            )
            held.setdefault(pid, []).append(label)
        return [entry | {"keys": held[pid]} for pid, entry in by_pid.items()]

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        """List the backends execute would terminate (nothing is signalled)."""
        conn = need_target(conn)
        s = AdvisoryLockSettings.of(settings)
        found = self._candidates(conn, s, params)
        summary = f"would terminate {len(found)} idle backend(s) holding allowlisted locks"
        if len(found) > limits.max_rows:
            summary += f"; exceeds max_rows={limits.max_rows}, execute would refuse"
        return Preview(summary=summary, rows=[json_row(c) for c in found])

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """Terminate each candidate after re-checking pid, backend_start and idleness."""
        conn = need_target(conn)
        s = AdvisoryLockSettings.of(settings)
        found = self._candidates(conn, s, params)
        if len(found) > limits.max_rows:
            raise TooManyRows(
                f"{len(found)} lock-holding backends exceed max_rows={limits.max_rows}"
            )
        terminated: list[Row] = []
        if _is_mysql(conn):
            for cand in found:
                if mysql_locks.kill_if_unchanged(conn, cand, s.min_idle_seconds, s.idle_states):
                    terminated.append(json_row(cand))
        else:
            binds = _binds(s, _keys(s, params)) | {"wait_ms": s.terminate_wait_ms}
            for cand in found:
                conn.fetch_all(CLEAR_STATS_SNAPSHOT_SQL)
                rows = conn.fetch_all(
                    TERMINATE_SQL,
                    binds | {"pid": cand["pid"], "backend_start": cand["backend_start"]},
                )
                if rows and rows[0]["terminated"]:
                    terminated.append(json_row(cand))
        return Outcome(
            rows_affected=len(terminated),
            before_image=terminated,
            details={
                "pids": [t["pid"] for t in terminated],
                "candidates": len(found),
                "skipped_changed": len(found) - len(terminated),
            },
        )

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        """OK once no terminated pid holds an allowlisted lock; polls briefly (bounded)."""
        conn = need_target(conn)
        s = AdvisoryLockSettings.of(settings)
        pids = outcome.details.get("pids", [])
        if not isinstance(pids, list) or not pids:
            return Verification(ok=True, summary="no backend was terminated")
        mysql = _is_mysql(conn)
        names = [mysql_locks.lock_name(k) for k in s.allowed_keys] if mysql else []
        binds = {} if mysql else _binds(s, list(s.allowed_keys)) | {"pids": pids}
        held: list[Row] = []
        for attempt in range(s.verify_attempts):
            # pg_locks and IS_USED_LOCK are read live on every query (not snapshotted), so
            # polling works inside one transaction.
            if mysql:
                held = mysql_locks.still_held(conn, names, pids)
            else:
                held = conn.fetch_all(STILL_HELD_SQL, binds)
            if not held:
                return Verification(
                    ok=True,
                    summary=f"allowlisted locks released by {len(pids)} terminated backend(s)",
                    details={"attempts": attempt + 1},
                )
            self._clock.sleep(s.verify_interval_seconds)
        return Verification(
            ok=False,
            summary=f"{len(held)} allowlisted lock(s) still held after termination",
            details={"still_held": [json_row(h) for h in held]},
        )


ACTION = ReleaseAdvisoryLocks()

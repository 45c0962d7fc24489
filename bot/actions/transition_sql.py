"""The statements of a state transition, composed from a spec and the catalog.

PostgreSQL (``SqlDialect.update_returning``): one statement per batch,
``WITH candidates AS MATERIALIZED (SELECT ... FOR UPDATE OF t SKIP LOCKED)``, ``UPDATE ...
FROM candidates`` joined on the primary key with the condition re-checked, ``RETURNING``
the old values (the UPDATE is the statement itself; with companions it is the CTE
``changed`` they read). Other engines: the locked SELECT and one UPDATE per group
(:meth:`Composer.build_portable`).

Why the primary key and not ``(tableoid, ctid)``: a candidate another session updated
after our snapshot is locked on its newest version (the lock follows the update chain),
so the CTE carries a ctid our snapshot cannot see and a ctid join would leave that row
locked but unchanged; the key join finds the snapshot's version and the UPDATE follows
the chain again (tests/integration/test_transition_row_identity.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from bot.actions.dialect import SqlDialect, Table, dialect_for, table_of, text_value
from bot.actions.target import Binds, TargetConnection, ident
from bot.actions.transition_spec import (
    DEAD_FLAG,
    Assign,
    CallSpec,
    CompanionSpec,
    TransitionSpec,
)
from bot.errors import RemediationError


@dataclass(frozen=True)
class Built:
    query: sql.Composed
    binds: Binds
    table: Table
    image_columns: tuple[str, ...]


@dataclass(frozen=True)
class Portable:
    select: sql.Composable
    sets: Mapping[bool, sql.Composable]  # dead-letter flag -> SET list
    binds: Binds
    table: Table
    image_columns: tuple[str, ...]


def key_alias(i: int) -> str:
    return f"key:{i}"


def ref_alias(column: str) -> str:
    return f"ref:{column}"


class Composer:
    """Composes the per-batch statement from a spec and the catalog."""

    def __init__(self, conn: TargetConnection, spec: TransitionSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.d: SqlDialect = dialect_for(conn)
        self.table = table_of(conn, spec.table)
        if not self.table.primary_key:
            raise RemediationError(
                f"table {spec.table} has no primary key: rows could not be named exactly",
                table=spec.table,
            )
        self.binds: Binds = dict(spec.binds)
        self.refs: list[str] = []

    def _bind(self, value: object) -> sql.Placeholder:
        name = f"v{len(self.binds)}"
        self.binds[name] = text_value(value)
        return sql.Placeholder(name)

    def expr(self, a: Assign, table: Table, column: str, alias: str) -> sql.Composable:
        """The expression assigning ``a`` to ``column`` of ``table`` (alias ``alias``)."""
        col = table.column(column)
        if a.kind == "null":
            if not col.nullable:
                raise RemediationError(
                    f"refusing to set {table.name}.{column} to NULL: the column is NOT NULL",
                    table=table.name,
                    column=column,
                )
            return self.d.cast(sql.SQL("NULL"), col.type_sql)
        if a.kind == "now":
            return self.d.cast(self.d.now(), col.type_sql)
        if a.kind == "increment":
            amount = self.d.cast(self.d.cast(self._bind(a.arg), "text"), col.type_sql)
            return sql.SQL("COALESCE({}.{}, 0) + {}").format(
                sql.Identifier(alias), ident(column), amount
            )
        if a.kind == "copy":
            source = table.column(str(a.arg))
            return self.d.cast(
                sql.SQL("{}.{}").format(sql.Identifier(alias), ident(source.name)), col.type_sql
            )
        return self.d.cast(self.d.cast(self._bind(a.arg), "text"), col.type_sql)

    def ref(self, column: str) -> sql.Identifier:
        """A raw column of the candidate row, carried for joins and function args."""
        self.table.column(column)
        if column not in self.refs:
            self.refs.append(column)
        return sql.Identifier(ref_alias(column))

    def build(self) -> Built:
        s, t = self.spec, self.table
        image = list(dict.fromkeys([*s.set, *s.dead_set, *s.also_image]))
        if s.call is not None:
            image = list(t.columns)  # the function may change any column
        for column in image:
            t.column(column)
        dead = s.dead_when if s.dead_when is not None else sql.SQL("false")
        ctes: list[sql.Composable] = []
        tail: list[sql.Composable] = []
        if s.call is None and not s.companions:
            # Nothing reads the changed rows but the caller: the UPDATE is the statement
            # itself, its RETURNING the result (no second CTE to materialize and rescan).
            update = self._update(dead)
            candidates = sql.SQL("WITH candidates AS MATERIALIZED ({}) ").format(
                self._select(image, dead)
            )
            return Built(candidates + update, self.binds, t, tuple(image))
        if s.call is not None:
            body = self._call(s.call)
        else:
            body = sql.SQL(", changed AS ({})").format(self._update(dead))
            for i, comp in enumerate(s.companions):
                cte, agg = self._companion(i, comp)
                ctes.append(cte)
                tail.append(agg)
        # Composed last: _call and _companion add the candidate columns they refer to.
        candidates = sql.SQL("WITH candidates AS MATERIALIZED ({})").format(
            self._select(image, dead)
        )
        query = sql.Composed([candidates, body, *ctes])
        query += sql.SQL(" SELECT c.*{} FROM changed AS c").format(sql.Composed(tail))
        return Built(query, self.binds, t, tuple(image))

    def _select(self, image: Sequence[str], dead: sql.Composable) -> sql.Composable:
        """The locked, bounded candidate SELECT: keys, dead-letter flag, refs, old values."""
        s, pk = self.spec, self.table.primary_key
        select_refs = [
            sql.SQL("t.{} AS {}").format(ident(c), sql.Identifier(ref_alias(c))) for c in self.refs
        ]
        return sql.SQL(
            "SELECT {keys}, {dead} AS {flag}{refs}{old}"
            " FROM {table} AS t WHERE {where} LIMIT {limit} {lock}"
        ).format(
            keys=sql.SQL(", ").join(
                sql.SQL("t.{} AS {}").format(ident(k), sql.Identifier(key_alias(i)))
                for i, k in enumerate(pk)
            ),
            dead=dead,
            flag=sql.Identifier(DEAD_FLAG),
            refs=sql.Composed([sql.SQL(", "), sql.SQL(", ").join(select_refs)])
            if select_refs
            else sql.SQL(""),
            # Old values in the engine's own text form: lossless and already JSON-safe.
            old=sql.Composed(
                [
                    sql.SQL(", {}").format(self.d.cast(sql.SQL("t.{}").format(ident(c)), "text"))
                    + sql.SQL(" AS {}").format(sql.Identifier(f"old:{c}"))
                    for c in image
                ]
            ),
            table=ident(s.table),
            where=s.where,
            limit=sql.Placeholder("limit"),
            lock=self.d.lock_clause,
        )

    def build_portable(self) -> Portable:
        """Two statements per batch, for engines without ``UPDATE ... RETURNING``
        (MariaDB): the locked candidate SELECT, then one UPDATE per group (live,
        dead-letter) by primary key with the condition re-checked. Rows are locked by the
        SELECT (or the engine serialises writers, SQLite), so the UPDATE must change every
        selected row; if it does not, the batch is refused (rolled back by the caller)."""
        s, t = self.spec, self.table
        if s.call is not None or s.companions:
            raise RemediationError(
                f"call and companions need UPDATE ... RETURNING, which {self.d.name} lacks",
                table=s.table,
            )
        image = list(dict.fromkeys([*s.set, *s.dead_set, *s.also_image]))
        for column in image:
            t.column(column)
        dead = s.dead_when if s.dead_when is not None else sql.SQL("false")
        select = self._select(image, dead)
        sets = {
            flag: sql.SQL(", ").join(
                sql.SQL("{} = {}").format(ident(col), self.expr(a, t, col, "t"))
                for col, a in assigns.items()
            )
            for flag, assigns in ((False, s.set), (True, s.dead_set))
            if assigns
        }
        return Portable(select, sets, self.binds, t, tuple(image))

    def _update(self, dead: sql.Composable) -> sql.Composable:
        s, t = self.spec, self.table
        assignments: list[sql.Composable] = []
        for column in dict.fromkeys([*s.set, *s.dead_set]):
            keep = sql.SQL("t.{}").format(ident(column))
            live = self.expr(s.set[column], t, column, "t") if column in s.set else keep
            if s.dead_when is None:
                value = live
            else:
                gone = (
                    self.expr(s.dead_set[column], t, column, "t") if column in s.dead_set else keep
                )
                # Same expression either way ({now: true} in both sets): no CASE needed.
                value = (
                    live
                    if gone == live
                    else sql.SQL("CASE WHEN c.{} THEN {} ELSE {} END").format(
                        sql.Identifier(DEAD_FLAG), gone, live
                    )
                )
            assignments.append(sql.SQL("{} = {}").format(ident(column), value))
        if not assignments:
            raise RemediationError(f"the transition on {s.table} sets no column", table=s.table)
        join = sql.SQL(" AND ").join(
            sql.SQL("t.{} = c.{}").format(ident(k), sql.Identifier(key_alias(i)))
            for i, k in enumerate(t.primary_key)
        )
        return sql.SQL(
            "UPDATE {table} AS t SET {assignments} FROM candidates AS c"
            " WHERE {join} AND {where} RETURNING c.*"
        ).format(
            table=ident(s.table),
            assignments=sql.SQL(", ").join(assignments),
            join=join,
            where=s.where,
        )

    def _call(self, call: CallSpec) -> sql.Composable:
        fn = self.d.function(self.conn, call.function, len(call.args))
        args: list[sql.Composable] = []
        for a, type_sql in zip(call.args, fn.arg_types, strict=True):
            if a.kind == "copy":
                args.append(self.d.cast(sql.SQL("c.{}").format(self.ref(str(a.arg))), type_sql))
            elif a.kind == "null":
                args.append(self.d.cast(sql.SQL("NULL"), type_sql))
            elif a.kind == "now":
                args.append(self.d.cast(self.d.now(), type_sql))
            elif a.kind == "value":
                args.append(self.d.cast(self.d.cast(self._bind(a.arg), "text"), type_sql))
            else:
                raise RemediationError("a function argument cannot be an increment")
        # The function runs once per locked candidate (the CTE is materialized first);
        # its result is turned to text so a void function works too.
        return sql.SQL(
            ", changed AS MATERIALIZED (SELECT c.*, CAST({fn}({args}) AS text) AS {result}"
            " FROM candidates AS c)"
        ).format(
            fn=ident(call.function),
            args=sql.SQL(", ").join(args),
            result=sql.Identifier("call result:"),
        )

    def _companion(self, i: int, comp: CompanionSpec) -> tuple[sql.Composable, sql.Composable]:
        other = table_of(self.conn, comp.table)
        if other.primary_key != (comp.key_column,):
            raise RemediationError(
                f"companion {comp.table}: key_column {comp.key_column!r} must be its primary "
                f"key ({', '.join(other.primary_key) or 'none'}), so one changed row moves at "
                "most one companion row",
                table=comp.table,
            )
        image = list(comp.set)
        conditions = [
            sql.SQL("q.{} = c.{}").format(ident(comp.key_column), self.ref(comp.ref_column))
        ]
        for their, ours in comp.match.items():
            other.column(their)
            conditions.append(
                sql.SQL("q.{} IS NOT DISTINCT FROM c.{}").format(ident(their), self.ref(ours))
            )
        assignments = [
            sql.SQL("{} = {}").format(ident(col), self.expr(a, other, col, "q"))
            for col, a in comp.set.items()
        ]
        name = sql.Identifier(f"companion_{i}")
        old = sql.Identifier(f"companion_old_{i}")
        # Same snapshot for every sub-statement: companion_old_i reads the rows'
        # values from before companion_i's UPDATE, i.e. their before-image.
        cte = sql.SQL(
            ", {name} AS (UPDATE {table} AS q SET {assignments} FROM changed AS c"
            " WHERE {conditions} RETURNING q.{key} AS k)"
            ", {old} AS (SELECT {cols} FROM {table} AS q WHERE q.{key} IN (SELECT k FROM {name}))"
        ).format(
            name=name,
            old=old,
            table=ident(comp.table),
            assignments=sql.SQL(", ").join(assignments),
            conditions=sql.SQL(" AND ").join(conditions),
            key=ident(comp.key_column),
            cols=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(
                    self.d.cast(sql.SQL("q.{}").format(ident(c)), "text"), sql.Identifier(c)
                )
                for c in [comp.key_column, *[c for c in image if c != comp.key_column]]
            ),
        )
        agg = sql.SQL(", (SELECT json_agg(o) FROM {} AS o) AS {}").format(
            old, sql.Identifier(f"companion:{i}")
        )
        return cte, agg

"""The catalog-aware state transition behind ``requeue_stuck_tasks`` and ``fail_orphaned_tasks``.

A transition moves the rows of one table that match a condition (a running status, a
staleness test, a scope) to new values, in bounded batches, inside the caller's ONE
transaction. What it promises:

- **rows by primary key**: read from the catalog, so partitioned tables (pg-boss's
  ``pgboss.job``, where ``ctid`` repeats across partitions) and composite keys work; the
  before-image names each changed row exactly once;
- **values in the column's own type**: every playbook value travels as a text bind and is
  cast to the column's catalog type (enum, domain, jsonb, timestamp, integer);
- **``set`` any number of columns**: ``value`` (a scalar, or ``{value: ...}`` for JSON),
  ``null`` (refused when the catalog says NOT NULL: seed 004's bug stays impossible),
  ``{now: true}``, ``{increment: n}``, ``{copy: other_column}``; a separate
  ``dead_letter_set`` for rows past their cap; the cap is a constant or a per-row column;
- **or the queue's own SQL function** (``call``), once per locked candidate;
- **companion updates** (a queue-level lock row) in the same statement, bounded: the
  companion is found by its own primary key from a column of each changed row, so at most
  one companion row per changed row;
- **compare-and-set**: candidates are locked with the dialect's ``SKIP LOCKED`` clause and
  the condition is re-checked in the UPDATE's own WHERE;
- **preview ≡ execute**: :func:`preview` runs exactly :func:`execute`'s statements inside a
  savepoint that is always rolled back, so a preview reports what the database did (or
  the database's own error), never a separate estimate.

The engine-specific parts go through :class:`bot.actions.dialect.SqlDialect`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from bot.actions.base import Limits, Outcome, Preview
from bot.actions.dialect import SqlDialect, Table, dialect_for, text_value
from bot.actions.target import TargetConnection, check_identifier, ident, json_safe
from bot.errors import RemediationError, TooManyRows

AssignKind = Literal["value", "null", "now", "increment", "copy"]
_FORMS = ("value", "now", "increment", "copy", "column")


@dataclass(frozen=True)
class Assign:
    """One ``column: <what>`` of a ``set``; ``arg`` is the value, amount or column."""

    kind: AssignKind
    arg: Any = None


def parse_assign(spec: Any, *, where: str) -> Assign:
    """Parse one playbook ``set`` entry; ``ValueError`` (a load error) if malformed."""
    if spec is None:
        return Assign("null")
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in _FORMS:
            raise ValueError(
                f"{where}: expected a value, null, {{now: true}}, {{increment: N}}, "
                f"{{copy: column}} or {{value: <json>}}, got {spec!r}"
            )
        form, arg = next(iter(spec.items()))
        if form == "now":
            if arg is not True:
                raise ValueError(f"{where}: write {{now: true}}")
            return Assign("now")
        if form == "increment":
            if isinstance(arg, bool) or not isinstance(arg, int):
                raise ValueError(f"{where}: increment needs an integer")
            return Assign("increment", arg)
        if form in ("copy", "column"):
            return Assign("copy", check_identifier(str(arg)))
        return Assign("value", arg)
    if isinstance(spec, list):
        raise ValueError(f"{where}: a list value must be written {{value: [...]}}")
    return Assign("value", spec)


def parse_set(values: Mapping[str, Any], *, where: str) -> dict[str, Assign]:
    """Parse a whole ``set`` mapping (column names checked as identifiers)."""
    return {
        check_identifier(col): parse_assign(spec, where=f"{where}.{col}")
        for col, spec in values.items()
    }


@dataclass(frozen=True)
class CompanionSpec:
    """Update one row of ``table`` (found by its primary key ``key_column`` from the
    changed row's ``ref_column``) when its ``match`` columns equal the changed row's old
    values (``{companion column: main column}``)."""

    table: str
    key_column: str
    ref_column: str
    match: Mapping[str, str]
    set: Mapping[str, Assign]


@dataclass(frozen=True)
class CallSpec:
    """Call the queue's own function once per candidate; args are :class:`Assign` with
    ``copy`` meaning "this column of the candidate row"."""

    function: str
    args: tuple[Assign, ...]


@dataclass(frozen=True)
class TransitionSpec:
    """Everything one transition needs. ``where`` is on alias ``t`` with ``binds``."""

    table: str
    id_column: str
    where: sql.Composable
    binds: Mapping[str, Any]
    set: Mapping[str, Assign]
    # Dead-letter: rows where ``dead_when`` holds get ``dead_set`` instead of ``set``.
    dead_when: sql.Composable | None = None
    dead_set: Mapping[str, Assign] = field(default_factory=dict)
    companions: tuple[CompanionSpec, ...] = ()
    call: CallSpec | None = None
    # Extra columns whose old values go in the before-image (beside every set column).
    also_image: tuple[str, ...] = ()


DEAD_FLAG = "dead letter?"  # not a valid identifier: cannot clash with a column


@dataclass(frozen=True)
class _Built:
    query: sql.Composed
    binds: dict[str, Any]
    table: Table
    image_columns: tuple[str, ...]


@dataclass(frozen=True)
class _Portable:
    select: sql.Composable
    sets: Mapping[bool, sql.Composable]  # dead-letter flag -> SET list
    binds: dict[str, Any]
    table: Table
    image_columns: tuple[str, ...]


def _key(i: int) -> str:
    return f"key:{i}"


def _ref(column: str) -> str:
    return f"ref:{column}"


class _Composer:
    """Composes the per-batch statement from a spec and the catalog."""

    def __init__(self, conn: TargetConnection, spec: TransitionSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.d: SqlDialect = dialect_for(conn)
        self.table = self.d.table(conn, spec.table)
        if not self.table.primary_key:
            raise RemediationError(
                f"table {spec.table} has no primary key: rows could not be named exactly",
                table=spec.table,
            )
        self.binds: dict[str, Any] = dict(spec.binds)
        self.refs: list[str] = []

    def _bind(self, value: Any) -> sql.Placeholder:
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
        return sql.Identifier(_ref(column))

    def build(self) -> _Built:
        s, t = self.spec, self.table
        image = list(dict.fromkeys([*s.set, *s.dead_set, *s.also_image]))
        if s.call is not None:
            image = list(t.columns)  # the function may change any column
        for column in image:
            t.column(column)
        dead = s.dead_when if s.dead_when is not None else sql.SQL("false")
        ctes: list[sql.Composable] = []
        tail: list[sql.Composable] = []
        if s.call is not None:
            body = self._call(s.call)
        else:
            body = self._update(dead)
            for i, comp in enumerate(s.companions):
                cte, agg = self._companion(i, comp)
                ctes.append(cte)
                tail.append(agg)
        candidates = sql.SQL("WITH candidates AS MATERIALIZED ({})").format(
            self._select(image, dead)
        )
        query = sql.Composed([candidates, body, *ctes])
        query += sql.SQL(" SELECT c.*{} FROM changed AS c").format(sql.Composed(tail))
        return _Built(query, self.binds, t, tuple(image))

    def _select(self, image: Sequence[str], dead: sql.Composable) -> sql.Composable:
        """The locked, bounded candidate SELECT: keys, dead-letter flag, refs, old values."""
        s, pk = self.spec, self.table.primary_key
        select_refs = [
            sql.SQL("t.{} AS {}").format(ident(c), sql.Identifier(_ref(c))) for c in self.refs
        ]
        return sql.SQL(
            "SELECT {keys}, {dead} AS {flag}{refs}{old}"
            " FROM {table} AS t WHERE {where} LIMIT {limit} {lock}"
        ).format(
            keys=sql.SQL(", ").join(
                sql.SQL("t.{} AS {}").format(ident(k), sql.Identifier(_key(i)))
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

    def build_portable(self) -> _Portable:
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
        return _Portable(select, sets, self.binds, t, tuple(image))

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
                value = sql.SQL("CASE WHEN c.{} THEN {} ELSE {} END").format(
                    sql.Identifier(DEAD_FLAG), gone, live
                )
            assignments.append(sql.SQL("{} = {}").format(ident(column), value))
        if not assignments:
            raise RemediationError(f"the transition on {s.table} sets no column", table=s.table)
        join = sql.SQL(" AND ").join(
            sql.SQL("t.{} = c.{}").format(ident(k), sql.Identifier(_key(i)))
            for i, k in enumerate(t.primary_key)
        )
        return sql.SQL(
            ", changed AS (UPDATE {table} AS t SET {assignments} FROM candidates AS c"
            " WHERE {join} AND {where} RETURNING c.*)"
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
        other = self.d.table(self.conn, comp.table)
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


def statement(conn: TargetConnection, spec: TransitionSpec) -> tuple[sql.Composed, dict[str, Any]]:
    """The per-batch statement :func:`execute` runs and its binds, all but ``limit``."""
    built = _Composer(conn, spec).build()
    return built.query, built.binds


def one_of(
    alias: str, column: str, values: Sequence[Any], binds: dict[str, Any], prefix: str
) -> sql.Composable:
    """``alias.column IN (<values as binds>)``, dialect-neutral (binds added)."""
    if not values:
        raise RemediationError(f"no values to match {column} against", column=column)
    names = [f"{prefix}_{i}" for i in range(len(values))]
    binds.update(zip(names, values, strict=True))
    return sql.SQL("{}.{} IN ({})").format(
        sql.Identifier(alias), ident(column), sql.SQL(", ").join(map(sql.Placeholder, names))
    )


def optional_scope_filter(
    alias: str, scope: Mapping[str, str], params: Mapping[str, Any]
) -> tuple[sql.Composable, dict[str, Any]]:
    """Like :func:`bot.actions.target.scope_filter`, but a parameter that was not
    extracted adds no filter (a pack's optional ``queue`` narrowing)."""
    parts: list[sql.Composable] = []
    binds: dict[str, Any] = {}
    for i, (column, param) in enumerate(sorted(scope.items())):
        if param not in params:
            continue
        key = f"opt_scope_{i}"
        parts.append(
            sql.SQL(" AND {}.{} = {}").format(
                sql.Identifier(alias), ident(column), sql.Placeholder(key)
            )
        )
        binds[key] = params[param]
    return sql.Composed(parts), binds


def outcome_keys(
    conn: TargetConnection, spec: TransitionSpec, outcome: Outcome
) -> list[dict[str, Any]]:
    """The primary keys an outcome changed. A journaled outcome (crash recovery) may
    carry only ``ids``: they name the key when it is the single ``id_column``."""
    keys = outcome.details.get("keys")
    if isinstance(keys, list):
        return [k for k in keys if isinstance(k, dict)]
    ids = list(outcome.details.get("ids") or [])
    if not ids:
        return []
    pk = dialect_for(conn).table(conn, spec.table).primary_key
    if len(pk) == 1:
        return [{pk[0]: i} for i in ids]
    image = [b for b in outcome.before_image if all(k in b for k in pk)]
    return [{k: b[k] for k in pk} for b in image]


def _shape(row: dict[str, Any], built: _Built, spec: TransitionSpec) -> dict[str, Any]:
    """One returned row as its before-image entry: primary key, then old values."""
    entry: dict[str, Any] = {}
    for i, k in enumerate(built.table.primary_key):
        entry[k] = json_safe(row[_key(i)])
    for c in built.image_columns:
        entry.setdefault(c, row[f"old:{c}"])
    if spec.id_column not in entry and f"old:{spec.id_column}" in row:
        entry[spec.id_column] = row[f"old:{spec.id_column}"]
    return entry


@dataclass
class _Run:
    before: list[dict[str, Any]]
    dead: int
    companions: dict[str, list[Any]]
    table: Table


def _run(conn: TargetConnection, spec: TransitionSpec, limits: Limits) -> _Run:
    composer = _Composer(conn, spec)
    if not composer.d.update_returning:
        return _run_portable(conn, spec, limits, composer.build_portable())
    built = composer.build()
    before: list[dict[str, Any]] = []
    dead = 0
    companions: dict[str, list[Any]] = {c.table: [] for c in spec.companions}
    while True:
        # Ask for one row more than max_rows allows: if it exists, the total is over the
        # cap and we refuse; the caller's transaction rolls back, nothing changes.
        limit = min(limits.batch_size, limits.max_rows + 1 - len(before))
        rows = conn.fetch_all(built.query, built.binds | {"limit": limit})
        for row in rows:
            dead += bool(row[DEAD_FLAG])
            before.append(_shape(row, built, spec))
        if rows:
            for i, comp in enumerate(spec.companions):
                companions[comp.table].extend(rows[0].get(f"companion:{i}") or [])
        if len(before) > limits.max_rows:
            raise TooManyRows(
                f"more than max_rows={limits.max_rows} rows to change in {spec.table}",
                table=spec.table,
            )
        if len(rows) < limit:
            break
    return _Run(before, dead, companions, built.table)


def _run_portable(
    conn: TargetConnection, spec: TransitionSpec, limits: Limits, p: _Portable
) -> _Run:
    """:func:`_run` for engines without ``UPDATE ... RETURNING`` (see ``build_portable``)."""
    pk = p.table.primary_key
    shape = _Built(sql.Composed([]), p.binds, p.table, p.image_columns)
    before: list[dict[str, Any]] = []
    dead = 0
    while True:
        limit = min(limits.batch_size, limits.max_rows + 1 - len(before))
        rows = conn.fetch_all(sql.Composed([p.select]), p.binds | {"limit": limit})
        if len(before) + len(rows) > limits.max_rows:
            raise TooManyRows(
                f"more than max_rows={limits.max_rows} rows to change in {spec.table}",
                table=spec.table,
            )
        for flag, assignments in p.sets.items():
            group = [r for r in rows if bool(r[DEAD_FLAG]) == flag]
            if not group:
                continue
            binds = dict(p.binds)
            matches: list[sql.Composable] = []
            for n, row in enumerate(group):
                parts = []
                for i, k in enumerate(pk):
                    binds[f"pk_{n}_{i}"] = row[_key(i)]
                    parts.append(
                        sql.SQL("t.{} = {}").format(ident(k), sql.Placeholder(f"pk_{n}_{i}"))
                    )
                matches.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
            changed = conn.execute(
                sql.SQL("UPDATE {table} AS t SET {sets} WHERE ({keys}) AND {where}").format(
                    table=ident(spec.table),
                    sets=assignments,
                    keys=sql.SQL(" OR ").join(matches),
                    where=spec.where,
                ),
                binds,
            )
            if changed != len(group):
                raise RemediationError(
                    f"{len(group)} locked row(s) of {spec.table} selected but {changed} "
                    "updated: refusing the batch",
                    table=spec.table,
                )
        for row in rows:
            dead += bool(row[DEAD_FLAG])
            before.append(_shape(row, shape, spec))
        if len(rows) < limit:
            break
    return _Run(before, dead, {}, p.table)


def _outcome(spec: TransitionSpec, run: _Run) -> Outcome:
    pk = run.table.primary_key
    return Outcome(
        rows_affected=len(run.before),
        before_image=run.before,
        details={
            "ids": [b.get(spec.id_column, b[pk[0]]) for b in run.before],
            "keys": [{k: b[k] for k in pk} for b in run.before],
            "changed": len(run.before) - run.dead,
            "dead_lettered": run.dead,
            "companions": run.companions,
        },
    )


def execute(conn: TargetConnection, spec: TransitionSpec, limits: Limits) -> Outcome:
    """Apply the transition to every matching row (at most ``limits.max_rows``; more
    raises :class:`TooManyRows` and the caller's transaction rolls back)."""
    return _outcome(spec, _run(conn, spec, limits))


_SAVEPOINT = "bot_preview"


def preview(
    conn: TargetConnection, spec: TransitionSpec, limits: Limits, *, verb: str, dead_verb: str
) -> Preview:
    """Run exactly :func:`execute`'s statements inside a savepoint that is always rolled
    back, and report what they did. A statement the database refuses raises its error
    (translated), so a preview can never claim what execution cannot do."""
    conn.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
    refused = ""
    try:
        try:
            outcome = execute(conn, spec, limits)
        except TooManyRows as exc:
            outcome, refused = None, str(exc)
    finally:
        conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
        conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
    if outcome is None:
        return Preview(summary=f"execute would refuse: {refused}; nothing would change")
    details = outcome.details
    summary = f"would {verb} {details['changed']}"
    if spec.dead_when is not None:
        summary += f" and {dead_verb} {details['dead_lettered']}"
    summary += f" row(s) in {spec.table}"
    for table, rows in details["companions"].items():
        summary += f", and update {len(rows)} row(s) of {table}"
    summary += " (statement executed and rolled back)"
    return Preview(summary=summary, rows=outcome.before_image)


def still_matching(
    conn: TargetConnection, spec: TransitionSpec, keys: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """The keys among ``keys`` whose row still satisfies the transition's condition.

    Keys travel as text binds cast to each key column's own type (dialect-neutral); the
    list is bounded by ``max_rows``, so the OR of key equalities stays small."""
    if not keys:
        return []
    d = dialect_for(conn)
    table = d.table(conn, spec.table)
    pk = table.primary_key
    binds: dict[str, Any] = dict(spec.binds)
    matches: list[sql.Composable] = []
    for n, key in enumerate(keys):
        parts: list[sql.Composable] = []
        for i, k in enumerate(pk):
            name = f"key_{n}_{i}"
            binds[name] = text_value(key[k])
            parts.append(
                sql.SQL("t.{} = {}").format(
                    ident(k),
                    d.cast(d.cast(sql.Placeholder(name), "text"), table.column(k).type_sql),
                )
            )
        matches.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
    query = sql.SQL("SELECT {cols} FROM {table} AS t WHERE ({keys}) AND {where}").format(
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(ident(k)) for k in pk),
        table=ident(spec.table),
        keys=sql.SQL(" OR ").join(matches),
        where=spec.where,
    )
    rows = conn.fetch_all(query, binds)
    return [json_safe(r[pk[0]]) if len(pk) == 1 else json_safe(r) for r in rows]

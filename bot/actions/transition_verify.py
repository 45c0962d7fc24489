"""What a transition's verification reads: which changed rows still match its condition.

Split from :mod:`bot.actions.transition` (the statements that change rows); the
statement shape (:func:`shape`) both use to compose a statement once per transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from psycopg import sql

from bot.actions.dialect import Table, dialect_for, table_of, text_value
from bot.actions.port import fetch_each
from bot.actions.target import Binds, Params, TargetConnection, ident, json_safe
from bot.actions.transition_spec import TransitionSpec

_SHAPES: dict[int, tuple[TransitionSpec, str]] = {}


def shape(spec: TransitionSpec) -> str:
    """What a spec's statements' text depends on: everything but its bind values
    (computed once per spec object: a remembered spec serves a storm's three phases)."""
    found = _SHAPES.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    shape = repr(replace(spec, binds=dict.fromkeys(sorted(spec.binds))))
    if len(_SHAPES) >= 4096:
        _SHAPES.clear()
    _SHAPES[id(spec)] = (spec, shape)
    return shape


def still_matching(
    conn: TargetConnection, spec: TransitionSpec, keys: Sequence[Params]
) -> list[object]:
    """The keys among ``keys`` whose row still satisfies the transition's condition.

    Keys travel as text binds cast to each key column's own type (dialect-neutral); the
    list is bounded by ``max_rows``, so the OR of key equalities stays small. The
    statement is composed once per shape and transaction (see :func:`_built`)."""
    return still_matching_each(conn, [(spec, keys)])[0]


def still_matching_each(
    conn: TargetConnection, asks: Sequence[tuple[TransitionSpec, Sequence[Params]]]
) -> list[list[object]]:
    """:func:`still_matching` for several (spec, keys) at once: the statements go out
    together (one round trip on PostgreSQL, see :func:`~bot.actions.port.fetch_each`)."""
    statements: list[tuple[sql.Composed, Binds]] = []
    for spec, keys in asks:
        if not keys:
            continue
        table = table_of(conn, spec.table)
        binds: Binds = dict(spec.binds)
        for n, key in enumerate(keys):
            for i, k in enumerate(table.primary_key):
                binds[f"key_{n}_{i}"] = text_value(key[k])
        memo = ("still", shape(spec), len(keys))
        query = conn.memo.get(memo)
        if not isinstance(query, sql.Composed):
            query = _still_query(conn, spec, table, len(keys))
            conn.memo[memo] = query
        statements.append((query, binds))
    found = iter(fetch_each(conn, statements))
    out: list[list[object]] = []
    for spec, keys in asks:
        if not keys:
            out.append([])
            continue
        pk = table_of(conn, spec.table).primary_key
        rows = next(found)
        out.append([json_safe(r[pk[0]]) if len(pk) == 1 else json_safe(r) for r in rows])
    return out


def _still_query(
    conn: TargetConnection, spec: TransitionSpec, table: Table, count: int
) -> sql.Composed:
    d = dialect_for(conn)
    pk = table.primary_key
    matches: list[sql.Composable] = []
    for n in range(count):
        parts: list[sql.Composable] = []
        for i, k in enumerate(pk):
            parts.append(
                sql.SQL("t.{} = {}").format(
                    ident(k),
                    d.cast(
                        d.cast(sql.Placeholder(f"key_{n}_{i}"), "text"), table.column(k).type_sql
                    ),
                )
            )
        matches.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
    return sql.SQL("SELECT {cols} FROM {table} AS t WHERE ({keys}) AND {where}").format(
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(ident(k)) for k in pk),
        table=ident(spec.table),
        keys=sql.SQL(" OR ").join(matches),
        where=spec.where,
    )

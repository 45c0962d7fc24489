"""Target databases: the port actions run against, and the pure SQL helpers they share.

An action never opens a connection itself. The executor asks a :class:`TargetDatabase`
for ONE transaction (``statement_timeout`` and ``lock_timeout`` applied) and hands the
action the :class:`TargetConnection` it yields. Each adapter translates its driver's
errors at the boundary, ``from exc``:

- lock wait / statement timeout            -> :class:`~bot.errors.LockTimeout`
- cannot connect / connection lost         -> :class:`~bot.errors.TargetUnavailable`
- any other database error                 -> :class:`~bot.errors.RemediationError`

Messages never contain the DSN or its password.

Identifiers (table and column names) come only from playbook files; they are checked
with :func:`check_identifier` at load time and again when an action composes SQL with
:func:`ident`, which quotes them with :class:`psycopg.sql.Identifier`. Values always
travel as bind parameters.

The few places where SQL differs between engines are gathered in :class:`Dialect` so an
action states explicitly what it relies on (``FOR UPDATE SKIP LOCKED``, ``now()``,
interval arithmetic, list membership, ``UPDATE ... RETURNING``). Actions write SQL once
with psycopg.sql; the adapters in :mod:`bot.adapters.targets` (``postgres``, ``mysql``,
``sqlite``) run the same compositions on their drivers (:mod:`bot.adapters.targets.sqltext`
renders them for the non-psycopg ones), and :func:`bot.adapters.targets.factory.open_target`
picks the adapter from the URL scheme.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from psycopg import sql
from pydantic import AfterValidator

from bot.actions.port import (
    Binds,
    Dialect,
    Params,
    Row,
    SqlQuery,
    TargetConnection,
    TargetDatabase,
)
from bot.errors import RemediationError

__all__ = [  # the port's names, re-exported: actions and adapters import them from here
    "Binds",
    "Dialect",
    "Params",
    "Row",
    "SqlQuery",
    "TargetConnection",
    "TargetDatabase",
]

_IDENT_PART = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_IDENT_RE = re.compile(rf"{_IDENT_PART}(?:\.{_IDENT_PART})?")


def check_identifier(name: str) -> str:
    """Return ``name`` unchanged if it is a plain (optionally ``schema.``-qualified) SQL
    identifier of at most 63 characters per part; raise ``ValueError`` otherwise.

    Used as a pydantic validator on every table/column setting, so a hostile or mistyped
    name fails when the playbook loads, never when SQL runs.
    """
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid SQL identifier "
            "(letters, digits, underscore; optionally schema.name; at most 63 chars each)"
        )
    return name


# A settings field holding a table/column name: validated when the playbook loads.
Ident = Annotated[str, AfterValidator(check_identifier)]


def ident(name: str) -> sql.Identifier:
    """Quote a checked identifier (``schema.table`` becomes ``"schema"."table"``)."""
    return sql.Identifier(*check_identifier(name).split("."))


_PLAIN = frozenset({type(None), bool, int, float, str})


def json_safe(value: object) -> object:
    """Turn a database value into something the journal can store as JSON."""
    # Exact-type fast path first: before-images can hold thousands of rows.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def json_row(row: Mapping[str, object]) -> dict[str, object]:
    """:func:`json_safe` of one row (or any mapping): a dict the journal can store."""
    return {str(k): json_safe(v) for k, v in row.items()}


def as_int(value: object) -> int:
    """A row value the query makes an integer (an int, or the Decimal/str some drivers
    return for BIGINT and NUMERIC), as ``int``; anything else is a bug in the query."""
    if isinstance(value, int | float | str | Decimal):
        return int(value)
    raise TypeError(f"expected an integer column value, got {type(value).__name__}")


def scope_filter(
    alias: str, scope: Mapping[str, str], params: Params
) -> tuple[sql.Composable, Binds]:
    """``AND alias.col = %(scope_i)s`` for each ``column: param`` in ``scope``, plus binds.

    A scope parameter missing from ``params`` is an error, never a dropped filter: a
    missing filter would widen the remediation to the whole table.
    """
    parts: list[sql.Composable] = []
    binds: Binds = {}
    for i, (column, param) in enumerate(sorted(scope.items())):
        if param not in params:
            raise RemediationError(f"scope parameter {param!r} was not extracted", param=param)
        key = f"scope_{i}"
        parts.append(
            sql.SQL(" AND {}.{} = {}").format(
                sql.Identifier(alias), ident(column), sql.Placeholder(key)
            )
        )
        binds[key] = params[param]
    return sql.Composed(parts), binds


POSTGRESQL = Dialect(
    name="postgresql",
    in_list=sql.SQL("{} = ANY({})"),
    skip_locked=sql.SQL("FOR UPDATE SKIP LOCKED"),
    now=sql.SQL("now()"),
    seconds_ago=sql.SQL("now() - make_interval(secs => {})"),
    supports_arrays=True,
)


# What every verify asks: which of the rows we changed still match the problem?
_STILL_MATCHING_SQL = sql.SQL("SELECT t.{id} AS id FROM {table} AS t WHERE {in_ids} AND {where}")


def still_matching(
    conn: TargetConnection,
    table: str,
    id_column: str,
    ids: list[object],
    where: sql.Composable,
    binds: Params,
) -> list[object]:
    """The ids among ``ids`` whose row (alias ``t``) still satisfies ``where``."""
    rows = conn.fetch_all(
        _STILL_MATCHING_SQL.format(
            id=ident(id_column),
            table=ident(table),
            in_ids=conn.dialect.member(sql.SQL("t.{}").format(ident(id_column)), "ids"),
            where=where,
        ),
        {**binds, "ids": ids},
    )
    return [json_safe(r["id"]) for r in rows]

"""``set_flag``: a temporary mitigation: set one value in a configuration table row.

Seed ``000_*`` BLUE-BANDED-BEE-7G ("Backpressure"): "When stuck-task monitor reports
active incidents as in Issue 42, temporarily rate-limit page discovery jobs to keep DB
load below the timeout threshold". The remedy is a value in a row (``rate_limits`` where
``name = 'page_discovery'``, ``max_per_minute`` = 10) that must be put back when the
incident is over. This module sets it; :mod:`bot.pipeline.flags` reverts it.

- The row is read and locked (``FOR UPDATE``, bounded by ``lock_timeout``) before the
  write; its old value is the before-image, journaled with the run. A missing row is an
  error: a mitigation never invents configuration.
- The new value is cast to the column's own type, read from the catalog (``format_type``
  of the column: enums, domains, integers, booleans, intervals …), from its text form, so
  ``value: 10`` works for an ``integer`` and ``value: paused`` for an enum. NULL only where
  the column is nullable.
- Values (and the key) are compared in their text form (``col::text``), which is how the
  revert's compare-and-set recognises "still the value we set" whatever the column type.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from psycopg import sql
from pydantic import Field, field_validator

from bot.actions.base import (
    ActionSettings,
    Limits,
    Outcome,
    ParamValue,
    Preview,
    Verification,
    need_target,
)
from bot.actions.target import Ident, TargetConnection, ident, json_safe
from bot.errors import RemediationError

FlagValue = str | int | float | bool | None


class SetFlagSettings(ActionSettings):
    table: Ident
    key_column: Ident
    key: str | int
    value_column: Ident
    value: FlagValue
    # Put the old value back after this long even if the incident is still open.
    revert_after_minutes: int = Field(default=240, ge=1, le=7 * 24 * 60)
    # issue: revert when the run's issue resolves; incident: when every issue of its
    # incident has resolved (the issue alone when it has no incident).
    revert_when: Literal["issue", "incident"] = "issue"

    @field_validator("value")
    @classmethod
    def _plain(cls, value: FlagValue) -> FlagValue:
        if isinstance(value, str) and len(value) > 1000:
            raise ValueError("a flag value is at most 1000 characters")
        return value


def as_text(value: FlagValue) -> str | None:
    """The text form the database gives a value of this kind (``true``, ``10``, ``x``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


COLUMN_TYPE_SQL = sql.SQL(
    "SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null"
    " FROM pg_attribute AS a WHERE a.attrelid = {table}::regclass AND a.attname = {column}"
    " AND a.attnum > 0 AND NOT a.attisdropped"
).format(table=sql.Placeholder("table"), column=sql.Placeholder("column"))


def _read_sql(s: SetFlagSettings, *, lock: bool) -> sql.Composed:
    return sql.SQL("SELECT {v}::text AS value FROM {t} WHERE {k}::text = {key}{lock}").format(
        v=ident(s.value_column),
        t=ident(s.table),
        k=ident(s.key_column),
        key=sql.Placeholder("key"),
        lock=sql.SQL(" FOR UPDATE") if lock else sql.SQL(""),
    )


def column_type(conn: TargetConnection, table: str, column: str) -> tuple[str, bool]:
    """(SQL type as the catalog spells it, NOT NULL?) of ``table.column``."""
    if conn.dialect.name != "postgresql":
        raise RemediationError(
            f"set_flag needs a PostgreSQL target (it casts through the catalog's own type);"
            f" {conn.dialect.name} is not supported",
            target=table,
        )
    rows = conn.fetch_all(COLUMN_TYPE_SQL, {"table": table, "column": column})
    if not rows:
        raise RemediationError(f"column {table}.{column} does not exist", target=table)
    return str(rows[0]["type"]), bool(rows[0]["not_null"])


def write_sql(s: SetFlagSettings, type_name: str, *, only_if_text: bool) -> sql.Composed:
    """``UPDATE … SET value = CAST(text AS <column type>)``; with ``only_if_text`` the row
    must still hold the given text (the revert's compare-and-set)."""
    # type_name comes from the database's own catalog (format_type), never from events.
    cast = sql.SQL("CAST({v} AS {type})").format(
        v=sql.Placeholder("new_text"), type=sql.SQL(type_name)
    )
    # Both sides in the column type's canonical text form, so "10" finds numeric 10.00.
    guard = (
        sql.SQL(" AND {c}::text IS NOT DISTINCT FROM CAST(CAST({old} AS {type}) AS text)").format(
            c=ident(s.value_column), old=sql.Placeholder("old_text"), type=sql.SQL(type_name)
        )
        if only_if_text
        else sql.SQL("")
    )
    return sql.SQL(
        "UPDATE {t} SET {c} = {cast} WHERE {k}::text = {key}{guard} RETURNING {c}::text AS value"
    ).format(
        t=ident(s.table),
        c=ident(s.value_column),
        cast=cast,
        k=ident(s.key_column),
        key=sql.Placeholder("key"),
        guard=guard,
    )


def read_value(conn: TargetConnection, s: SetFlagSettings, *, lock: bool) -> str | None:
    """The row's current value as text; RemediationError when the row does not exist."""
    rows = conn.fetch_all(_read_sql(s, lock=lock), {"key": str(s.key)})
    if not rows:
        raise RemediationError(
            f"{s.table} has no row {s.key_column} = {s.key!r}; a flag is never created",
            target=s.table,
        )
    if len(rows) > 1:
        raise RemediationError(
            f"{s.table}.{s.key_column} = {s.key!r} matches {len(rows)} rows; expected one",
            target=s.table,
        )
    value = rows[0]["value"]
    return None if value is None else str(value)


def _label(s: SetFlagSettings) -> str:
    return f"{s.table}.{s.value_column} where {s.key_column} = {s.key!r}"


class SetFlag:
    """Set a configuration value for the length of an incident (reverted later)."""

    name: ClassVar[str] = "set_flag"
    settings_model: ClassVar[type[ActionSettings]] = SetFlagSettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    # Its SQL (and the revert's) is PostgreSQL's (format_type, ::text, RETURNING): a
    # playbook pointing it at a MySQL/MariaDB or SQLite target is refused when it loads.
    dialects: ClassVar[frozenset[str]] = frozenset({"postgresql"})

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        conn = need_target(conn)
        s = SetFlagSettings.of(settings)
        type_name, not_null = column_type(conn, s.table, s.value_column)
        if s.value is None and not_null:
            raise RemediationError(f"{s.table}.{s.value_column} is NOT NULL; value may not be null")
        current = read_value(conn, s, lock=False)
        new = as_text(s.value)
        row = {"key": json_safe(s.key), "before": current, "value": new, "type": type_name}
        if current == new:
            return Preview(f"{_label(s)} is already {new}; nothing to change", rows=[])
        return Preview(
            f"would set {_label(s)}: {current} -> {new} ({type_name}); reverted when the"
            f" {s.revert_when} resolves or after {s.revert_after_minutes} min",
            rows=[row],
        )

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        conn = need_target(conn)
        s = SetFlagSettings.of(settings)
        type_name, not_null = column_type(conn, s.table, s.value_column)
        if s.value is None and not_null:
            raise RemediationError(f"{s.table}.{s.value_column} is NOT NULL; value may not be null")
        before = read_value(conn, s, lock=True)  # the row stays locked to the commit
        new = as_text(s.value)
        if before == new:
            return Outcome(0, details={"before": before, "value": new, "unchanged": True})
        written = conn.fetch_all(
            write_sql(s, type_name, only_if_text=False), {"key": str(s.key), "new_text": new}
        )
        if len(written) != 1:
            raise RemediationError(f"expected to change 1 row of {s.table}, changed {len(written)}")
        # The value as the database now shows it (numeric 10 -> "10.00"): what the revert's
        # compare-and-set must find to know the value is still ours.
        stored = written[0]["value"]
        image = {"key": json_safe(s.key), "before": before, "value": stored, "type": type_name}
        return Outcome(1, before_image=[image], details=image)

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        conn = need_target(conn)
        s = SetFlagSettings.of(settings)
        now = read_value(conn, s, lock=False)
        want = outcome.details.get("value", as_text(s.value))
        if outcome.details.get("unchanged"):
            return Verification(now == want, f"{_label(s)} was already {want}; now {now}")
        ok = now == want
        return Verification(ok, f"{_label(s)} is {now}" + ("" if ok else f", expected {want}"))


ACTION = SetFlag()

"""Render the actions' SQL for drivers other than psycopg.

Actions write SQL once, as psycopg.sql compositions: ``Identifier`` for the table and
column names a playbook names, ``Placeholder`` for every value. This module turns such a
composition (or reviewed literal text) into the text and parameters another driver
takes, walking it through psycopg's public API only (a ``Composed`` iterates its parts;
each part renders itself with ``as_string(None)``):

- an identifier keeps PostgreSQL's double quotes: SQLite reads them natively, and the
  MySQL/MariaDB adapter turns on ``ANSI_QUOTES`` for its session so they read the same;
- a placeholder becomes the driver's named style (``%(name)s`` for PyMySQL, ``:name``
  for sqlite3); a list or tuple value expands to ``(p0, p1, ...)`` (``(NULL)`` when
  empty, which matches nothing), so ``x IN {ids}`` works where there are no arrays; on
  sqlite3 a list longer than :data:`SQLITE_LIST_BINDS` travels as ONE JSON bind read by
  ``json_each`` (SQLite caps the number of binds per statement at 32,766);
- ``%(name)s`` and ``%%`` inside SQL text are read exactly as psycopg reads them (it does
  not look inside quotes either), so one text means the same thing on every driver;
- a ``sql.Literal`` is refused: values travel as bind parameters, never as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from uuid import UUID

from psycopg import sql

_TOKEN = re.compile(r"%\((?P<name>[^)]+)\)(?P<fmt>[sbt])|%%|%(?P<positional>[sbt])|%")


SQLITE_LIST_BINDS = 500


class ParamStyle(Enum):
    PYFORMAT = "pyformat"  # %(name)s: PyMySQL
    NAMED = "named"  # :name: sqlite3


class Rendered:
    """SQL text in one driver's parameter style, and the parameters it names."""

    __slots__ = ("params", "text")

    def __init__(self, text: str, params: dict[str, object]) -> None:
        self.text = text
        self.params = params


class _Renderer:
    def __init__(
        self, style: ParamStyle, params: Mapping[str, object], adapt: Callable[[object], object]
    ) -> None:
        self.style = style
        self.params = params
        self.adapt = adapt
        self.out: dict[str, object] = {}

    def slot(self, name: str) -> str:
        return f"%({name})s" if self.style is ParamStyle.PYFORMAT else f":{name}"

    def placeholder(self, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"placeholder name {name!r} is not a plain name")
        if name not in self.params:
            raise KeyError(f"no value bound for placeholder {name!r}")
        value = self.params[name]
        if isinstance(value, list | tuple):
            if not value:
                return "(NULL)"
            if self.style is ParamStyle.NAMED and len(value) > SQLITE_LIST_BINDS:
                self.out[name] = json.dumps([self.adapt(item) for item in value])
                # The slot is ":name" with name checked above as a plain identifier.
                return f"(SELECT value FROM json_each({self.slot(name)}))"  # noqa: S608
            slots = []
            for i, item in enumerate(value):
                key = f"{name}__{i}"
                self.out[key] = self.adapt(item)
                slots.append(self.slot(key))
            return "(" + ", ".join(slots) + ")"
        self.out[name] = self.adapt(value)
        return self.slot(name)

    def text(self, fragment: str) -> str:
        def repl(m: re.Match[str]) -> str:
            token = m.group(0)
            if token == "%%":
                return "%%" if self.style is ParamStyle.PYFORMAT else "%"
            if m.group("name") is not None and m.group("fmt") == "s":
                return self.placeholder(m.group("name"))
            raise ValueError(
                f"unsupported placeholder {token!r}: use %(name)s (or %% for a literal %)"
            )

        return _TOKEN.sub(repl, fragment)

    def walk(self, part: sql.Composable | str) -> str:
        if isinstance(part, str):
            return self.text(part)
        if isinstance(part, sql.Composed):
            return "".join(self.walk(p) for p in part)
        if isinstance(part, sql.SQL):
            return self.text(part.as_string(None))
        if isinstance(part, sql.Identifier):
            # Checked identifiers, quoted as PostgreSQL quotes them ("a"."b").
            text = part.as_string(None)
            return text.replace("%", "%%") if self.style is ParamStyle.PYFORMAT else text
        if isinstance(part, sql.Placeholder):
            return self.text(part.as_string(None))
        if isinstance(part, sql.Literal):
            raise ValueError("sql.Literal is not rendered for this driver: bind the value")
        raise TypeError(f"cannot render {type(part).__name__} as SQL")


def plain_value(value: object) -> object:
    """A bind value every driver takes: UUIDs as text, enums by value, others as they are."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def sqlite_value(value: object) -> object:
    """A bind value for sqlite3: datetimes in the ``datetime('now')`` text form (UTC,
    seconds), decimals as text; never through sqlite3's deprecated default adapters."""
    value = plain_value(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return str(value)
    return value


def render(
    query: sql.Composable | str, params: Mapping[str, object] | None, style: ParamStyle
) -> Rendered:
    """Render ``query`` with ``params`` for a driver of ``style`` (see the module doc)."""
    renderer = _Renderer(
        style, params or {}, sqlite_value if style is ParamStyle.NAMED else plain_value
    )
    text = renderer.walk(query)
    return Rendered(text, renderer.out)

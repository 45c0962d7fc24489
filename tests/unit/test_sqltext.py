"""bot.adapters.targets.sqltext: psycopg.sql compositions rendered for PyMySQL and sqlite3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from psycopg import sql

from bot.adapters.targets.sqltext import ParamStyle, render

Q = sql.SQL("SELECT {col} FROM {table} WHERE {col} IN {ids} AND x = {v}").format(
    col=sql.Identifier("id"),
    table=sql.Identifier("jobs", "tasks"),
    ids=sql.Placeholder("ids"),
    v=sql.Placeholder("v"),
)


@pytest.mark.parametrize(
    ("style", "text", "params"),
    [
        (
            ParamStyle.PYFORMAT,
            'SELECT "id" FROM "jobs"."tasks" WHERE "id" IN (%(ids__0)s, %(ids__1)s) AND x = %(v)s',
            {"ids__0": 1, "ids__1": 2, "v": "a"},
        ),
        (
            ParamStyle.NAMED,
            'SELECT "id" FROM "jobs"."tasks" WHERE "id" IN (:ids__0, :ids__1) AND x = :v',
            {"ids__0": 1, "ids__1": 2, "v": "a"},
        ),
    ],
)
def test_identifiers_quoted_placeholders_in_driver_style(
    style: ParamStyle, text: str, params: dict[str, Any]
) -> None:
    out = render(Q, {"ids": [1, 2], "v": "a", "unused": 3}, style)
    assert (out.text, out.params) == (text, params)


def test_an_empty_list_matches_nothing() -> None:
    out = render(Q, {"ids": [], "v": "a"}, ParamStyle.NAMED)
    assert '"id" IN (NULL)' in out.text


def test_percent_signs_read_as_psycopg_reads_them() -> None:
    text = "SELECT 1 WHERE a LIKE 'x%%' AND b = %(b)s"
    assert render(text, {"b": 1}, ParamStyle.NAMED).text == "SELECT 1 WHERE a LIKE 'x%' AND b = :b"
    assert render(text, {"b": 1}, ParamStyle.PYFORMAT).text == text


@pytest.mark.parametrize(
    ("query", "params", "error"),
    [
        (sql.SQL("SELECT {}").format(sql.Literal("x")), {}, ValueError),
        ("SELECT %s", {}, ValueError),
        ("SELECT 5 % 2", {}, ValueError),
        ("SELECT %(missing)s", {}, KeyError),
        (sql.SQL("SELECT {}").format(sql.Placeholder("a b")), {"a b": 1}, ValueError),
    ],
)
def test_refused_forms(query: Any, params: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        render(query, params, ParamStyle.NAMED)


def test_values_are_adapted_for_sqlite() -> None:
    local = datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    out = render(
        "SELECT %(u)s, %(t)s, %(n)s",
        {"u": UUID(int=1), "t": local, "n": datetime(2026, 3, 1, tzinfo=UTC)},
        ParamStyle.NAMED,
    )
    assert out.params == {
        "u": "00000000-0000-0000-0000-000000000001",
        "t": "2026-03-01 12:00:00",  # UTC, D1's datetime('now') form
        "n": "2026-03-01 00:00:00",
    }


def test_a_long_list_is_one_json_bind_for_sqlite() -> None:
    out = render(Q, {"ids": list(range(501)), "v": "a"}, ParamStyle.NAMED)
    assert '"id" IN (SELECT value FROM json_each(:ids))' in out.text
    assert out.params["ids"] == "[" + ", ".join(map(str, range(501))) + "]"
    assert "ids__0" in render(Q, {"ids": list(range(501)), "v": 1}, ParamStyle.PYFORMAT).params

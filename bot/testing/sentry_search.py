"""The subset of Sentry's issue search syntax the fake understands.

Supported tokens: ``is:unresolved|resolved|ignored|archived``, ``lastSeen`` and
``firstSeen`` with ``>=, >, <=, <`` and an absolute date (``2026-03-01T11:55:00``,
optional fraction, ``Z`` or ``+hh:mm``; naive is UTC) or a relative one (``-24h``),
``level:``, ``environment:``, and bare words matched against the title. Anything else is
a :class:`SearchError`, so a test that relies on an unsupported filter fails loudly
instead of silently matching everything.
"""

from __future__ import annotations

import operator
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.json_types import JsonObject
from bot.testing.sentry_data import parse_iso, parse_period

_OPS: dict[str, Callable[[datetime, datetime], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_STATUS = {"unresolved", "resolved", "ignored", "archived"}
SORT_KEYS = {"date": "lastSeen", "new": "firstSeen", "freq": "count", "user": "userCount"}

Predicate = Callable[[JsonObject, set[str]], bool]
"""One query token: does it match (issue JSON, the issue's environments)?"""


class SearchError(ValueError):
    """The query uses syntax the fake does not support (the fake answers 400)."""


@dataclass
class IssueSearch:
    """A parsed query: a list of predicates over (issue JSON, its environments)."""

    predicates: list[Predicate] = field(default_factory=list)

    def matches(self, issue: JsonObject, environments: set[str]) -> bool:
        """True if every token of the query matches the issue."""
        return all(pred(issue, environments) for pred in self.predicates)


def parse_query(query: str, now: datetime) -> IssueSearch:
    """Parse ``query`` (empty: everything)."""
    search = IssueSearch()
    try:
        tokens = shlex.split(query)
    except ValueError as exc:
        raise SearchError(f"cannot parse query: {exc}") from exc
    for token in tokens:
        key, sep, value = token.partition(":")
        if not sep:
            search.predicates.append(_title_contains(token.lower()))
        elif key == "is":
            search.predicates.append(_status(value))
        elif key in ("lastSeen", "firstSeen"):
            search.predicates.append(_date(key, value, now))
        elif key == "level":
            search.predicates.append(_field_equals("level", value))
        elif key == "environment":
            search.predicates.append(_in_environment(value))
        else:
            raise SearchError(f"FakeSentry does not support the search key {key!r}")
    return search


def _title_contains(word: str) -> Predicate:
    return lambda issue, _envs: word in str(issue["title"]).lower()


def _field_equals(key: str, value: str) -> Predicate:
    return lambda issue, _envs: issue.get(key) == value


def _in_environment(value: str) -> Predicate:
    return lambda _issue, envs: value in envs


def _status(value: str) -> Predicate:
    if value not in _STATUS:
        raise SearchError(f"unsupported is: value {value!r}")
    wanted = "ignored" if value == "archived" else value
    return lambda issue, _envs: issue["status"] == wanted


def _date(key: str, value: str, now: datetime) -> Predicate:
    for symbol in (">=", "<=", ">", "<"):
        if value.startswith(symbol):
            op, raw = _OPS[symbol], value[len(symbol) :]
            break
    else:
        op, raw = operator.ge, value
    if raw[:1] in "+-" and (period := parse_period(raw[1:])) is not None:
        # Sentry's relative form: lastSeen:-24h means "within the last 24 hours".
        bound = now - period
        op = operator.ge if raw[0] == "-" else operator.le
    else:
        parsed = parse_iso(raw)
        if parsed is None:
            raise SearchError(f"invalid date in {key}:{value}")
        bound = parsed

    def pred(issue: JsonObject, _envs: set[str]) -> bool:
        seen = issue.get(key)
        when = parse_iso(seen) if isinstance(seen, str) else None
        return when is not None and op(when, bound)

    return pred


def sort_issues(issues: list[JsonObject], sort: str) -> list[JsonObject]:
    """Sentry's sort orders, all descending; ties broken by id so pages are stable."""
    if sort not in SORT_KEYS:
        raise SearchError(f"FakeSentry does not support sort={sort!r}")
    key = SORT_KEYS[sort]

    def sort_key(issue: JsonObject) -> tuple[float, int]:
        raw = issue.get(key)
        if key in ("lastSeen", "firstSeen"):
            parsed = parse_iso(raw) if raw else None
            value: float = parsed.timestamp() if parsed else float("-inf")
        else:
            value = float(raw or 0)
        return value, int(issue["id"]) if str(issue["id"]).isdigit() else 0

    return sorted(issues, key=sort_key, reverse=True)

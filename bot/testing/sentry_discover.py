"""The organization events table (``GET organizations/{org}/events/``) of FakeSentry.

Only the shape the bot uses is understood: ``dataset=errors``, ``field=issue.id`` and
``field=count()`` (count per issue; ``count()`` alone is one total row), a query of
``issue.id:ID`` or ``issue.id:[ID,ID,...]`` (or empty), ``statsPeriod`` or
``start``/``end``, ``environment`` and ``project`` filters, ``per_page`` and ``sort``.
Anything else is a 400, so a test relying on an unsupported feature fails loudly.
Issues without events in the window have no row, as in Sentry. Setting
``FakeSentry.events_refusal`` to 403 or 400 makes the endpoint refuse, as it does for
plans without the feature or tokens without the scope.
"""

from __future__ import annotations

import re
from datetime import datetime

import httpx

from bot.json_types import JsonObject
from bot.testing import sentry_data as data
from bot.testing.sentry_state import FakeState

Rows = list[JsonObject]
Refusal = tuple[int, JsonObject]

DATASETS = {"errors", "logs", "profile_functions", "spans", "tracemetrics", "uptime_results"}
_FIELDS = {"issue.id", "count()"}
_ISSUE_QUERY = re.compile(r"^issue\.id:(?:\[(?P<many>[\d,\s]*)\]|(?P<one>\d+))$")
_REFUSALS: dict[int, JsonObject] = {
    403: {"detail": "You do not have permission to perform this action."},
    400: {"detail": "You cannot view events from multiple projects."},
}
META = {
    "fields": {"issue.id": "integer", "count()": "integer"},
    "units": {"issue.id": None, "count()": None},
    "isMetricsData": False,
    "isMetricsExtractedData": False,
    "tips": {},
    "datasetReason": "unchanged",
    "dataset": "errors",
}


def events_table(fake: FakeState, request: httpx.Request) -> tuple[Rows, Refusal | None]:
    """All rows of the table (unpaginated), or the error answer ``(status, body)``."""
    if fake.events_refusal is not None:
        status = fake.events_refusal
        return [], (status, _REFUSALS.get(status, {"detail": "Refused."}))
    params = request.url.params
    dataset = params.get("dataset")
    if dataset not in DATASETS:
        return [], (400, {"detail": "dataset: a valid dataset is required."})
    if dataset != "errors":
        return [], (400, {"detail": f"FakeSentry supports only dataset=errors, not {dataset}"})
    fields = params.get_list("field")
    if "count()" not in fields or not set(fields) <= _FIELDS:
        return [], (400, {"detail": f"FakeSentry does not support fields {fields!r}"})
    sort = params.get("sort")
    if sort and sort.lstrip("-") not in fields:
        return [], (400, {"detail": "Cannot sort by a field that is not selected."})
    wanted, problem = _issue_ids(params.get("query", ""))
    if problem:
        return [], (400, {"detail": problem})
    window, problem = _window(fake, params)
    if problem or window is None:
        return [], (400, {"detail": problem or "Invalid date range"})
    counts = _count(fake, wanted, window, params)
    if "issue.id" not in fields:
        return [{"count()": sum(counts.values())}], None
    rows = [{"issue.id": int(i), "count()": n} for i, n in counts.items() if n > 0]
    key = (sort or "-count()").lstrip("-")
    descending = (sort or "-count()").startswith("-")
    rows.sort(key=lambda r: (r[key], r["issue.id"]), reverse=descending)
    return rows, None


def _issue_ids(query: str) -> tuple[set[str] | None, str | None]:
    text = query.strip()
    if not text:
        return None, None
    m = _ISSUE_QUERY.match(text)
    if not m:
        return None, f"FakeSentry does not support the events query {text!r}"
    if m.group("one"):
        return {m.group("one")}, None
    ids = {part.strip() for part in (m.group("many") or "").split(",") if part.strip()}
    if not ids:
        return None, "issue.id: an empty list is not a valid value"
    return ids, None


def _window(
    fake: FakeState, params: httpx.QueryParams
) -> tuple[tuple[datetime, datetime] | None, str | None]:
    now = fake.clock.now()
    if params.get("statsPeriod"):
        period = data.parse_period(params.get("statsPeriod", ""))
        if period is None:
            return None, "Invalid statsPeriod"
        return (now - period, now), None
    start = data.parse_iso(params.get("start", "")) if params.get("start") else None
    end = data.parse_iso(params.get("end", "")) if params.get("end") else None
    if start is None or end is None:
        return None, "Either statsPeriod or both start and end are required"
    return (start, end), None


def _count(
    fake: FakeState,
    wanted: set[str] | None,
    window: tuple[datetime, datetime],
    params: httpx.QueryParams,
) -> dict[str, int]:
    start, end = window
    environments = set(params.get_list("environment"))
    projects = set(params.get_list("project")) - {"-1"}
    counts: dict[str, int] = {}
    for issue_id, state in fake.issues.items():
        if wanted is not None and issue_id not in wanted:
            continue
        project = state.data["project"]
        if projects and not projects & {project["id"], project["slug"]}:
            continue
        n = 0
        for event in state.events:
            when = data.parse_iso(event["dateCreated"])
            if when is None or when < start or when > end:
                continue
            env = next((t["value"] for t in event["tags"] if t["key"] == "environment"), None)
            if environments and env not in environments:
                continue
            n += 1
        counts[issue_id] = n
    return counts

"""Where issues come from: the Sentry API, or a replay file for offline cycles.

An :class:`IssueSource` answers "which issues changed since ``since``" plus the event
questions the lifecycle asks. The poller keeps the watermark and the overlap; a source
only has to never miss an issue whose ``lastSeen`` is at or after ``since``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import ValidationError

from bot.clock import Clock, ensure_utc
from bot.errors import SentryBadResponse
from bot.json_types import JsonValue
from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue
from bot.sentry.port import SentryPort

M = TypeVar("M", SentryIssue, SentryEvent)
_PERIOD = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_period(text: str) -> timedelta | None:
    """A Sentry stats period (``48h``, ``14d``, ``30m``) as a timedelta; None if invalid."""
    m = _PERIOD.match(text.strip())
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}) if m else None


class IssueSource(Protocol):
    """A stream of Sentry issues (API poll, replay file, later webhooks)."""

    name: str

    def poll(self, since: datetime | None) -> Iterator[SentryIssue]:
        """Issues whose ``lastSeen`` is at or after ``since`` (all when None), newest first."""
        ...

    def events(self, issue_id: str, *, stats_period: str) -> list[SentryEvent]:
        """The issue's events within ``stats_period`` (``48h``), newest first."""
        ...

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The issue's latest event with entries, or None."""
        ...

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Items the last polls could not read (recorded by the poller, never fatal)."""
        ...


def since_filter(since: datetime) -> str:
    """Sentry search token for "lastSeen at or after ``since``".

    Floored to the whole second (Sentry stores sub-second lastSeen) and ``>=`` so an
    issue whose lastSeen equals the watermark is never skipped; naive ISO means UTC.
    """
    moment = ensure_utc(since).replace(microsecond=0)
    return f"lastSeen:>={moment.strftime('%Y-%m-%dT%H:%M:%S')}"


class SentryApiSource:
    """Polls the organization issues endpoint through a :class:`SentryPort`."""

    name = "sentry"

    def __init__(
        self,
        port: SentryPort,
        *,
        query: str = "is:unresolved",
        projects: Sequence[str] = (),
        environments: Sequence[str] = (),
        stats_period: str | None = None,
    ) -> None:
        self.port = port
        self.query = query
        self.projects = tuple(projects)
        self.environments = tuple(environments)
        self.stats_period = stats_period

    def poll(self, since: datetime | None) -> Iterator[SentryIssue]:
        """Issues matching the query with lastSeen >= since, sorted by lastSeen desc."""
        query = self.query if since is None else f"{self.query} {since_filter(since)}".strip()
        return self.port.list_issues(
            query=query,
            projects=self.projects,
            environments=self.environments,
            sort="date",
            stats_period=self.stats_period,
        )

    def events(self, issue_id: str, *, stats_period: str) -> list[SentryEvent]:
        """Events in the window, straight from Sentry."""
        return self.port.list_events(issue_id, stats_period=stats_period)

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The latest event, straight from Sentry."""
        return self.port.latest_event(issue_id)

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Malformed items the client set aside while polling."""
        return self.port.take_quarantined()


class ReplaySource:
    """Issues (and events) read from a JSON file shaped like Sentry's list response.

    The file is either a list of issues or ``{"issues": [...], "events": {"<id>": [...]}}``;
    an issue may carry ``latestEvent`` and ``tags``. The whole file is validated up front:
    a bad item is a :class:`SentryBadResponse` naming the file and the item.
    """

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.name = f"replay:{self.path.name}"
        self._clock = clock
        self.issues, self._events = _load_replay(self.path)

    def poll(self, since: datetime | None) -> Iterator[SentryIssue]:
        """Issues with lastSeen >= since (second precision, like the API), newest first."""
        floor = ensure_utc(since).replace(microsecond=0) if since is not None else None
        picked = [
            issue
            for issue in self.issues
            if floor is None or (issue.last_seen is not None and issue.last_seen >= floor)
        ]
        picked.sort(key=_last_seen_key, reverse=True)
        return iter(picked)

    def events(self, issue_id: str, *, stats_period: str) -> list[SentryEvent]:
        """Recorded events in the window ending at the clock's now (all, without a clock)."""
        period = parse_period(stats_period)
        if period is None:
            raise ValueError(f"not a stats period: {stats_period!r}")
        events = self._events.get(issue_id, [])
        if self._clock is not None:
            start = self._clock.now() - period
            events = [e for e in events if e.date_created and e.date_created >= start]
        return sorted(events, key=_created_key, reverse=True)

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The issue's ``latestEvent``, else its newest recorded event."""
        for issue in self.issues:
            if issue.id == issue_id and issue.latest_event is not None:
                return issue.latest_event
        events = sorted(self._events.get(issue_id, []), key=_created_key, reverse=True)
        return events[0] if events else None

    def take_quarantined(self) -> list[QuarantinedItem]:
        """A replay file is validated whole when loaded: nothing is set aside."""
        return []


def _load_replay(path: Path) -> tuple[list[SentryIssue], dict[str, list[SentryEvent]]]:
    try:
        raw: JsonValue = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SentryBadResponse(f"cannot read replay file: {exc.strerror}", file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise SentryBadResponse(
            f"replay file is not valid JSON: {exc.msg} at line {exc.lineno}", file=str(path)
        ) from exc
    if isinstance(raw, list):
        raw = {"issues": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("issues"), list):
        raise SentryBadResponse(
            'replay file must be a list of issues or {"issues": [...], "events": {...}}',
            file=str(path),
        )
    issues = [
        _validate(SentryIssue, item, path, f"issues[{n}]") for n, item in enumerate(raw["issues"])
    ]
    events_raw = raw.get("events") or {}
    if not isinstance(events_raw, dict):
        raise SentryBadResponse("replay 'events' must map issue ids to lists", file=str(path))
    events: dict[str, list[SentryEvent]] = {}
    for issue_id, items in events_raw.items():
        if not isinstance(items, list):
            raise SentryBadResponse(
                "replay events must be a list", file=str(path), item=f"events[{issue_id!r}]"
            )
        events[str(issue_id)] = [
            _validate(SentryEvent, item, path, f"events[{issue_id!r}][{n}]")
            for n, item in enumerate(items)
        ]
    return issues, events


def _validate(model: type[M], item: JsonValue, path: Path, where: str) -> M:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "<item>"
        ident = item.get("shortId") or item.get("id") if isinstance(item, dict) else None
        raise SentryBadResponse(
            f"malformed {model.__name__} in replay file: {field}: {first['msg']}",
            file=str(path),
            item=where,
            id=ident,
        ) from exc


def _last_seen_key(issue: SentryIssue) -> datetime:
    return issue.last_seen or datetime.min.replace(tzinfo=UTC)


def _created_key(event: SentryEvent) -> datetime:
    return event.date_created or datetime.min.replace(tzinfo=UTC)

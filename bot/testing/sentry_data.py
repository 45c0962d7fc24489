"""Realistic Sentry JSON for :class:`~bot.testing.sentry.FakeSentry`.

Shapes follow Sentry's OpenAPI description (release 0.272.0): every field the schema
marks required for the list, detail and event responses is present, with Sentry's
types (``count`` a string, ``userCount`` an integer, nullable fields as null).
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import UTC, datetime, timedelta

from bot.json_types import JsonObject

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2})?$"
)
_PERIOD = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Fields of the list response (GET organizations/{org}/issues/).
LIST_ONLY = (
    "stats",
    "lifetime",
    "filtered",
    "sessionCount",
    "inbox",
    "owners",
    "integrationIssues",
    "sentryAppIssues",
    "latestEventHasAttachments",
    "matchingEventId",
    "matchingEventEnvironment",
    "derivedData",
)
DETAIL_ONLY = ("activity", "seenBy", "userReportCount", "participants", "tags")


def iso(value: datetime) -> str:
    """Sentry's datetime format: UTC with a ``Z``, microseconds only when non-zero."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=65_536)  # sorting re-reads every issue's dates per page
def parse_iso(text: str) -> datetime | None:
    """Parse a date the way Sentry's search grammar accepts it; naive means UTC."""
    m = _ISO.match(text)
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    value = datetime(
        int(year),
        int(month),
        int(day),
        int(hh or 0),
        int(mm or 0),
        int(ss or 0),
        int((frac or "0").ljust(6, "0")),
        tzinfo=UTC,
    )
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        value -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return value


def parse_period(text: str) -> timedelta | None:
    """``48h``, ``14d``, ``30m`` ... as a timedelta; None if not a period."""
    m = _PERIOD.match(text.strip())
    if not m:
        return None
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def base_issue(
    *,
    issue_id: str,
    short_id: str,
    org: str,
    now: datetime,
    project: JsonObject,
    overrides: JsonObject,
) -> JsonObject:
    """An unresolved issue with no events yet; ``overrides`` replace top-level fields."""
    title = overrides.get("title", "Error: something went wrong")
    kind, _, value = title.partition(": ")
    data: JsonObject = {
        "id": issue_id,
        "shareId": None,
        "shortId": short_id,
        "title": title,
        "culprit": "app.main in handler",
        "permalink": f"https://{org}.sentry.io/issues/{issue_id}/",
        "logger": None,
        "level": "error",
        "status": "unresolved",
        "statusDetails": {},
        "substatus": "new",
        "isPublic": False,
        "platform": project.get("platform"),
        "priority": "medium",
        "priorityLockedAt": None,
        "seerFixabilityScore": None,
        "seerAutofixLastTriggered": None,
        "seerExplorerAutofixLastTriggered": None,
        "project": project,
        "type": "error",
        "issueType": "error",
        "issueCategory": "error",
        "metadata": {"type": kind, "value": value} if value else {"title": title},
        "numComments": 0,
        "assignedTo": None,
        "isBookmarked": False,
        "isSubscribed": False,
        "subscriptionDetails": None,
        "hasSeen": False,
        "annotations": [],
        "isUnhandled": False,
        "count": "0",
        "userCount": 0,
        "firstSeen": iso(now),
        "lastSeen": iso(now),
    }
    data.update(overrides)
    data["count"] = str(data["count"])
    return data


def list_shape(issue: JsonObject) -> JsonObject:
    """The issue as the list endpoint returns it."""
    out = {k: v for k, v in issue.items() if k not in DETAIL_ONLY}
    counts = {
        "count": issue["count"],
        "userCount": issue["userCount"],
        "firstSeen": issue["firstSeen"],
        "lastSeen": issue["lastSeen"],
        "stats": {},
    }
    out.update(
        stats={"24h": []},
        lifetime=dict(counts),
        filtered=None,
        sessionCount=0,
        inbox={"reason": 0, "reason_details": None, "date_added": issue["firstSeen"]},
        owners={"type": "ownershipRule", "owner": "team:1", "date_added": issue["firstSeen"]},
        integrationIssues=[],
        sentryAppIssues=[],
        latestEventHasAttachments=False,
        matchingEventId=None,
        matchingEventEnvironment=None,
        derivedData={
            "blocker": "",
            "progress": "",
            "status": "",
            "viewCount": 0,
            "hasOpenFixPr": False,
            "isAssigned": issue.get("assignedTo") is not None,
            "hasRootCause": False,
            "lastCompletedAutofixStep": "",
            "lastProgressedAt": None,
        },
    )
    return out


def detail_shape(issue: JsonObject, tags: list[JsonObject]) -> JsonObject:
    """The issue as GET/PUT ``issues/{id}/`` return it."""
    out = dict(issue)
    out.update(activity=[], seenBy=[], userReportCount=0, participants=[], tags=tags, stats={})
    return out


def new_event(
    *,
    issue: JsonObject,
    at: datetime,
    message: str | None,
    environment: str,
    user: JsonObject | None,
    tags: dict[str, str] | None,
    entries: list[JsonObject] | None,
    release: str | None,
) -> JsonObject:
    """A full event (the ``events/latest/`` shape); list responses are cut from it."""
    event_id = uuid.uuid4().hex
    text = message if message is not None else issue["title"]
    all_tags = {"environment": environment, "level": issue["level"]}
    if release:
        all_tags["release"] = release
    all_tags.update(tags or {})
    if entries is None:
        kind, _, value = text.partition(": ")
        entries = [
            {
                "type": "exception",
                "data": {
                    "values": [
                        {
                            "type": kind if value else "Error",
                            "value": value or text,
                            "stacktrace": {"frames": []},
                        }
                    ]
                },
            }
        ]
    return {
        "id": event_id,
        "groupID": issue["id"],
        "eventID": event_id,
        "projectID": issue["project"]["id"],
        "message": text,
        "title": issue["title"],
        "location": None,
        "culprit": issue["culprit"],
        "user": user,
        "tags": [{"key": k, "value": v} for k, v in sorted(all_tags.items())],
        "platform": issue.get("platform") or "other",
        "dateReceived": iso(at),
        "dateCreated": iso(at),
        "contexts": {},
        "size": 1024,
        "entries": entries,
        "dist": None,
        "sdk": {"name": "sentry.python", "version": "2.19.0"},
        "context": {},
        "packages": {},
        "type": "error",
        "metadata": issue["metadata"],
        "errors": [],
        "occurrence": None,
        "_meta": {},
        "crashFile": None,
        "release": None,
        "userReport": None,
        "sdkUpdates": [],
        "resolvedWith": [],
        "nextEventID": None,
        "previousEventID": None,
    }


_LIST_EVENT_KEYS = (
    "id",
    "groupID",
    "eventID",
    "projectID",
    "message",
    "title",
    "location",
    "culprit",
    "user",
    "tags",
    "platform",
    "dateCreated",
    "crashFile",
    "metadata",
)


def event_list_shape(event: JsonObject, *, full: bool) -> JsonObject:
    """An event as ``issues/{id}/events/`` returns it; ``full`` keeps the entries."""
    out = {k: event[k] for k in _LIST_EVENT_KEYS}
    out["event.type"] = event["type"]
    out["message"] = event["message"] or ""
    if full:
        out["entries"] = event["entries"]
        out["contexts"] = event["contexts"]
    return out

"""Sentry's JSON into the bot's models: validation, quarantine and id checks.

Everything here is pure (no I/O): the transport hands over a response or its decoded
JSON, and these functions return :mod:`bot.sentry.models` objects or raise
:class:`~bot.errors.SentryBadResponse`. A malformed item of a list-issues page is
quarantined (:class:`~bot.sentry.models.QuarantinedItem`) rather than failing the page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
from pydantic import TypeAdapter, ValidationError

from bot.errors import SentryBadResponse
from bot.json_types import JsonArray, JsonValue
from bot.safety.text import SHORT_ID_LIMIT, bound_short_id, escaped_json, normalise_item
from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue

log = logging.getLogger(__name__)

ISSUE_PAGE: TypeAdapter[list[SentryIssue]] = TypeAdapter(list[SentryIssue])
# JSON escapes of NUL or of a UTF-16 surrogate: such a page needs text normalisation.
_NEEDS_CLEANING = re.compile(rb"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


@dataclass
class IssuePage:
    """One list-issues page: the readable issues and the quarantined items."""

    issues: list[SentryIssue]
    quarantined: list[QuarantinedItem]


def segment(value: str) -> str:
    """``value`` as one URL path segment; ValueError for an empty, dotted or slashed id."""
    text = str(value)
    if not text or "/" in text or text in (".", ".."):
        raise ValueError(f"not a valid Sentry id: {value!r}")
    return text


def numeric_id(value: str) -> str:
    """Sentry issue ids are decimal strings (they exceed 2**53: never a float)."""
    text = str(value)
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"not a numeric Sentry issue id: {value!r}")
    return text


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_list(data: JsonValue, what: str) -> JsonArray:
    """``data`` when it is a JSON list, else SentryBadResponse naming ``what``."""
    if not isinstance(data, list):
        raise SentryBadResponse(f"{what}: expected a JSON list, got {type(data).__name__}")
    return data


def count_rows(page: JsonValue) -> Iterator[tuple[str, int]]:
    """``(issue id, count)`` from one events-table page ``{"data": [...], "meta": ...}``."""
    rows = page.get("data") if isinstance(page, dict) else None
    if not isinstance(rows, list):
        raise SentryBadResponse("event counts: expected an object with a data list")
    for row in rows:
        issue_id = row.get("issue.id") if isinstance(row, dict) else None
        count = row.get("count()") if isinstance(row, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or issue_id is None:
            raise SentryBadResponse(f"event counts: malformed row {str(row)[:200]}")
        yield str(issue_id), count


def issue_page(response: httpx.Response) -> IssuePage:
    """A list-issues page, validated; an unreadable item is quarantined, not fatal.

    Validating the bytes in one pass skips building Python objects for the ~50 fields
    of each issue the bot ignores: faster than ``json.loads`` alone (bench/poll.py).
    A page with escaped NUL/surrogates, an over-long short id or an item that does not
    validate takes the slow path: each item normalised (:mod:`bot.safety.text`) and
    validated on its own. Unreadable JSON raises JSONDecodeError (retried by the
    caller); a non-list answer is a SentryBadResponse.
    """
    content = response.content
    if not _NEEDS_CLEANING.search(content):
        try:
            issues = ISSUE_PAGE.validate_json(content)
        except ValidationError:
            pass
        else:
            if all(len(i.short_id) <= SHORT_ID_LIMIT for i in issues):
                return IssuePage(issues, [])
    data: JsonValue = response.json()
    page = IssuePage([], [])
    for item in as_list(data, "list issues"):
        try:
            page.issues.append(issue(item, "list issues"))
        except SentryBadResponse as exc:
            page.quarantined.append(_quarantine(item, str(exc)))
    return page


def _quarantine(item: JsonValue, reason: str) -> QuarantinedItem:
    cleaned = normalise_item(item)
    fields = cleaned if isinstance(cleaned, dict) else {}
    issue_id, short_id = fields.get("id"), fields.get("shortId")
    last_seen = None
    try:
        raw_seen = fields.get("lastSeen")
        last_seen = datetime.fromisoformat(raw_seen) if isinstance(raw_seen, str) else None
        last_seen = last_seen if last_seen is None or last_seen.tzinfo else None
    except ValueError:
        last_seen = None
    log.warning("quarantined a malformed Sentry issue: %s", reason)
    return QuarantinedItem(
        issue_id=str(issue_id)[:64] if isinstance(issue_id, str | int) else None,
        short_id=bound_short_id(short_id) if isinstance(short_id, str) else None,
        reason=reason[:2000],
        raw_escaped=escaped_json(item),
        last_seen=last_seen,
    )


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()[:3]
    )


def issue(data: JsonValue, what: str) -> SentryIssue:
    """One issue, validated; SentryBadResponse (with the issue id) when malformed."""
    try:
        return SentryIssue.model_validate(normalise_item(data))
    except ValidationError as exc:
        issue_id = data.get("id") if isinstance(data, dict) else None
        raise SentryBadResponse(
            f"{what}: malformed issue ({_field_errors(exc)})", issue_id=issue_id
        ) from exc


def event(data: JsonValue, what: str) -> SentryEvent:
    """One event, validated; SentryBadResponse (with the event id) when malformed."""
    try:
        return SentryEvent.model_validate(normalise_item(data))
    except ValidationError as exc:
        event_id = data.get("eventID") if isinstance(data, dict) else None
        raise SentryBadResponse(
            f"{what}: malformed event ({_field_errors(exc)})", event_id=event_id
        ) from exc

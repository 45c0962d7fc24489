"""Pydantic models of the parts of Sentry's JSON the bot reads.

Sentry owns this format, so unknown fields are ignored (``extra="ignore"``), but the
fields we rely on are validated: a response without an ``id`` or with a non-numeric
``count`` is a :class:`~bot.errors.SentryBadResponse`, not a half-filled issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from bot.json_types import JsonObject, JsonValue


class _SentryModel(BaseModel):
    # Ids are strings end to end (Sentry's exceed 2**53): a numeric id becomes its text.
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, coerce_numbers_to_str=True
    )


@dataclass(frozen=True)
class QuarantinedItem:
    """An item of a Sentry page the bot could not read: recorded, never fatal."""

    issue_id: str | None
    short_id: str | None
    reason: str
    raw_escaped: str
    last_seen: datetime | None = None


class SentryProject(_SentryModel):
    id: str
    slug: str
    name: str = ""
    platform: str | None = None


class SentryIssue(_SentryModel):
    """One issue (a "group") as returned by the organization issues endpoints."""

    id: str
    short_id: str = Field(alias="shortId")
    title: str
    culprit: str | None = None
    permalink: str = ""
    level: str = "error"
    status: str = "unresolved"
    substatus: str | None = None
    status_details: JsonObject = Field(default_factory=dict, alias="statusDetails")
    platform: str | None = None
    project: SentryProject
    type: str = "default"
    metadata: JsonObject = Field(default_factory=dict)
    count: int = 0
    user_count: int = Field(default=0, alias="userCount")
    # Sentry's timestamps always carry their zone ("Z"); one without is a malformed
    # answer (quarantined with the reason), never guessed to be UTC or local time.
    first_seen: AwareDatetime | None = Field(default=None, alias="firstSeen")
    last_seen: AwareDatetime | None = Field(default=None, alias="lastSeen")
    is_unhandled: bool = Field(default=False, alias="isUnhandled")
    # Not part of the list response: a replay file (or the bot) may attach tags and the
    # latest event so a cycle can match on them offline.
    tags: dict[str, str] = Field(default_factory=dict)
    latest_event: SentryEvent | None = Field(default=None, alias="latestEvent")
    # Set by bot.safety.text.normalise_item when hostile text had to be removed: the
    # original item as ASCII-only JSON.
    raw_escaped: str | None = Field(default=None, alias="rawEscaped")

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_detail_list(cls, value: JsonValue) -> JsonValue:
        # GET issues/{id}/ sends tags as [{"key", "topValues": [{"value", "count"}]}]:
        # keep each key's most frequent value so the dict form works for both shapes.
        if not isinstance(value, list):
            return value
        out: dict[str, str] = {}
        for item in value:
            top = item.get("topValues") if isinstance(item, dict) else None
            first = top[0] if isinstance(top, list) and top else None
            if isinstance(first, dict) and first.get("value") is not None and item.get("key"):
                out[str(item["key"])] = str(first["value"])
        return out

    @field_validator("count", mode="before")
    @classmethod
    def _count_is_a_string(cls, value: JsonValue) -> int:
        # Sentry sends count as a string ("718"); userCount as an integer.
        if isinstance(value, bool):
            raise ValueError("count must be a number or numeric string")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise ValueError(f"count must be a numeric string, got {value!r}")

    @property
    def message(self) -> str:
        """The issue's error value (``metadata.value``), falling back to the title."""
        value = self.metadata.get("value")
        return value if isinstance(value, str) else self.title

    @property
    def environment(self) -> str | None:
        env = self.tags.get("environment")
        if env:
            return env
        return self.latest_event.environment if self.latest_event else None


class SentryEvent(_SentryModel):
    """One event of an issue (``GET .../issues/{id}/events/``)."""

    id: str = Field(alias="eventID")
    title: str = ""
    message: str = ""
    date_created: AwareDatetime | None = Field(default=None, alias="dateCreated")
    platform: str | None = None
    tags: list[JsonObject] = Field(default_factory=list)
    entries: list[JsonObject] = Field(default_factory=list)
    context: JsonObject = Field(default_factory=dict)
    user: JsonObject | None = None

    @property
    def environment(self) -> str | None:
        return self.tag("environment")

    def tag(self, key: str) -> str | None:
        for item in self.tags:
            if item.get("key") == key:
                value = item.get("value")
                return str(value) if value is not None else None
        return None

    def text(self) -> str:
        """Message plus exception values: the text typed extraction reads."""
        parts = [self.message] if self.message else []
        for entry in self.entries:
            if entry.get("type") == "exception":
                for exc in (entry.get("data") or {}).get("values") or []:
                    kind = exc.get("type") or ""
                    value = exc.get("value") or ""
                    parts.append(f"{kind}: {value}" if kind else value)
            elif entry.get("type") == "message":
                formatted = (entry.get("data") or {}).get("formatted")
                if formatted:
                    parts.append(str(formatted))
        return "\n".join(parts)

    def frames(self) -> list[JsonObject]:
        """Stack frames of every exception, innermost last (Sentry's order)."""
        out: list[JsonObject] = []
        for entry in self.entries:
            if entry.get("type") == "exception":
                for exc in (entry.get("data") or {}).get("values") or []:
                    out.extend(((exc.get("stacktrace") or {}).get("frames")) or [])
        return out


SentryIssue.model_rebuild()

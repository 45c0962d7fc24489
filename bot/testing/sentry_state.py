"""What :class:`~bot.testing.sentry.FakeSentry` keeps, as seen by its endpoints.

The endpoint modules (:mod:`bot.testing.sentry_routes`, :mod:`bot.testing.sentry_discover`)
read and change the fake's state through :class:`FakeState`, a Protocol that
``FakeSentry`` satisfies, so they never import the fake itself (no import cycle).
Issues and events are kept as Sentry's own JSON (``bot.json_types`` aliases): the fake
serves them as they are, and the client under test does the validating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.clock import Clock
from bot.json_types import JsonObject, JsonValue

Answer = tuple[int, JsonValue, dict[str, str]]
"""An endpoint's answer: status, JSON body (None for none), extra headers."""


@dataclass
class IssueState:
    """An issue's JSON plus what the fake needs to answer about it."""

    data: JsonObject
    environments: set[str] = field(default_factory=set)
    events: list[JsonObject] = field(default_factory=list)
    comments: list[tuple[str, datetime]] = field(default_factory=list)
    users: set[str] = field(default_factory=set)


class FakeState(Protocol):
    """The state the endpoints answer from (implemented by FakeSentry)."""

    clock: Clock
    org: str
    issues: dict[str, IssueState]
    #: repository name -> commits Sentry knows (``inCommit`` validation).
    repositories: dict[str, set[str]]
    #: 403 or 400: the organization events endpoint refuses (plan or token scope).
    events_refusal: int | None

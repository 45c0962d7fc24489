"""Triage vocabulary and configuration: severities, categories, indicators, results.

``TriageConfig`` is operator-owned YAML (embedded under ``triage:`` in the bot config),
so unknown keys are errors (``extra="forbid"``). Its defaults are the seed procedure's
tables (``shared/seeds/002_*``): the root-cause category table (priority and team per
category) and the escalation matrix (response target per severity).

``TriageResult`` is what :func:`bot.triage.triage` returns; ``model_dump(mode="json")``
is what goes into ``tracked_issue.triage`` and ``TriageResult.model_validate`` reads it
back.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.safety.linear_regex import RegexRefused, compile_linear

EVIDENCE_LIMIT = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class Severity(StrEnum):
    """Impact level (also used for the seed table's "Priority" column)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Category(StrEnum):
    """Root-cause categories of the seed's "Determine Root Cause Category" table."""

    CODE_BUG = "code_bug"
    DEPENDENCY = "dependency"
    INFRASTRUCTURE = "infrastructure"
    CONFIGURATION = "configuration"
    USER_INPUT = "user_input"
    EXTERNAL_API = "external_api"
    SECURITY = "security"


# Tie-break order when two categories score the same: the one whose mistake costs more
# if missed comes first (a security probe mislabelled as a user-input error is worse
# than the reverse).
CATEGORY_PRECEDENCE: tuple[Category, ...] = (
    Category.SECURITY,
    Category.INFRASTRUCTURE,
    Category.CONFIGURATION,
    Category.EXTERNAL_API,
    Category.USER_INPUT,
    Category.DEPENDENCY,
    Category.CODE_BUG,
)


def snippet(text: str, limit: int = EVIDENCE_LIMIT) -> str:
    """Untrusted text made safe to store as evidence: one line, no control chars, bounded.

    This does not escape for any output format; renderers escape at their edge.
    """
    flat = _CONTROL.sub(" ", text)
    flat = " ".join(flat.split())
    if len(flat) <= limit:
        return flat
    return flat[: max(0, limit - 1)].rstrip() + "…"


def _parse_duration(value: object) -> object:
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])
    return value


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryRoute(_Config):
    priority: Severity
    team: str


SEED_CATEGORY_ROUTES: dict[Category, CategoryRoute] = {
    Category.CODE_BUG: CategoryRoute(priority=Severity.HIGH, team="Dev Team"),
    Category.DEPENDENCY: CategoryRoute(priority=Severity.MEDIUM, team="Dev Team"),
    Category.INFRASTRUCTURE: CategoryRoute(priority=Severity.CRITICAL, team="DevOps"),
    Category.CONFIGURATION: CategoryRoute(priority=Severity.HIGH, team="DevOps"),
    Category.USER_INPUT: CategoryRoute(priority=Severity.LOW, team="Product"),
    Category.EXTERNAL_API: CategoryRoute(priority=Severity.HIGH, team="Dev Team"),
    Category.SECURITY: CategoryRoute(priority=Severity.CRITICAL, team="Security"),
}

ESCALATION_PATHS: dict[Severity, str] = {
    Severity.CRITICAL: "On-call → Team Lead → Engineering Manager",
    Severity.HIGH: "Assigned Developer → Team Lead",
    Severity.MEDIUM: "Assigned Developer",
    Severity.LOW: "Backlog → Sprint Planning",
}


class RoutingRule(_Config):
    """Send matching issues to ``team`` (first matching rule wins).

    Every given criterion must hold: ``project`` (slug), ``category``, ``culprit`` and
    ``title`` (regexes, searched), ``tags`` (exact values, issue tags then event tags).
    """

    name: str
    team: str
    project: str | None = None
    category: Category | None = None
    culprit: str | None = None
    title: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    priority: Severity | None = None

    @field_validator("culprit", "title")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_linear(value)
            except RegexRefused as exc:
                raise ValueError(f"invalid regex {value[:200]!r}: {exc}") from None
        return value


class ResponseTargets(_Config):
    """Escalation matrix: how soon each severity must get a response."""

    critical: timedelta = timedelta(minutes=15)
    high: timedelta = timedelta(hours=2)
    medium: timedelta = timedelta(days=1)
    low: timedelta = timedelta(weeks=1)

    @field_validator("critical", "high", "medium", "low", mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        return _parse_duration(value)

    def for_severity(self, severity: Severity) -> timedelta:
        return {
            Severity.CRITICAL: self.critical,
            Severity.HIGH: self.high,
            Severity.MEDIUM: self.medium,
            Severity.LOW: self.low,
        }[severity]


class Tiers(_Config):
    """Ascending cut-offs: reaching ``medium`` adds 1 point, ``high`` 2, ``critical`` 3."""

    medium: float
    high: float
    critical: float

    @model_validator(mode="after")
    def _ascending(self) -> Tiers:
        if not (0 <= self.medium <= self.high <= self.critical):
            raise ValueError("tiers must satisfy 0 <= medium <= high <= critical")
        return self

    def points(self, value: float) -> int:
        if value >= self.critical:
            return 3
        if value >= self.high:
            return 2
        if value >= self.medium:
            return 1
        return 0


class Thresholds(_Config):
    """Severity scoring knobs (see :mod:`bot.triage.severity` for the weights)."""

    users: Tiers = Tiers(medium=10, high=100, critical=1000)
    events_per_hour: Tiers = Tiers(medium=1, high=10, critical=100)
    # A score at or above these becomes that severity; below ``medium`` is low.
    score_medium: int = 2
    score_high: int = 4
    score_critical: int = 7
    new_window: timedelta = timedelta(hours=24)

    @field_validator("new_window", mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        return _parse_duration(value)


class TriageConfig(_Config):
    """Operator triage settings; every default comes from the seed procedure."""

    routing: list[RoutingRule] = Field(default_factory=list)
    # When set, replaces the seed table's per-category team for issues no rule matches.
    default_team: str | None = None
    category_routes: dict[Category, CategoryRoute] = Field(
        default_factory=lambda: dict(SEED_CATEGORY_ROUTES)
    )
    response_targets: ResponseTargets = ResponseTargets()
    thresholds: Thresholds = Thresholds()
    # Categories whose mere presence sets a minimum severity, whatever the head count.
    severity_floor: dict[Category, Severity] = Field(
        default_factory=lambda: {Category.SECURITY: Severity.CRITICAL}
    )
    # Transactions/culprits on a revenue path (seed step 1, question 5).
    business_critical: list[str] = Field(
        default_factory=lambda: [r"checkout|payment|billing|invoice|subscription"]
    )
    # Hosts that are ours: a 5xx from any other host counts as an external API failure.
    internal_hosts: list[str] = Field(default_factory=list)
    # Where the response clock starts: Sentry's firstSeen, or the moment of triage.
    clock_start: Literal["first_seen", "triaged"] = "first_seen"

    @field_validator("category_routes", mode="after")
    @classmethod
    def _merge_seed_routes(
        cls, value: dict[Category, CategoryRoute]
    ) -> dict[Category, CategoryRoute]:
        return {**SEED_CATEGORY_ROUTES, **value}

    @field_validator("business_critical")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compile_linear(pattern, ignore_case=True)
            except RegexRefused as exc:
                raise ValueError(f"invalid regex {pattern[:200]!r}: {exc}") from None
        return value


IndicatorKind = Literal["severity", "category", "routing"]


class Indicator(BaseModel):
    """One reason behind a decision: what was seen, how much it weighed, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndicatorKind
    name: str
    weight: int
    effect: str  # human phrase: "+2 severity", "infrastructure +3", "floor critical"
    evidence: str = ""

    @field_validator("evidence")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return snippet(value)


def indicator(kind: IndicatorKind, name: str, weight: int, effect: str, evidence: str) -> Indicator:
    """An :class:`Indicator`, shared between results when every field is equal.

    Most indicators repeat from issue to issue ("level=error", "category table: code_bug");
    validating each again cost a fifth of triage for a burst. Indicators are frozen, so
    sharing one is safe. Long evidence (issue text) is not kept in the cache.
    """
    if len(evidence) > EVIDENCE_LIMIT or len(effect) > EVIDENCE_LIMIT:
        return Indicator(kind=kind, name=name, weight=weight, effect=effect, evidence=evidence)
    return _shared_indicator(kind, name, weight, effect, evidence)


@functools.lru_cache(maxsize=4096)
def _shared_indicator(
    kind: IndicatorKind, name: str, weight: int, effect: str, evidence: str
) -> Indicator:
    return Indicator(kind=kind, name=name, weight=weight, effect=effect, evidence=evidence)


class TriageResult(BaseModel):
    """Severity, category, owner and deadline of one issue, with the indicators behind them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: Severity
    severity_score: int
    category: Category
    category_scores: dict[Category, int]
    priority: Severity
    team: str
    routing_rule: str | None = None
    escalation_path: str
    response_target: timedelta
    response_clock_start: datetime
    response_due_at: datetime
    overdue: bool
    events_per_hour: float
    is_new: bool
    is_regression: bool
    indicators: tuple[Indicator, ...]
    triaged_at: datetime

    def deciding(self, kind: IndicatorKind) -> list[Indicator]:
        """The indicators of one kind that moved the decision (non-zero weight)."""
        return [i for i in self.indicators if i.kind == kind and i.weight != 0]

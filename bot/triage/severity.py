"""Severity from impact: the seed's five "Assess Severity and Impact" questions as points.

===================  =========================================================
users affected       +0..+3 by ``thresholds.users`` tiers (10 / 100 / 1000)
event rate           +0..+3 by ``thresholds.events_per_hour`` (1 / 10 / 100 per h)
new or regression    +1 new (firstSeen within ``new_window`` or substatus new),
                     +1 regression, +1 escalating
environment          +1 production, -1 staging / development / test
level                +2 fatal, +1 error, 0 warning, -2 info / debug
business critical    +1 when the transaction or culprit is on a revenue path
===================  =========================================================

The score maps to low / medium / high / critical by ``thresholds.score_*``; a category
floor (security -> critical by default) can then raise it. Every non-zero term is an
:class:`~bot.triage.models.Indicator`, so the result explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import ensure_utc
from bot.safety.linear_regex import compile_linear
from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage.category import tag
from bot.triage.models import Category, Indicator, Severity, TriageConfig, indicator

_PRODUCTION = {"production", "prod", "live", "prd"}
_NON_PRODUCTION = {"staging", "stage", "development", "dev", "test", "testing", "local", "qa"}
_LEVEL_POINTS = {"fatal": 2, "error": 1, "warning": 0, "info": -2, "debug": -2}


@dataclass(frozen=True)
class RecentRate:
    """Events seen in a recent window (e.g. Sentry's 24 h stats), preferred over lifetime."""

    events: int
    window: timedelta


@dataclass(frozen=True)
class SeverityAssessment:
    severity: Severity
    score: int
    events_per_hour: float
    is_new: bool
    is_regression: bool
    indicators: list[Indicator]


def _sev(name: str, weight: int, evidence: str) -> Indicator:
    sign = "+" if weight >= 0 else ""
    return indicator("severity", name, weight, f"{sign}{weight}", evidence)


def event_rate(issue: SentryIssue, recent: RecentRate | None) -> tuple[float, str]:
    """Events per hour and how it was measured.

    Without recent data: ``count`` spread over firstSeen..lastSeen, at least one hour
    (a burst of 40 events in one minute is 40/h, not 2400/h).
    """
    if recent is not None and recent.window > timedelta(0):
        hours = recent.window.total_seconds() / 3600
        return recent.events / hours, f"{recent.events} events in the last {hours:g} h"
    if issue.first_seen is None or issue.last_seen is None:
        return 0.0, f"{issue.count} events, no firstSeen/lastSeen"
    span = ensure_utc(issue.last_seen) - ensure_utc(issue.first_seen)
    hours = max(span.total_seconds() / 3600, 1.0)
    return issue.count / hours, f"{issue.count} events over {hours:.1f} h"


def assess(
    issue: SentryIssue,
    event: SentryEvent | None,
    config: TriageConfig,
    now: datetime,
    category: Category,
    *,
    regression: bool | None = None,
    recent: RecentRate | None = None,
) -> SeverityAssessment:
    """Score the issue's impact and map it to a severity; deterministic for equal inputs."""
    th = config.thresholds
    found: list[Indicator] = []

    users = issue.user_count
    found.append(_sev("users_affected", th.users.points(users), f"userCount={users}"))

    rate, how = event_rate(issue, recent)
    found.append(_sev("event_rate", th.events_per_hour.points(rate), f"{rate:.2f}/h ({how})"))

    substatus = (issue.substatus or "").lower()
    first_seen = ensure_utc(issue.first_seen) if issue.first_seen else None
    is_new = substatus == "new" or (
        first_seen is not None and timedelta(0) <= now - first_seen <= th.new_window
    )
    if is_new:
        when = first_seen.isoformat() if first_seen else "?"
        found.append(_sev("new_issue", 1, f"substatus={substatus or '-'}, firstSeen={when}"))
    is_regression = regression if regression is not None else substatus == "regressed"
    if is_regression:
        source = "bot saw it return after resolve" if regression else "substatus=regressed"
        found.append(_sev("regression", 1, source))
    if substatus == "escalating":
        found.append(_sev("escalating", 1, "substatus=escalating"))

    env = (issue.environment or (event.environment if event else None) or "").lower()
    if env in _PRODUCTION:
        found.append(_sev("environment", 1, f"environment={env}"))
    elif env in _NON_PRODUCTION or env.startswith(("staging", "dev", "test")):
        found.append(_sev("environment", -1, f"environment={env}"))

    level = issue.level.lower()
    found.append(_sev("level", _LEVEL_POINTS.get(level, 0), f"level={level}"))

    place = " ".join(filter(None, [tag(issue, event, "transaction"), issue.culprit]))
    for pattern in config.business_critical:
        m = compile_linear(pattern, ignore_case=True).search(place) if place else None
        if m:
            found.append(_sev("business_critical_path", 1, place))
            break

    score = sum(i.weight for i in found)
    if score >= th.score_critical:
        severity = Severity.CRITICAL
    elif score >= th.score_high:
        severity = Severity.HIGH
    elif score >= th.score_medium:
        severity = Severity.MEDIUM
    else:
        severity = Severity.LOW

    floor = config.severity_floor.get(category)
    if floor is not None and floor.rank > severity.rank:
        found.append(
            Indicator(
                kind="severity",
                name="category_floor",
                weight=floor.rank - severity.rank,
                effect=f"floor {floor.value}",
                evidence=f"category={category.value}",
            )
        )
        severity = floor
    return SeverityAssessment(
        severity=severity,
        score=score,
        events_per_hour=round(rate, 3),
        is_new=is_new,
        is_regression=is_regression,
        indicators=found,
    )

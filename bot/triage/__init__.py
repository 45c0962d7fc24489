"""Triage: severity, root-cause category, owner and response deadline of a Sentry issue.

The seed procedure (``shared/seeds/002_*``, "Initial Triage") as a pure, deterministic
function: same issue, event, config and ``now`` give the same :class:`TriageResult`,
which lists the indicators that decided it.
"""

from __future__ import annotations

from datetime import datetime

from bot.clock import ensure_utc
from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage.category import classify
from bot.triage.models import (
    ESCALATION_PATHS,
    Category,
    Indicator,
    RoutingRule,
    Severity,
    TriageConfig,
    TriageResult,
)
from bot.triage.routing import response_window, route
from bot.triage.severity import RecentRate, assess

__all__ = [
    "Category",
    "Indicator",
    "RecentRate",
    "RoutingRule",
    "Severity",
    "TriageConfig",
    "TriageResult",
    "triage",
]


def triage(
    issue: SentryIssue,
    event: SentryEvent | None,
    config: TriageConfig,
    now: datetime,
    *,
    regression: bool | None = None,
    recent: RecentRate | None = None,
) -> TriageResult:
    """Triage one issue as the seed procedure would.

    ``event`` is the latest event (falls back to ``issue.latest_event``). ``regression``
    overrides Sentry's substatus when the bot knows better (an event after it resolved
    the issue). ``recent`` gives a recent event count to measure the rate on instead of
    the lifetime average.
    """
    now = ensure_utc(now)
    event = event if event is not None else issue.latest_event
    category, scores, category_indicators = classify(issue, event, config)
    impact = assess(issue, event, config, now, category, regression=regression, recent=recent)
    owner = route(issue, event, category, config)
    start, due, target = response_window(
        issue, impact.severity, config, now, is_regression=impact.is_regression
    )
    return TriageResult(
        severity=impact.severity,
        severity_score=impact.score,
        category=category,
        category_scores=scores,
        priority=owner.priority,
        team=owner.team,
        routing_rule=owner.rule,
        escalation_path=ESCALATION_PATHS[impact.severity],
        response_target=target,
        response_clock_start=start,
        response_due_at=due,
        overdue=due < now,
        events_per_hour=impact.events_per_hour,
        is_new=impact.is_new,
        is_regression=impact.is_regression,
        indicators=(*impact.indicators, *category_indicators, *owner.indicators),
        triaged_at=now,
    )

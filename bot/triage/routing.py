"""Owner, priority and response deadline of a triaged issue.

Priority and team come from the seed's category table (Infrastructure -> Critical,
DevOps; Code Bug -> High, Dev Team; ...). Operator routing rules override them, first
match wins; ``default_team`` replaces the table's team when no rule matches. The
deadline is the escalation matrix target for the severity, counted from when the
problem appeared (firstSeen; lastSeen for a regression) or from triage time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import ensure_utc
from bot.safety.linear_regex import compile_linear
from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage.category import tag
from bot.triage.models import Category, Indicator, RoutingRule, Severity, TriageConfig, indicator


@dataclass(frozen=True)
class Route:
    priority: Severity
    team: str
    rule: str | None
    indicators: list[Indicator]


def rule_matches(
    rule: RoutingRule, issue: SentryIssue, event: SentryEvent | None, category: Category
) -> bool:
    """Whether every criterion the rule sets holds for this issue."""
    if rule.project is not None and rule.project != issue.project.slug:
        return False
    if rule.category is not None and rule.category != category:
        return False
    # RE2, linear time; texts cut to TEXT_LIMIT (patterns were checked at config load).
    if rule.culprit is not None and not compile_linear(rule.culprit).search(issue.culprit or ""):
        return False
    if rule.title is not None and not compile_linear(rule.title).search(issue.title):
        return False
    return all(tag(issue, event, key) == value for key, value in rule.tags.items())


def route(
    issue: SentryIssue, event: SentryEvent | None, category: Category, config: TriageConfig
) -> Route:
    """Priority and team for the issue, and the indicator saying which table or rule decided."""
    seed = config.category_routes[category]
    for rule in config.routing:
        if rule_matches(rule, issue, event, category):
            priority = rule.priority or seed.priority
            return Route(
                priority=priority,
                team=rule.team,
                rule=rule.name,
                indicators=[
                    indicator(
                        "routing",
                        "routing_rule",
                        1,
                        f"team {rule.team}, priority {priority.value}",
                        f"rule {rule.name}",
                    )
                ],
            )
    team = config.default_team or seed.team
    source = "default_team" if config.default_team else "category table"
    return Route(
        priority=seed.priority,
        team=team,
        rule=None,
        indicators=[
            indicator(
                "routing",
                source.replace(" ", "_"),
                1,
                f"team {team}, priority {seed.priority.value}",
                f"{source}: {category.value}",
            )
        ],
    )


def response_window(
    issue: SentryIssue,
    severity: Severity,
    config: TriageConfig,
    now: datetime,
    *,
    is_regression: bool,
) -> tuple[datetime, datetime, timedelta]:
    """(clock start, due time, target) for the issue's severity.

    A firstSeen in the future (clock skew) or missing falls back to ``now``.
    """
    target = config.response_targets.for_severity(severity)
    start = now
    if config.clock_start == "first_seen":
        seen = issue.last_seen if is_regression else issue.first_seen
        if seen is not None and ensure_utc(seen) <= now:
            start = ensure_utc(seen)
    return start, start + target, target

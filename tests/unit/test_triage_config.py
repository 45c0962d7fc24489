"""TriageConfig loading and the knobs of triage(): routing rules, environment, regression,
recent rate, the response clock, and the treatment of untrusted evidence text."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from pydantic import ValidationError

from bot.triage import Category, Severity, TriageConfig, triage
from bot.triage.severity import RecentRate
from tests.unit.test_triage_seed_cases import CASES, NOW, make_event, make_issue

CONFIG_YAML = """
triage:
  default_team: Platform On-call
  routing:
    - name: frontend-to-web
      project: dashboard-frontend
      team: Web Team
    - name: payments
      category: external_api
      culprit: "checkout"
      team: Payments
      priority: critical
  response_targets:
    critical: 10m
    high: 1h
  thresholds:
    users: {medium: 5, high: 50, critical: 500}
  category_routes:
    user_input: {priority: medium, team: Support}
"""


def load() -> TriageConfig:
    return TriageConfig.model_validate(yaml.safe_load(CONFIG_YAML)["triage"])


def test_defaults_are_the_seed_escalation_matrix_and_category_table() -> None:
    cfg = TriageConfig()
    targets = cfg.response_targets
    assert (targets.critical, targets.high, targets.medium, targets.low) == (
        timedelta(minutes=15),
        timedelta(hours=2),
        timedelta(days=1),
        timedelta(weeks=1),
    )
    assert cfg.category_routes[Category.INFRASTRUCTURE].team == "DevOps"
    assert cfg.category_routes[Category.INFRASTRUCTURE].priority is Severity.CRITICAL
    assert cfg.category_routes[Category.USER_INPUT].team == "Product"


def test_yaml_mapping_loads_durations_and_merges_category_routes() -> None:
    cfg = load()
    assert cfg.response_targets.critical == timedelta(minutes=10)
    assert cfg.response_targets.high == timedelta(hours=1)
    assert cfg.response_targets.low == timedelta(weeks=1)  # untouched default
    assert cfg.category_routes[Category.USER_INPUT].team == "Support"
    assert cfg.category_routes[Category.SECURITY].team == "Security"  # seed row kept
    assert cfg.thresholds.users.high == 50


@pytest.mark.parametrize(
    "bad",
    [
        {"routing": [{"name": "x", "team": "t", "titel": "typo"}]},
        {"unknown_key": 1},
        {"routing": [{"name": "x", "team": "t", "title": "(unclosed"}]},
        {"thresholds": {"users": {"medium": 100, "high": 10, "critical": 1000}}},
        {"business_critical": ["[bad"]},
    ],
)
def test_invalid_config_fails_loudly(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TriageConfig.model_validate(bad)


def test_routing_rules_override_team_and_priority_first_match_wins() -> None:
    cfg = load()
    bee40 = CASES["BLUE-BANDED-BEE-40 turnstile"]
    r = triage(bee40.issue, bee40.event, cfg, NOW)
    assert (r.team, r.routing_rule, r.priority) == ("Web Team", "frontend-to-web", Severity.HIGH)

    stripe = CASES["stripe card error"]
    r = triage(stripe.issue, stripe.event, cfg, NOW)
    assert (r.team, r.routing_rule, r.priority) == ("Payments", "payments", Severity.CRITICAL)
    assert any(i.name == "routing_rule" and "payments" in i.evidence for i in r.indicators)

    # no rule matches: default_team replaces the table's team, priority stays the table's
    bee42 = CASES["BLUE-BANDED-BEE-42 stuck tasks"]
    r = triage(bee42.issue, bee42.event, cfg, NOW)
    assert (r.team, r.routing_rule, r.priority) == ("Platform On-call", None, Severity.CRITICAL)


def test_routing_rule_on_tag() -> None:
    cfg = TriageConfig.model_validate(
        {"routing": [{"name": "eu", "tags": {"region": "eu-west-1"}, "team": "EU SRE"}]}
    )
    eu = make_issue("X-1", "boom", tags={"region": "eu-west-1"})
    us = make_issue("X-2", "boom", tags={"region": "us-east-1"})
    assert triage(eu, None, cfg, NOW).team == "EU SRE"
    assert triage(us, None, cfg, NOW).team == "Dev Team"


def test_staging_weighs_less_than_production() -> None:
    prod = make_issue("X-3", "boom", count=40, first=timedelta(hours=6), substatus="new")
    staging = make_issue(
        "X-4", "boom", count=40, first=timedelta(hours=6), substatus="new",
        tags={"environment": "staging"},
    )  # fmt: skip
    r_prod, r_staging = (
        triage(prod, None, TriageConfig(), NOW),
        triage(staging, None, TriageConfig(), NOW),
    )
    assert r_prod.severity_score - r_staging.severity_score == 2
    assert (r_prod.severity, r_staging.severity) == (Severity.HIGH, Severity.MEDIUM)


def test_regression_flag_and_its_clock() -> None:
    issue = make_issue("X-5", "boom", count=40, first=timedelta(days=30))
    plain = triage(issue, None, TriageConfig(), NOW)
    regressed = triage(issue, None, TriageConfig(), NOW, regression=True)
    assert not plain.is_regression and regressed.is_regression
    assert regressed.severity_score == plain.severity_score + 1
    # a regression's response clock starts at its return (lastSeen), not a month ago
    assert regressed.response_clock_start == NOW - timedelta(minutes=5)
    assert plain.response_clock_start == NOW - timedelta(days=30)


def test_recent_rate_beats_lifetime_average() -> None:
    issue = make_issue("X-6", "boom", count=500, first=timedelta(days=60))  # ~0.35/h lifetime
    lifetime = triage(issue, None, TriageConfig(), NOW)
    burst = triage(
        issue, None, TriageConfig(), NOW, recent=RecentRate(events=300, window=timedelta(hours=1))
    )
    assert lifetime.events_per_hour < 1
    assert burst.events_per_hour == 300
    assert burst.severity_score - lifetime.severity_score == 3


def test_clock_start_triaged_counts_from_now() -> None:
    cfg = TriageConfig(clock_start="triaged")
    case = CASES["BLUE-BANDED-BEE-42 stuck tasks"]
    r = triage(case.issue, case.event, cfg, NOW)
    assert r.response_clock_start == NOW
    assert r.response_due_at == NOW + timedelta(days=1)
    assert not r.overdue


def test_no_signal_defaults_to_code_bug_and_says_so() -> None:
    r = triage(make_issue("X-7", "Something odd happened"), None, TriageConfig(), NOW)
    assert r.category is Category.CODE_BUG
    assert any(i.name == "no_specific_signal" for i in r.indicators)


def test_evidence_is_one_bounded_line() -> None:
    hostile = "ECONNREFUSED\n\x1b[31m" + "A" * 5000 + "\r\n<!channel> @here"
    issue = make_issue("X-8", "conn failed", value=hostile)
    r = triage(issue, make_event(message=hostile), TriageConfig(), NOW)
    ind = next(i for i in r.indicators if i.name == "network_error")
    assert len(ind.evidence) <= 160
    assert "\n" not in ind.evidence and "\x1b" not in ind.evidence


def test_internal_hosts_5xx_is_not_external() -> None:
    issue = make_issue("X-9", "HTTPError: 502 Bad Gateway for url: https://billing.acme.internal/x")
    assert triage(issue, None, TriageConfig(), NOW).category is Category.EXTERNAL_API
    cfg = TriageConfig(internal_hosts=["acme.internal"])
    assert triage(issue, None, cfg, NOW).category is Category.CODE_BUG

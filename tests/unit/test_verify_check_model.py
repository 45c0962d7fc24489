"""``verify.checks`` are validated when the playbook loads (file, line, field)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.playbooks.loader import parse_playbook
from tests.helpers_engine import playbook_data


def errors_for(check: dict[str, Any]) -> list[str]:
    data = playbook_data()
    data["verify"] = {"checks": [check]}
    _, errors, _ = parse_playbook(yaml.safe_dump(data), Path("pb.yaml"))
    return [str(e) for e in errors]


OK_QUERY = "SELECT count(*) FROM tasks WHERE job_id = %(job_id)s"


@pytest.mark.parametrize(
    ("check", "fragment"),
    [
        ({"name": "a", "query": OK_QUERY}, "exactly one expectation"),
        ({"name": "a", "query": OK_QUERY, "equals": 0, "at_most": 1}, "exactly one expectation"),
        ({"name": "a", "query": "DELETE FROM tasks", "equals": 0}, "SELECT or WITH"),
        ({"name": "a", "query": "SELECT 1; DROP TABLE tasks", "equals": 0}, "single statement"),
        ({"name": "a", "query": "SELECT %(nope)s", "equals": 0}, "neither in its params"),
        ({"name": "a", "query": "SELECT 1 % 2", "equals": 0}, "bare '%'"),
        ({"name": "a", "query": OK_QUERY, "equals": 0, "within_seconds": 5}, "only allowed"),
        ({"name": "Bad Name", "query": OK_QUERY, "equals": 0}, "check name"),
        ({"name": "a", "query": OK_QUERY, "equals": 0, "colour": 1}, "colour"),
    ],
)
def test_bad_checks_are_refused_at_load(check: dict[str, Any], fragment: str) -> None:
    errors = errors_for(check)
    assert errors and any(fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("check", "kind", "words"),
    [
        ({"equals": 0}, "equals", "equals 0"),
        ({"equals": None}, "equals", "equals None"),
        ({"at_most": 5}, "at_most", "at most 5.0"),
        ({"decreases": True, "every_seconds": 30}, "decreases", "decreases over 30s"),
        ({"reaches": 0, "within_seconds": 60}, "reaches", "reaches 0 within 60s (every 30s)"),
    ],
)
def test_each_expectation_loads(check: dict[str, Any], kind: str, words: str) -> None:
    data = playbook_data()
    data["verify"] = {"checks": [{"name": "c", "query": OK_QUERY, **check}]}
    pb, errors, _ = parse_playbook(yaml.safe_dump(data), Path("pb.yaml"))
    assert pb is not None, [str(e) for e in errors]
    (loaded,) = pb.verify.checks
    assert loaded.kind == kind
    assert loaded.describe() == words

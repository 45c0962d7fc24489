"""The queue packs in examples/packs/ load with the real loader as shipped: shadow mode,
target queue_db, no extracted parameter, a placeholder match that users must replace."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.playbooks.loader import parse_playbook
from bot.playbooks.matcher import Matcher
from bot.sentry.models import SentryIssue
from tests.helpers_engine import issue_json

PACKS = Path(__file__).resolve().parents[2] / "examples" / "packs"


@pytest.mark.parametrize("name", ["procrastinate.yaml", "pg-boss.yaml", "graphile-worker.yaml"])
def test_pack_loads_as_a_safe_starting_point(name: str) -> None:
    path = PACKS / name
    playbook, errors, _ = parse_playbook(path.read_text(), path)
    assert playbook is not None, [str(e) for e in errors]
    assert playbook.guards.mode == "shadow"
    assert playbook.action.type == "requeue_stuck_tasks"
    assert playbook.action.target == "queue_db"
    assert playbook.extract == {}
    assert playbook.match.title is not None and "REPLACE-ME" in playbook.match.title
    issue = SentryIssue.model_validate(issue_json(title="Found 3 stuck tasks across 1 jobs"))
    assert Matcher([playbook]).match(issue, None) is None


def test_pack_accepts_an_optional_queue_parameter() -> None:
    path = PACKS / "pg-boss.yaml"
    text = path.read_text() + (
        "extract:\n  queue:\n    from: 'tag:queue'\n    regex: '^(?P<queue>[a-z_]{1,50})$'\n"
        "    type: string\n    required: false\n"
    )
    playbook, errors, _ = parse_playbook(text, path)
    assert playbook is not None, [str(e) for e in errors]

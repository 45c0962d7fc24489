"""``sentry-bot demo`` as a newcomer runs it: from any directory, no environment, twice.

The demo starts its own embedded PostgreSQL (the sandbox target), so this test needs no
TEST_DATABASE_URL; it checks what the issue's "done when" asks for on the JSON output,
that the text output tells the same story, and that the printed follow-up commands work.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATABASE_INCIDENTS = {"BLUE-BANDED-BEE-42", "BLUE-BANDED-BEE-3Y", "API-1F", "WORKER-2K"}
FIELDS = {
    "short_id": str,
    "playbook": str,
    "action": str,
    "rows_changed": int,
    "verified": bool,
    "notified": list,
    "pr_comment": bool,
    "resolved": bool,
}


def _env() -> dict[str, str]:
    """The caller's environment without any bot, Sentry, GitHub or Slack setting."""
    prefixes = ("SENTRY_", "BOT_", "GITHUB_", "SLACK_", "TEST_DATABASE")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "demo", *args],
        cwd=cwd,
        env={**_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(1200)
def test_demo_runs_the_whole_loop_twice_from_anywhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)

    first = _demo(elsewhere, "--json")
    assert first.returncode == 0, first.stderr
    data: dict[str, Any] = json.loads(first.stdout)
    state = elsewhere / ".state" / "demo.db"
    assert data["state"] == str(state) and state.exists()

    incidents = {i["short_id"]: i for i in data["incidents"]}
    assert len(incidents) == 9
    for item in incidents.values():
        for name, kind in FIELDS.items():
            assert isinstance(item[name], kind), (item["short_id"], name, item[name])
        assert item["resolved"], item  # every incident resolved after the simulated 48 h
    for short_id in DATABASE_INCIDENTS:
        item = incidents[short_id]
        assert item["rows_changed"] > 0 and item["verified"], item
        assert "remediated" in item["notified"], item
    # The two linked fixes: PR comment written, resolved in the merge commit.
    for short_id in ("BLUE-BANDED-BEE-42", "API-1F"):
        assert incidents[short_id]["pr_comment"] is True
        assert incidents[short_id]["resolved_in_commit"]
    assert incidents["WORKER-2K"]["resolved_in_commit"] is None
    regression = data["regression"]
    assert (regression["short_id"], regression["regressed"]) == ("BLUE-BANDED-BEE-42", True)
    assert regression["awaiting_approval_run"] and regression["would_change"] == 1
    assert regression["stuck_task_after"] == "running"  # escalated, not silently re-run
    assert "regressed" in regression["notified"]
    assert any("mode shadow → auto" in c for c in data["sandbox"]["playbook_changes"])

    # The printed follow-up commands work as printed, from yet another directory.
    assert len(data["commands"]) == 3
    for command in data["commands"]:
        argv = shlex.split(command)
        env_assignments = dict(a.split("=", 1) for a in argv if "=" in a.split("/")[0])
        rest = [a for a in argv if "=" not in a.split("/")[0]]
        sub = rest[rest.index("status") if "status" in rest else rest.index("report") :]
        out = subprocess.run(
            [sys.executable, "-m", "bot", *sub],
            cwd=tmp_path,
            env={**_env(), "PYTHONPATH": str(ROOT), **env_assignments},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, (command, out.stderr)
        assert "BLUE-BANDED-BEE-42" in out.stdout

    # A second run starts over on the same state file and tells the same story, as text.
    second = _demo(elsewhere)
    assert second.returncode == 0, second.stderr
    text = second.stdout
    assert "FOR THIS SANDBOX ONLY" in text and "mode shadow → auto" in text
    assert "pid=" in text and "backend terminated; lock free" in text  # seed 001, for real
    assert "fail_reason dump → auth" in text
    assert "status running → pending, requeue_count 0 → 1" in text
    assert "resolved in commit 9c1d5e7a2b4f" in text
    assert "49 simulated hours later" in text
    assert text.count("sentry-bot status") == 2 and "report BLUE-BANDED-BEE-42" in text


def test_demo_refuses_to_overwrite_a_state_file_that_is_not_its_own(tmp_path: Path) -> None:
    precious = tmp_path / "bot.db"
    precious.write_bytes(b"not a demo store")
    out = _demo(tmp_path, "--state", str(precious))
    assert out.returncode == 2
    assert "is not a demo state file" in out.stderr and len(out.stderr.splitlines()) == 1
    assert precious.read_bytes() == b"not a demo store"

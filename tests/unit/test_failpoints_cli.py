"""Failpoints: listed by the CLI, armed only by a known BOT_FAILPOINT, dying with their code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot import failpoints
from bot.failpoints import FAILPOINTS, UnknownFailpoint, exit_code
from bot.interfaces.cli import app

ROOT = Path(__file__).parents[2]


def test_debug_failpoints_prints_every_name_one_per_line() -> None:
    result = CliRunner().invoke(app, ["debug", "failpoints"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == list(FAILPOINTS)
    assert len(FAILPOINTS) == 14


def test_every_failpoint_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in FAILPOINTS)


def test_exit_codes_are_distinct_and_outside_the_cli_codes() -> None:
    codes = [exit_code(name) for name in FAILPOINTS]
    assert len(set(codes)) == len(codes) and min(codes) > 2


def test_an_unknown_failpoint_is_a_configuration_error(tmp_path: Path) -> None:
    env = {"BOT_FAILPOINT": "after-tarck", "BOT_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
    result = CliRunner().invoke(app, ["cycle"], env=env)
    assert result.exit_code == 2
    assert "BOT_FAILPOINT" in result.output and "unknown failpoint" in result.output


def test_hit_with_a_typo_raises_and_an_unarmed_hit_does_nothing() -> None:
    with pytest.raises(UnknownFailpoint):
        failpoints.hit("no-such-point")
    failpoints.arm(None)
    failpoints.hit("after-track")  # not armed: returns


def test_an_armed_failpoint_kills_the_process_with_its_code() -> None:
    code = (
        "import sys; from bot import failpoints as f; f.arm('before-send'); "
        "f.hit('after-send'); print('still alive', flush=True); f.hit('before-send'); "
        "print('not reached')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == exit_code("before-send")
    assert proc.stdout == "still alive\n"
    assert "failpoint before-send hit" in proc.stderr

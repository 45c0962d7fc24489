"""The ``sentry-bot`` CLI: exit codes, config errors, status, demo, pause, approve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli import app
from bot.engine.guards import is_paused
from bot.store.db import Store

ROOT = Path(__file__).parents[2]
SEED = ROOT / "bot" / "demo" / "seed_incidents.json"
TOKEN = "sntrys_SECRET_cli_token_42"
runner = CliRunner()


def seed_short_ids() -> list[str]:
    data = json.loads(SEED.read_text())
    return [issue["shortId"] for issue in data["issues"]]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


@pytest.fixture
def replay_env(tmp_path: Path) -> dict[str, str]:
    """A replay-file configuration on a fresh SQLite store with no playbooks."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    return {
        "BOT_REPLAY_FILE": str(SEED),
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BOT_PLAYBOOKS_DIR": str(playbooks),
    }


def run_bot(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real ``python -m bot`` in a subprocess (real exit codes, real stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SENTRY_BASE_URL", "sentry.example.com"),
        ("BOT_QUIET_HOURS", "abc"),
        ("BOT_QUIET_HOURS", "0"),
        ("GITHUB_REPOS", "bad"),
        ("SLACK_WEBHOOK_URL", "not-a-url"),
        ("BOT_DATABASE_URL", "mysql://x"),
        ("BOT_POLL_INTERVAL_SECONDS", "5"),
        ("BOT_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_setting_exits_2_with_one_config_error_line(name: str, value: str) -> None:
    result = invoke("status", env={name: value})
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"config error: {name}: ")
    assert result.stdout == ""


def test_several_bad_settings_give_one_line_each_and_no_traceback(tmp_path: Path) -> None:
    proc = run_bot(
        "status",
        env={
            "BOT_QUIET_HOURS": "abc",
            "GITHUB_REPOS": "bad",
            "BOT_DATABASE_URL": "mysql://x",
            "SLACK_WEBHOOK_URL": "hooks.example/SECRETpart",
        },
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert sorted(line.split(":")[1].strip() for line in lines) == [
        "BOT_DATABASE_URL",
        "BOT_QUIET_HOURS",
        "GITHUB_REPOS",
        "SLACK_WEBHOOK_URL",
    ]
    assert all(line.startswith("config error: ") for line in lines)
    assert "SECRETpart" not in proc.stderr + proc.stdout


def test_cycle_without_sentry_credentials_names_both_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    proc = run_bot(
        "cycle",
        env={
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
            "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
        },
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("config error: ")]
    assert [line.split(":")[1].strip() for line in errors] == ["SENTRY_AUTH_TOKEN", "SENTRY_ORG"]


def test_cycle_with_token_but_no_org_never_prints_the_token(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    result = invoke(
        "cycle",
        env={
            "SENTRY_AUTH_TOKEN": TOKEN,
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
            "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
        },
    )
    assert result.exit_code == 2
    assert "config error: SENTRY_ORG: missing" in result.stderr
    assert "SENTRY_AUTH_TOKEN" not in result.stderr
    assert TOKEN not in result.output


def test_bad_yaml_config_file_is_exit_2_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("sentry_org: acme\nsentry_query: [oops\n")
    result = invoke("--config", str(config), "status")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"config error: --config: {config} line ")


# -- entry points -----------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("cycle", "status", "demo", "approve", "pause", "resume", "db", "playbooks"):
        assert command in result.stdout


def test_python_dash_m_bot_help_works(tmp_path: Path) -> None:
    proc = run_bot("--help", env={}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cycle" in proc.stdout and "status" in proc.stdout


def test_db_upgrade_reports_the_head_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    result = invoke("db", "upgrade", env={"BOT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    store = Store(url)
    try:
        revision = store.current_revision()
    finally:
        store.dispose()
    assert revision is not None
    assert result.stdout.strip().endswith(f"is at revision {revision}")


def test_db_upgrade_hides_the_database_password() -> None:
    # A PostgreSQL URL that cannot connect: the error must not carry the password.
    result = invoke(
        "db",
        "upgrade",
        env={"BOT_DATABASE_URL": "postgresql://bot:SECRETdbpw@127.0.0.1:1/bot"},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot upgrade the state store at ")
    assert "bot:***@127.0.0.1:1/bot" in result.stderr
    assert "SECRETdbpw" not in result.output


# -- demo, status -----------------------------------------------------------------------


def test_demo_prints_a_line_per_seed_incident(tmp_path: Path) -> None:
    result = invoke("demo", "--state", str(tmp_path / "demo.db"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for short_id in seed_short_ids():
        assert any(line.split()[:1] == [short_id] for line in lines), short_id
    assert "polled 9 issues: 9 new" in result.stdout


def test_status_json_lists_every_issue_after_a_replay_cycle(replay_env: dict[str, str]) -> None:
    cycle = invoke("cycle", "--json", env=replay_env)
    assert cycle.exit_code == 0, cycle.output
    summary = json.loads(cycle.stdout)
    assert summary["new"] == len(seed_short_ids())
    result = invoke("status", "--json", env=replay_env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(i["short_id"] for i in data["issues"]) == sorted(seed_short_ids())
    assert sum(data["states"].values()) == len(seed_short_ids())


def test_status_table_and_a_repeat_cycle(replay_env: dict[str, str]) -> None:
    assert invoke("cycle", env=replay_env).exit_code == 0
    again = invoke("cycle", "--json", env=replay_env)
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert summary["new"] == 0 and summary["changed"] == 0
    table = invoke("status", env=replay_env)
    assert table.exit_code == 0
    first_column = [line.split()[0] for line in table.stdout.splitlines() if line.strip()]
    for short_id in seed_short_ids():
        assert short_id in first_column


def test_status_of_one_issue_shows_its_timeline(replay_env: dict[str, str]) -> None:
    assert invoke("cycle", env=replay_env).exit_code == 0
    short_id = seed_short_ids()[1]
    result = invoke("status", short_id.lower(), env=replay_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{short_id} (")
    assert "timeline:" in result.stdout
    assert "→ new" in result.stdout and "first polled" in result.stdout
    as_json = json.loads(invoke("status", short_id, "--json", env=replay_env).stdout)
    assert [t["to"] for t in as_json["timeline"]][:2] == ["new", "watching"]


def test_status_of_an_unknown_issue_exits_1(replay_env: dict[str, str]) -> None:
    result = invoke("status", "NOPE-1", env=replay_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no tracked issue 'NOPE-1'"


def test_pause_and_resume_round_trip(replay_env: dict[str, str]) -> None:
    paused = invoke("pause", "--reason", "incident review", env=replay_env)
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == "paused: incident review"
    store = Store(replay_env["BOT_DATABASE_URL"])
    try:
        with store.session() as session:
            assert is_paused(session) == "incident review"
        resumed = invoke("resume", env=replay_env)
        assert resumed.exit_code == 0
        assert resumed.stdout.strip() == "resumed"
        with store.session() as session:
            assert is_paused(session) is None
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        ("abcdef12", "error: no run 'abcdef12'"),
        ("abc", "error: give at least 6 characters of the run id"),
    ],
)
def test_approve_of_an_unknown_run_exits_1(
    replay_env: dict[str, str], run_id: str, message: str
) -> None:
    result = invoke("approve", run_id, "--by", "alice", env=replay_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output

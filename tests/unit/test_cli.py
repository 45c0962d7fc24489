"""The ``sentry-bot`` CLI: exit codes, config errors, status, demo, pause, approve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.interfaces.cli import app
from bot.pipeline.guards import is_paused
from bot.store.db import Store
from bot.store.models import RemediationRun, TrackedIssue

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


# -- operator output: paging, pause, summary first, flags ------------------------------


def _fill(url: str, issues: int, runs: int) -> None:
    """A store holding ``issues`` tracked issues and ``runs`` shadow runs."""
    base = datetime(2026, 3, 1, tzinfo=UTC)
    store = Store(url)
    store.upgrade()
    try:
        with store.session() as session:
            for n in range(issues):
                session.add(
                    TrackedIssue(
                        id=str(10_000 + n),
                        short_id=f"BULK-{n}",
                        title=f"issue {n}",
                        last_seen=base + timedelta(minutes=n % 7),  # ties: ordered by id too
                        created_at=base,
                        updated_at=base,
                    )
                )
            for n in range(runs):
                session.add(
                    RemediationRun(
                        id=f"run-{n:05d}",
                        idempotency_key=f"k{n}",
                        playbook_id="pb",
                        issue_id="10000",
                        action="requeue_stuck_tasks",
                        mode="shadow",
                        status="shadow",
                        preview={"summary": "would requeue 2", "rows": [{"id": 1}, {"id": 2}]},
                        created_at=base + timedelta(seconds=n),
                    )
                )
    finally:
        store.dispose()


def test_status_json_is_complete_or_paged_with_a_total(tmp_path: Path) -> None:
    env = {"BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'big.db'}"}
    _fill(env["BOT_DATABASE_URL"], issues=500, runs=278)
    full = json.loads(invoke("status", "--json", env=env).stdout)
    assert (len(full["issues"]), full["total"], full["next_cursor"]) == (500, 500, None)
    assert (len(full["runs"]), full["runs_total"]) == (278, 278)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["status", "--json", "--limit", "200"] + (["--cursor", cursor] if cursor else [])
        page = json.loads(invoke(*args, env=env).stdout)
        assert page["total"] == 500
        seen += [i["id"] for i in page["issues"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 500
    assert seen == [i["id"] for i in full["issues"]]  # the pages are the complete list, in order

    table = invoke("status", env=env).stdout
    assert "(issues 1 to 50 of 500, newest first; next page: sentry-bot status --limit 50" in table
    assert "recent runs (20 newest of 278):" in table
    assert "would change 2" in table and " 0\n" not in table.split("recent runs")[1]
    bad = invoke("status", "--cursor", "nope", env=env)
    assert bad.exit_code == 2 and "--cursor 'nope'" in bad.stderr


def test_pause_shows_in_status_text_and_json(replay_env: dict[str, str]) -> None:
    assert invoke("pause", "--reason", "db migration", env=replay_env).exit_code == 0
    data = json.loads(invoke("status", "--json", env=replay_env).stdout)
    assert data["paused"]["reason"] == "db migration" and data["paused"]["since"]
    text = invoke("status", env=replay_env).stdout
    assert text.startswith("PAUSED since ") and "db migration" in text.splitlines()[0]
    assert invoke("resume", env=replay_env).exit_code == 0
    assert json.loads(invoke("status", "--json", env=replay_env).stdout)["paused"] is None
    assert "PAUSED" not in invoke("status", env=replay_env).stdout


def test_cycle_prints_the_summary_first_and_no_endless_line(tmp_path: Path) -> None:
    env = {
        "BOT_REPLAY_FILE": str(SEED),
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
    }
    result = invoke("cycle", env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "polled 9 issues: 9 new, 0 changed, 0 unchanged"
    assert lines[1].startswith("plans: 9 (") and "shadow preview" in lines[1]
    assert lines[2] == "by playbook:" and "     1  bee42-requeue-stuck-tasks" in lines[3:12]
    assert max(len(line) for line in lines) < 300
    assert "would change" in result.stdout and ", 0 rows changed" not in result.stdout


def test_cycle_lists_at_most_ten_ids_per_line() -> None:
    from bot.pipeline.cycle_report import CycleReport

    report = CycleReport(unmatched=[f"NOISE-{n}" for n in range(400)])
    text = report.render()
    assert text.splitlines()[1] == "no playbook (triaged, notified, watched): 400"
    assert "NOISE-9 … and 390 more" in text and "NOISE-10," not in text


def test_a_missing_playbooks_directory_is_exit_2_in_one_line(tmp_path: Path) -> None:
    env = {
        "BOT_REPLAY_FILE": str(SEED),
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BOT_PLAYBOOKS_DIR": str(tmp_path / "no-such-dir"),
    }
    result = run_bot("cycle", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"config error: BOT_PLAYBOOKS_DIR: {tmp_path / 'no-such-dir'} is not a directory; "
        "expected the folder of playbook YAML files (the project ships ./playbooks)"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["cycle"], ["demo"], ["playbooks", "validate"]])
def test_boolean_flags_show_as_flags_in_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "--help " in result.stdout or "--help\n" in result.stdout

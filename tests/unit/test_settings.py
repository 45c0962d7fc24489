"""Settings: one clear line per bad value, YAML file under the environment, hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings

TOKEN = "sntrys_SECRET_token_0123456789"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/SECRETwebhookPART"


def problems(environ: dict[str, str], config: Path | None = None) -> list[str]:
    """The error lines load_settings reports for ``environ`` (fails if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ=environ)
    return str(info.value).splitlines()


BAD_VALUES = [
    ("SENTRY_BASE_URL", "sentry.example.com", "http(s) URL"),
    ("SENTRY_BASE_URL", "ftp://sentry.example.com", "http(s) URL"),
    ("BOT_QUIET_HOURS", "abc", "number of hours between 1 and 720"),
    ("BOT_QUIET_HOURS", "0", "number of hours between 1 and 720"),
    ("BOT_QUIET_HOURS", "721", "number of hours between 1 and 720"),
    ("GITHUB_REPOS", "bad", "owner/name"),
    ("GITHUB_REPOS", "acme/api, nope", "owner/name"),
    ("SLACK_WEBHOOK_URL", "not-a-url", "webhook URL"),
    ("BOT_DATABASE_URL", "mysql://x", "sqlite:///"),
    ("BOT_POLL_INTERVAL_SECONDS", "5", ">= 10"),
    ("BOT_POLL_INTERVAL_SECONDS", "ten", ">= 10"),
    ("BOT_LOG_LEVEL", "LOUD", "DEBUG"),
    ("SENTRY_ORG", "acme corp", "organization slug"),
    ("GITHUB_API_URL", "github.example.com", "http(s) URL"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_each_bad_value_is_one_line_naming_the_variable_and_what_is_expected(
    name: str, value: str, expected: str
) -> None:
    lines = problems({name: value})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{name}: ")
    assert expected in lines[0]


def test_good_values_are_accepted_and_parsed() -> None:
    settings = load_settings(
        environ={
            "SENTRY_BASE_URL": "https://sentry.example.com/",
            "SENTRY_ORG": "acme",
            "SENTRY_PROJECTS": "api, worker ,",
            "GITHUB_REPOS": "acme/api,acme/worker",
            "BOT_QUIET_HOURS": "1.5",
            "BOT_POLL_INTERVAL_SECONDS": "10",
            "BOT_DATABASE_URL": "postgresql://bot@db/bot",
            "BOT_LOG_LEVEL": "debug",
        }
    )
    assert settings.sentry_base_url == "https://sentry.example.com"
    assert settings.sentry_projects == ["api", "worker"]
    assert settings.github_repos == ["acme/api", "acme/worker"]
    assert settings.quiet_hours == 1.5
    assert settings.poll_interval_seconds == 10
    assert settings.database_url == "postgresql://bot@db/bot"
    assert settings.log_level == "DEBUG"


def test_several_bad_values_give_one_line_each() -> None:
    env = {name: value for name, value, _ in BAD_VALUES}  # last value per name wins
    lines = problems(env)
    named = sorted(line.split(":", 1)[0] for line in lines)
    assert named == sorted(env)


def test_yaml_file_supplies_values_in_any_case(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text(
        "sentry_org: acme\n"
        "SENTRY_QUERY: 'is:unresolved level:error'\n"
        "github_repos: [acme/api, acme/web]\n"
        "bot_quiet_hours: 24\n"
        "targets:\n  jobs_db: postgresql://jobs@db/jobs\n"
        "triage:\n  teams: {}\n"
    )
    settings = load_settings(config, environ={})
    assert settings.sentry_org == "acme"
    assert settings.sentry_query == "is:unresolved level:error"
    assert settings.github_repos == ["acme/api", "acme/web"]
    assert settings.quiet_hours == 24
    assert settings.target_url("jobs_db") == "postgresql://jobs@db/jobs"
    assert settings.triage == {"teams": {}}


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("sentry_org: from-file\nbot_quiet_hours: 24\n")
    settings = load_settings(config, environ={"SENTRY_ORG": "from-env"})
    assert settings.sentry_org == "from-env"
    assert settings.quiet_hours == 24


def test_environment_wins_over_the_file_through_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI path (environ=None) goes through pydantic-settings' own env source.
    config = tmp_path / "bot.yaml"
    config.write_text("sentry_org: from-file\nbot_quiet_hours: 24\n")
    monkeypatch.setenv("SENTRY_ORG", "from-env")
    settings = load_settings(config)
    assert settings.sentry_org == "from-env"
    assert settings.quiet_hours == 24


def test_a_bad_value_in_the_file_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("bot_quiet_hours: 0\n")
    lines = problems({}, config)
    assert len(lines) == 1
    assert lines[0].startswith("BOT_QUIET_HOURS: ")


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("sentry_org: acme\nsentry_query: [unclosed\nother: 1\n")
    lines = problems({}, config)
    assert len(lines) == 1
    assert lines[0].startswith(f"--config: {config} line ")
    assert "not valid YAML" in lines[0]


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bot.yaml"
    config.write_text("- a\n- b\n")
    (line,) = problems({}, config)
    assert "expected a mapping" in line


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    (line,) = problems({}, tmp_path / "nope.yaml")
    assert line == f"--config: file not found: {tmp_path / 'nope.yaml'}"


def test_target_urls_come_from_bot_target_name_url() -> None:
    settings = load_settings(
        environ={
            "BOT_TARGET_JOBS_DB_URL": "postgresql://jobs:pw@db/jobs",
            "BOT_TARGET_BILLING_URL": "postgresql://billing@db/billing",
        }
    )
    assert settings.target_url("jobs_db") == "postgresql://jobs:pw@db/jobs"
    assert settings.target_url("JOBS_DB") == "postgresql://jobs:pw@db/jobs"
    assert settings.target_url("billing") == "postgresql://billing@db/billing"
    assert settings.target_url("other") is None
    assert "pw@" not in repr(settings)


def test_sentry_problems_names_both_missing_settings() -> None:
    settings = load_settings(environ={})
    assert [p.split(":")[0] for p in settings.sentry_problems()] == [
        "SENTRY_AUTH_TOKEN",
        "SENTRY_ORG",
    ]
    ready = load_settings(environ={"SENTRY_AUTH_TOKEN": TOKEN, "SENTRY_ORG": "acme"})
    assert ready.sentry_problems() == []


def test_secrets_never_appear_in_repr_or_str() -> None:
    settings = load_settings(
        environ={
            "SENTRY_AUTH_TOKEN": TOKEN,
            "SLACK_WEBHOOK_URL": WEBHOOK,
            "GITHUB_TOKEN": "ghp_SECRETgithub",
            "BOT_TARGET_JOBS_DB_URL": "postgresql://jobs:SECRETpw@db/jobs",
            "BOT_DATABASE_URL": "postgresql://bot:SECRETdbpw@db/bot",
        }
    )
    for text in (repr(settings), str(settings)):
        for secret in (TOKEN, "SECRETwebhookPART", "ghp_SECRETgithub", "SECRETpw", "SECRETdbpw"):
            assert secret not in text
    for secret in (TOKEN, "SECRETwebhookPART", "ghp_SECRETgithub", "SECRETpw"):
        assert secret not in str(settings.model_dump())
    assert settings.sentry_auth_token is not None
    assert settings.sentry_auth_token.get_secret_value() == TOKEN


def test_secrets_never_appear_in_error_lines() -> None:
    bad_webhook = "SECRETwebhookPART-not-a-url"
    lines = problems(
        {
            "SENTRY_AUTH_TOKEN": TOKEN,
            "SLACK_WEBHOOK_URL": bad_webhook,
            "BOT_QUIET_HOURS": "abc",
        }
    )
    assert len(lines) == 2
    text = "\n".join(lines)
    assert TOKEN not in text
    assert "SECRETwebhookPART" not in text

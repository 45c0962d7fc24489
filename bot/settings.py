"""The one settings object, read only by the CLI (environment + optional YAML file).

Environment names are the ones in DESIGN.md ("Interfaces"). A YAML file given with
``--config`` may use the same names in any case (``sentry_org: acme``); the
environment wins over the file. Targets are read from ``BOT_TARGET_<NAME>_URL``
(a playbook's ``target: jobs_db`` takes ``BOT_TARGET_JOBS_DB_URL``).

Secrets (``SENTRY_AUTH_TOKEN``, ``GITHUB_TOKEN``, ``SLACK_WEBHOOK_URL``, ``BOT_SENTRY_DSN``,
``SLACK_SIGNING_SECRET``, ``BOT_CONSOLE_TOKEN`` and target DSNs) are ``SecretStr``: they never
print, log or appear in exceptions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bot.errors import ConfigError
from bot.failpoints import FAILPOINTS
from bot.json_types import JsonObject
from bot.safety.safe_yaml import BoundedYamlError, check_size, load_bounded

DEFAULT_DB_URL = "sqlite:///.state/bot.db"
_TARGET_ENV = re.compile(r"^BOT_TARGET_([A-Z][A-Z0-9_]*)_URL$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

CsvList = Annotated[list[str], NoDecode]

# What each setting expects, for error lines a human can act on.
EXPECTED: dict[str, str] = {
    "SENTRY_BASE_URL": "an http(s) URL such as https://sentry.io",
    "SENTRY_AUTH_TOKEN": "a Sentry auth token with event:read, event:write scopes",
    "SENTRY_ORG": "the organization slug, e.g. acme",
    "SENTRY_PROJECTS": "comma-separated project slugs or ids",
    "SENTRY_ENVIRONMENTS": "comma-separated environment names",
    "SENTRY_QUERY": "a Sentry search query, e.g. is:unresolved",
    "BOT_DATABASE_URL": "sqlite:///path.db or postgresql://user@host/db",
    "BOT_PLAYBOOKS_DIR": "a directory of playbook YAML files",
    "GITHUB_API_URL": "an http(s) URL (GitHub Enterprise: https://host/api/v3)",
    "GITHUB_REPOS": "comma-separated owner/name pairs",
    "SLACK_WEBHOOK_URL": "an https incoming-webhook URL",
    "BOT_QUIET_HOURS": "a number of hours between 1 and 720",
    "BOT_POLL_INTERVAL_SECONDS": "an integer number of seconds >= 10",
    "BOT_LOG_LEVEL": "one of DEBUG, INFO, WARNING, ERROR (any case)",
    "SENTRY_CLIENT_SECRET": "the client secret of the Sentry internal integration",
    "BOT_APPROVERS": "comma-separated Slack user ids / console user names",
    "BOT_CONSOLE_TOKEN": "a random secret of at least 16 characters",
    "BOT_FAILPOINT": "a name from `sentry-bot debug failpoints` (crash tests only)",
}


def _http_url(value: str, name: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"must be an http(s) URL, got {value[:40]!r}")
    return value.rstrip("/")


class Settings(BaseSettings):
    """Everything the bot can be told. Field aliases are the environment names."""

    model_config = SettingsConfigDict(
        extra="ignore", case_sensitive=False, populate_by_name=True, validate_default=True
    )

    sentry_base_url: str = Field("https://sentry.io", validation_alias="SENTRY_BASE_URL")
    sentry_auth_token: SecretStr | None = Field(None, validation_alias="SENTRY_AUTH_TOKEN")
    sentry_org: str | None = Field(None, validation_alias="SENTRY_ORG")
    sentry_projects: CsvList = Field(default_factory=list, validation_alias="SENTRY_PROJECTS")
    sentry_environments: CsvList = Field(
        default_factory=list, validation_alias="SENTRY_ENVIRONMENTS"
    )
    sentry_query: str = Field("is:unresolved", validation_alias="SENTRY_QUERY")
    # May carry a password: kept out of repr (status shows it through redact_url).
    database_url: str = Field(DEFAULT_DB_URL, validation_alias="BOT_DATABASE_URL", repr=False)
    playbooks_dir: Path = Field(Path("playbooks"), validation_alias="BOT_PLAYBOOKS_DIR")
    replay_file: Path | None = Field(None, validation_alias="BOT_REPLAY_FILE")
    github_token: SecretStr | None = Field(None, validation_alias="GITHUB_TOKEN")
    github_api_url: str = Field("https://api.github.com", validation_alias="GITHUB_API_URL")
    github_repos: CsvList = Field(default_factory=list, validation_alias="GITHUB_REPOS")
    slack_webhook_url: SecretStr | None = Field(None, validation_alias="SLACK_WEBHOOK_URL")
    bot_sentry_dsn: SecretStr | None = Field(None, validation_alias="BOT_SENTRY_DSN")
    # The Sentry integration's client secret: the key of ``Sentry-Hook-Signature``.
    sentry_client_secret: SecretStr | None = Field(None, validation_alias="SENTRY_CLIENT_SECRET")
    # How far ``Sentry-Hook-Timestamp`` may be from our clock before a delivery is stale.
    webhook_max_skew_seconds: int = Field(
        300, ge=30, le=86_400, validation_alias="BOT_WEBHOOK_MAX_SKEW_SECONDS"
    )
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    # Slack user ids (and console user names) allowed to approve or deny; empty = nobody.
    approvers: CsvList = Field(default_factory=list, validation_alias="BOT_APPROVERS")
    console_token: SecretStr | None = Field(None, validation_alias="BOT_CONSOLE_TOKEN")
    quiet_hours: float = Field(48, ge=1, le=720, validation_alias="BOT_QUIET_HOURS")
    poll_overlap_seconds: int = Field(
        600, ge=0, le=86_400, validation_alias="BOT_POLL_OVERLAP_SECONDS"
    )
    poll_interval_seconds: int = Field(60, ge=10, validation_alias="BOT_POLL_INTERVAL_SECONDS")
    # Bounds of one poll: no Link header or trickling response may hold a cycle forever.
    poll_max_pages: int = Field(200, ge=1, le=100_000, validation_alias="BOT_POLL_MAX_PAGES")
    poll_deadline_seconds: float = Field(
        300, gt=0, le=3_600, validation_alias="BOT_POLL_DEADLINE_SECONDS"
    )
    sentry_request_deadline_seconds: float = Field(
        60, gt=0, le=600, validation_alias="BOT_SENTRY_REQUEST_DEADLINE_SECONDS"
    )
    lifecycle_interval_seconds: int = Field(
        300, ge=10, validation_alias="BOT_LIFECYCLE_INTERVAL_SECONDS"
    )
    fixlink_interval_seconds: int = Field(
        900, ge=60, validation_alias="BOT_FIXLINK_INTERVAL_SECONDS"
    )
    outbox_interval_seconds: int = Field(15, ge=1, validation_alias="BOT_OUTBOX_INTERVAL_SECONDS")
    hidden_debt_runs: int = Field(3, ge=2, validation_alias="BOT_HIDDEN_DEBT_RUNS")
    hidden_debt_hours: float = Field(24, gt=0, validation_alias="BOT_HIDDEN_DEBT_HOURS")
    report_base_url: str | None = Field(None, validation_alias="BOT_REPORT_BASE_URL")
    reports_dir: Path | None = Field(Path(".state/reports"), validation_alias="BOT_REPORTS_DIR")
    instance_id: str | None = Field(None, validation_alias="BOT_INSTANCE_ID")
    bot_environment: str = Field("production", validation_alias="BOT_ENVIRONMENT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="BOT_LOG_LEVEL"
    )
    triage: JsonObject = Field(default_factory=dict, validation_alias="BOT_TRIAGE")
    # Crash testing only (bot/failpoints.py): the process dies at this named point.
    failpoint: str | None = Field(None, validation_alias="BOT_FAILPOINT")
    targets: dict[str, SecretStr] = Field(
        default_factory=dict, validation_alias=AliasChoices("BOT_TARGETS", "targets")
    )

    @field_validator(
        "sentry_projects", "sentry_environments", "github_repos", "approvers", mode="before"
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        # `BOT_LOG_LEVEL=debug` is what people type; logging's own names are upper case.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("sentry_base_url")
    @classmethod
    def _sentry_url(cls, value: str) -> str:
        return _http_url(value, "SENTRY_BASE_URL")

    @field_validator("github_api_url")
    @classmethod
    def _github_url(cls, value: str) -> str:
        return _http_url(value, "GITHUB_API_URL")

    @field_validator("sentry_org")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        if value is not None and not _SLUG.match(value):
            raise ValueError(f"must be an organization slug, got {value[:40]!r}")
        return value

    @field_validator("github_repos")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        bad = [repo for repo in value if not _REPO.match(repo)]
        if bad:
            raise ValueError(f"not owner/name: {', '.join(repr(b[:60]) for b in bad)}")
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+/", value.get_secret_value()):
            raise ValueError("must be an http(s) webhook URL (value hidden)")
        return value

    @field_validator("console_token", "slack_signing_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("too short: at least 16 characters (value hidden)")
        return value

    @field_validator("failpoint")
    @classmethod
    def _failpoint(cls, value: str | None) -> str | None:
        if value is not None and value not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {value[:60]!r}")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", value):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then whatever the CLI passed (the YAML file's content).
        return (env_settings, init_settings)

    # --- derived -------------------------------------------------------------------

    def target_url(self, name: str) -> str | None:
        """The DSN of target ``name`` (``BOT_TARGET_<NAME>_URL``), or None."""
        secret = self.targets.get(name.lower())
        return secret.get_secret_value() if secret else None

    def sentry_problems(self) -> list[str]:
        """What is missing to talk to the real Sentry API (empty when all is there)."""
        problems = []
        if self.sentry_auth_token is None:
            problems.append(f"SENTRY_AUTH_TOKEN: missing; expected {EXPECTED['SENTRY_AUTH_TOKEN']}")
        if not self.sentry_org:
            problems.append(f"SENTRY_ORG: missing; expected {EXPECTED['SENTRY_ORG']}")
        return problems


def _targets_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in environ.items():
        m = _TARGET_ENV.match(key.upper())
        if m:
            out[m.group(1).lower()] = value
    return out


def _read_yaml(path: Path) -> JsonObject:
    try:
        check_size(path.stat().st_size)
        data = load_bounded(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except BoundedYamlError as exc:
        where = f":{exc.line}" if exc.line else ""
        raise ConfigError(f"--config: {path}{where}: refused: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config: {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path}: expected a mapping of setting names to values")
    return {
        str(k).upper() if str(k).lower() != "triage" else "BOT_TRIAGE": v for k, v in data.items()
    }


def _alias_of(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    return alias if isinstance(alias, str) else field_name.upper()


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings or raise ConfigError with one line per problem."""
    env = os.environ if environ is None else environ
    file_values = _read_yaml(config_file) if config_file else {}
    targets = {k.lower(): v for k, v in (file_values.pop("TARGETS", None) or {}).items()}
    targets.update(_targets_from_env(env))
    try:
        if environ is None:
            return Settings(**file_values, targets=targets)
        # An explicit environ (tests): build from it alone, not from os.environ.
        merged = {**file_values, **{k.upper(): v for k, v in env.items()}}
        merged["targets"] = targets
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err.get("loc") or ("?",)
            name = _alias_of(str(loc[0])) if loc else "?"
            if loc and loc[0] == "targets" and len(loc) > 1:
                name = f"BOT_TARGET_{str(loc[1]).upper()}_URL"
            msg = err.get("msg", "invalid")
            msg = msg.removeprefix("Value error, ")
            expected = EXPECTED.get(name)
            lines.append(f"{name}: {msg}" + (f"; expected {expected}" if expected else ""))
        raise ConfigError("\n".join(lines)) from None

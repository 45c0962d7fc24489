"""The playbook file format: pydantic models, ``extra="forbid"`` everywhere.

A playbook is owned by us (a YAML file in ``playbooks/``), so an unknown key is an
error, never silently ignored: a typo in ``guards.mode`` must not quietly leave a
playbook in ``auto``. Regexes are compiled here once, at load, so a bad pattern is a
load error naming the field. Action settings stay a plain mapping in this model; the
loader validates them against the action's own ``settings_model`` (see
:mod:`bot.playbooks.loader`) and attaches the parsed object to :class:`ActionSpec`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from bot.actions.base import ActionSettings, Limits
from bot.json_types import JsonObject
from bot.safety.linear_regex import LinearRegex, RegexRefused, compile_linear

IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENTIFIER_MAX = 63  # PostgreSQL's NAMEDATALEN - 1
PLAYBOOK_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")

ParamType = Literal["uuid", "int", "identifier", "enum", "string"]
Mode = Literal["shadow", "approval", "auto"]
SOURCES_HELP = "title | message | culprit | event | tag:<name>"


def compile_regex(pattern: str) -> LinearRegex:
    """Compile ``pattern`` with RE2 (linear time on any text) or raise ValueError saying
    why RE2 refused it (backreferences, lookaround, syntax)."""
    try:
        return compile_linear(pattern)
    except RegexRefused as exc:
        raise ValueError(f"invalid regex {pattern[:200]!r}: {exc}") from None


def _valid_regex(pattern: str) -> str:
    compile_regex(pattern)
    return pattern


# A regex string checked at load; errors carry the exact location (e.g. a tag's key).
Regex = Annotated[str, AfterValidator(_valid_regex)]


def is_identifier(value: str) -> bool:
    """True when ``value`` is a plain SQL identifier we are willing to quote and use."""
    return len(value) <= IDENTIFIER_MAX and IDENTIFIER_RE.fullmatch(value) is not None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MatchRules(_Model):
    """Every rule given must hold (AND); list rules hold when the value is any of them."""

    title: Regex | None = Field(default=None, description="regex searched in the issue title")
    message: Regex | None = Field(
        default=None, description="regex searched in the issue message, then the event text"
    )
    culprit: Regex | None = Field(default=None, description="regex searched in the culprit")
    level: list[str] | None = Field(default=None, description="any of these levels")
    environment: list[str] | None = Field(default=None, description="any of these")
    project: list[str] | None = Field(default=None, description="any of these project slugs")
    tags: dict[str, Regex] = Field(default_factory=dict, description="tag name -> value regex")
    min_events: int = Field(default=0, ge=0)
    min_users: int = Field(default=0, ge=0)

    @field_validator("level", "environment", "project", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _not_empty(self) -> MatchRules:
        rules = (self.title, self.message, self.culprit, self.level, self.environment)
        if all(r is None for r in rules) and self.project is None and not self.tags:
            raise ValueError(
                "match needs at least one of title, message, culprit, level, environment, "
                "project or tags (an empty match would fire on every issue)"
            )
        return self


class ExtractParam(_Model):
    """One typed parameter taken from a named regex group."""

    from_: str = Field(alias="from", description=SOURCES_HELP)
    regex: Regex = Field(description="regex with a named group (the param name by default)")
    group: str | None = Field(default=None, description="named group; defaults to the param")
    type: ParamType
    required: bool = True
    min: int | None = Field(default=None, description="int only: lower bound")
    max: int | None = Field(default=None, description="int only: upper bound")
    values: list[str] | None = Field(default=None, description="enum only: allowed values")
    pattern: Regex | None = Field(default=None, description="string only: must fullmatch")
    max_length: int = Field(default=256, ge=1, le=8192, description="string only")

    @field_validator("from_")
    @classmethod
    def _source(cls, value: str) -> str:
        if value in ("title", "message", "culprit", "event"):
            return value
        if value.startswith("tag:") and len(value) > 4:
            return value
        raise ValueError(f"unknown source {value!r}; expected {SOURCES_HELP}")

    @model_validator(mode="after")
    def _type_specific(self) -> ExtractParam:
        only = {"min": "int", "max": "int", "values": "enum", "pattern": "string"}
        for name, wanted in only.items():
            if getattr(self, name) is not None and self.type != wanted:
                raise ValueError(f"{name!r} is only allowed with type {wanted!r}")
        if "max_length" in self.model_fields_set and self.type != "string":
            raise ValueError("'max_length' is only allowed with type 'string'")
        if self.type == "enum" and not self.values:
            raise ValueError("type 'enum' needs a non-empty 'values' list")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ActionSpec(_Model):
    """Which built-in action runs, on which target, with which (action-validated) settings."""

    type: str = Field(description="a built-in action name, e.g. requeue_stuck_tasks")
    target: str | None = Field(
        default=None, description="target database name; DSN from BOT_TARGET_<NAME>_URL"
    )
    settings: JsonObject = Field(default_factory=dict)
    _parsed: ActionSettings | None = PrivateAttr(default=None)

    @field_validator("target")
    @classmethod
    def _target_identifier(cls, value: str | None) -> str | None:
        if value is not None and not is_identifier(value):
            raise ValueError(f"target {value!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @property
    def parsed_settings(self) -> ActionSettings:
        """The settings as validated by the action's ``settings_model`` at load time."""
        if self._parsed is None:
            raise RuntimeError(f"action {self.type!r} settings were not validated by the loader")
        return self._parsed


class Guards(_Model):
    """Safety limits. A new playbook runs in ``shadow`` (preview only) unless told otherwise."""

    mode: Mode = "shadow"
    max_rows: int = Field(default=100, ge=1)
    statement_timeout_ms: int = Field(default=5_000, ge=1)
    lock_timeout_ms: int = Field(default=1_000, ge=1)
    cooldown_minutes: int = Field(default=30, ge=0)
    max_runs_per_hour: int = Field(default=4, ge=1)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_minutes: int = Field(default=60, ge=0)
    approval_ttl_minutes: int = Field(default=240, ge=1)

    def limits(self) -> Limits:
        """The action-level limits these guards impose."""
        return Limits(
            max_rows=self.max_rows,
            statement_timeout_ms=self.statement_timeout_ms,
            lock_timeout_ms=self.lock_timeout_ms,
        )


CheckValue = int | float | str | bool | None
CHECK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_CHECK_PLACEHOLDER_RE = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s")
_CHECK_EXPECTATIONS = ("equals", "at_most", "decreases", "reaches")


class VerifyCheck(_Model):
    """A named read-only query on the target and what its value must be after a run.

    Exactly one expectation: ``equals`` / ``at_most`` (one sample), ``decreases`` (two
    samples ``every_seconds`` apart), ``reaches`` (sampled every ``every_seconds`` for at
    most ``within_seconds``). See :mod:`bot.pipeline.checks`.
    """

    name: str = Field(description="shown in the journal, the report and notifications")
    query: str = Field(
        description="one SELECT/WITH statement; the first column of the first row is the"
        " observed value; values only as %(name)s bind parameters"
    )
    params: dict[str, CheckValue | list[CheckValue]] = Field(
        default_factory=dict, description="bind parameters (extracted parameters too)"
    )
    equals: CheckValue = None
    at_most: float | None = None
    decreases: bool = False
    reaches: CheckValue = None
    every_seconds: float = Field(default=30, gt=0, le=3600)
    within_seconds: float = Field(default=120, gt=0, le=6 * 3600)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not CHECK_NAME_RE.fullmatch(value):
            raise ValueError(f"check name {value!r} must match {CHECK_NAME_RE.pattern}")
        return value

    @field_validator("query")
    @classmethod
    def _read_only_statement(cls, value: str) -> str:
        text = value.strip().rstrip(";").strip()
        head = text.split(None, 1)[0].upper() if text else ""
        if head not in ("SELECT", "WITH"):
            raise ValueError("a check query must be a single SELECT or WITH statement")
        if ";" in text:
            raise ValueError("a check query must be a single statement (no ';' inside)")
        if "%" in _CHECK_PLACEHOLDER_RE.sub("", text).replace("%%", ""):
            raise ValueError("a bare '%' in a check query: write %% or a %(name)s parameter")
        return text

    @property
    def kind(self) -> str:
        """Which expectation this check states."""
        for name in _CHECK_EXPECTATIONS:
            if name in self.model_fields_set and name != "decreases":
                return name
        return "decreases"

    @property
    def placeholders(self) -> set[str]:
        return set(_CHECK_PLACEHOLDER_RE.findall(self.query))

    def describe(self) -> str:
        """The expectation in words, e.g. ``equals 0`` or ``reaches 0 within 120s``."""
        if self.kind == "reaches":
            return (
                f"reaches {self.reaches} within {self.within_seconds:g}s"
                f" (every {self.every_seconds:g}s)"
            )
        if self.kind == "decreases":
            return f"decreases over {self.every_seconds:g}s"
        return f"{self.kind.replace('_', ' ')} {getattr(self, self.kind)}"

    @model_validator(mode="after")
    def _one_expectation(self) -> VerifyCheck:
        given = [n for n in _CHECK_EXPECTATIONS if n in self.model_fields_set]
        if self.decreases is False and "decreases" in given:
            given.remove("decreases")
        if len(given) != 1:
            raise ValueError(
                "a check needs exactly one expectation: equals, at_most, decreases: true"
                f" or reaches (got {', '.join(given) or 'none'})"
            )
        timing = {"every_seconds", "within_seconds"} & self.model_fields_set
        if "within_seconds" in timing and given[0] != "reaches":
            raise ValueError("'within_seconds' is only allowed with 'reaches'")
        if "every_seconds" in timing and given[0] not in ("reaches", "decreases"):
            raise ValueError("'every_seconds' is only allowed with 'reaches' or 'decreases'")
        return self


class VerifySpec(_Model):
    """How long to wait after a run, and what else must hold, for the remedy to count."""

    delay_seconds: int = Field(default=0, ge=0)
    checks: list[VerifyCheck] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _unique_names(self) -> VerifySpec:
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate check names: {', '.join(dupes)}")
        return self


class ResolveSpec(_Model):
    """Resolve the Sentry issue after this many quiet hours (in the fixing commit if known)."""

    quiet_hours: int = Field(default=48, ge=1)
    in_commit: bool = True


class NotifySpec(_Model):
    """Notification overrides for this playbook."""

    owner: str | None = Field(default=None, description="owner team override")


class Playbook(_Model):
    """One playbook file."""

    id: str = Field(description="unique across files: lower-case letters, digits, _ . -")
    description: str = ""
    priority: int = Field(description="higher wins when two playbooks match the same issue")
    match: MatchRules
    extract: dict[str, ExtractParam] = Field(default_factory=dict)
    action: ActionSpec
    guards: Guards = Field(default_factory=Guards)
    verify: VerifySpec = Field(default_factory=VerifySpec)
    resolve: ResolveSpec = Field(default_factory=ResolveSpec)
    notify: NotifySpec = Field(default_factory=NotifySpec)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not PLAYBOOK_ID_RE.fullmatch(value):
            raise ValueError(f"id {value!r} must match {PLAYBOOK_ID_RE.pattern}")
        return value

    @model_validator(mode="after")
    def _checks_bind_known_names(self) -> Playbook:
        if self.verify.checks and self.action.target is None:
            raise ValueError("verify.checks run on the action's target: set action.target")
        for check in self.verify.checks:
            unknown = sorted(check.placeholders - set(check.params) - set(self.extract))
            if unknown:
                raise ValueError(
                    f"verify check {check.name!r} uses %({unknown[0]})s, which is neither in"
                    " its params nor an extracted parameter"
                )
        return self

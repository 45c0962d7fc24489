"""What the cycle's stages are given: their collaborators, built once per tick.

The composition root (``wiring`` beside the CLI) builds a :class:`CycleParts` from
the settings for each scheduler tick, ``cycle`` command or webhook batch; the stages
(:mod:`bot.pipeline.cycle`, :mod:`bot.pipeline.steps`, :mod:`bot.pipeline.webhook`)
only read it. Tests build one with their own store, clock and fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.codehost.port import CodeHost
from bot.errors import BotError, ConfigError
from bot.notify.port import Sender
from bot.pipeline.execute import Executor
from bot.pipeline.ports import EventSink, TargetResolver
from bot.pipeline.sources import IssueSource
from bot.playbooks.matcher import Matcher
from bot.playbooks.models import Playbook
from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue
from bot.sentry.port import SentryPort
from bot.store.db import Store
from bot.triage import TriageConfig


@dataclass(frozen=True)
class DeliveryParts:
    """What the fix-link scan and the outbox need (no playbooks: they run without)."""

    store: Store
    clock: Clock
    senders: Mapping[str, Sender] = field(default_factory=dict)
    codehost: CodeHost | None = None  # None: GITHUB_TOKEN / GITHUB_REPOS not set
    repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleParts:
    """The poll, match, plan and lifecycle stages' collaborators."""

    store: Store
    clock: Clock
    matcher: Matcher
    playbooks: Mapping[str, Playbook]
    executor: Executor
    emit: EventSink
    targets: TargetResolver
    source: IssueSource
    sentry: SentryPort | None  # None when SENTRY_AUTH_TOKEN / SENTRY_ORG are missing
    triage: TriageConfig | None  # None when the ``triage:`` block is malformed
    delivery: DeliveryParts
    playbook_errors: tuple[str, ...] = ()
    poll_overlap: timedelta = timedelta(minutes=10)
    quiet_hours: float = 48
    replay: bool = False  # issues come from a replay file: no Sentry to resolve in
    sentry_problems: tuple[str, ...] = ()  # why ``sentry`` is None
    triage_problems: tuple[str, ...] = ()  # why ``triage`` is None

    def require_sentry(self) -> SentryPort:
        """The Sentry API, or :class:`ConfigError` naming the settings it lacks."""
        if self.sentry is None:
            raise ConfigError("\n".join(self.sentry_problems) or "the Sentry API is not set up")
        return self.sentry

    def require_triage(self) -> TriageConfig:
        """The triage settings, or :class:`ConfigError` naming each malformed field.

        Asked for only where issues are triaged: a bad ``triage:`` block fails that
        stage, never the lifecycle step or the webhook status changes.
        """
        if self.triage is None:
            raise ConfigError("\n".join(self.triage_problems) or "the triage block is invalid")
        return self.triage


class UnconfiguredSource:
    """An :class:`IssueSource` standing in for a Sentry API that is not configured: it
    raises :class:`ConfigError` (naming what is missing) when asked for anything, so
    steps that need no Sentry still run and the poll says why it cannot."""

    name = "unconfigured"

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems

    def _refuse(self) -> ConfigError:
        return ConfigError("\n".join(self.problems))

    def poll(self, since: datetime | None) -> Iterator[SentryIssue]:
        """Never polls: raises the configuration problem."""
        raise self._refuse()

    def events(self, issue_id: str, *, stats_period: str) -> list[SentryEvent]:
        """Never fetches: raises the configuration problem."""
        raise self._refuse()

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """Never fetches: raises the configuration problem."""
        raise self._refuse()

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Nothing was read, nothing set aside."""
        return []


class UnreadableSource:
    """An :class:`IssueSource` standing in for one that could not be opened (a replay
    file that is missing or malformed): it raises that error when asked for anything,
    so only the stages that read issues fail, each with the specific error."""

    def __init__(self, name: str, error: BotError) -> None:
        self.name = name
        self.error = error

    def _refuse(self) -> BotError:
        return self.error.with_traceback(None)

    def poll(self, since: datetime | None) -> Iterator[SentryIssue]:
        """Never polls: raises the error that opening the source raised."""
        raise self._refuse()

    def events(self, issue_id: str, *, stats_period: str) -> list[SentryEvent]:
        """Never fetches: raises the error that opening the source raised."""
        raise self._refuse()

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """Never fetches: raises the error that opening the source raised."""
        raise self._refuse()

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Nothing was read, nothing set aside."""
        return []

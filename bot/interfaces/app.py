"""Composition root: the bot's long-lived parts, built from :class:`~bot.settings.Settings`.

:class:`App` holds what lives as long as the process (store, clock, Sentry client,
target pools, the playbook cache); :mod:`bot.interfaces.wiring` builds the parts of
each tick from it (:class:`~bot.pipeline.parts.CycleParts`). The CLI, the scheduler,
the HTTP server and the demo all go through these two modules; everything below them
takes its collaborators as arguments.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
from pydantic import ValidationError

from bot.actions.target import TargetDatabase
from bot.adapters.sentry.client import HttpSentryClient
from bot.adapters.slack.webhook import SlackWebhookNotifier
from bot.clock import Clock, SystemClock
from bot.errors import ConfigError
from bot.pipeline.sources import IssueSource, ReplaySource, SentryApiSource
from bot.playbooks.cache import PlaybookCache
from bot.playbooks.matcher import Matcher
from bot.playbooks.models import Playbook
from bot.sentry.port import SentryPort
from bot.settings import Settings
from bot.store.db import Store
from bot.triage import TriageConfig

log = logging.getLogger(__name__)

DEMO_REPLAY = Path(__file__).parents[1] / "demo" / "seed_incidents.json"


@dataclass
class App:
    """The wired bot: settings, store, clock and lazily built adapters."""

    settings: Settings
    store: Store
    clock: Clock = field(default_factory=SystemClock)
    _sentry: SentryPort | None = None
    # ``serve`` puts a counting transport here (sentry_requests_total); None: httpx's own.
    sentry_transport: httpx.BaseTransport | None = None
    playbook_errors: list[str] = field(default_factory=list)
    # Target databases by name, built once per process so their connection pools are
    # reused across steps and cycles (see bot.interfaces.wiring.target_resolver).
    targets: dict[str, TargetDatabase] = field(default_factory=dict)
    # Playbooks parsed once per process, re-parsed when their files change.
    playbook_cache: PlaybookCache = field(default_factory=PlaybookCache)
    matcher: tuple[Matcher, dict[str, Playbook]] | None = None
    # The Slack webhook notifier, one per process: its HTTP client keeps the connection
    # to Slack alive between outbox flushes and is closed with the app.
    _slack: SlackWebhookNotifier | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> App:
        store = Store(settings.database_url)
        return cls(settings=settings, store=store, clock=clock or SystemClock())

    def sentry(self) -> SentryPort:
        """The real Sentry client (ConfigError when token/org are missing)."""
        if self._sentry is None:
            problems = self.settings.sentry_problems()
            if problems:
                raise ConfigError("\n".join(problems))
            token = self.settings.sentry_auth_token
            assert token is not None and self.settings.sentry_org
            self._sentry = HttpSentryClient(
                org=self.settings.sentry_org,
                token=token.get_secret_value(),
                base_url=self.settings.sentry_base_url,
                clock=self.clock,
                transport=self.sentry_transport,
                request_deadline=self.settings.sentry_request_deadline_seconds,
                max_pages=self.settings.poll_max_pages,
                listing_deadline=self.settings.poll_deadline_seconds,
            )
        return self._sentry

    def source(self) -> IssueSource:
        """A replay file when ``BOT_REPLAY_FILE`` is set, else the Sentry API."""
        if self.settings.replay_file is not None:
            return ReplaySource(self.settings.replay_file)
        source = SentryApiSource(
            self.sentry(),
            query=self.settings.sentry_query,
            projects=self.settings.sentry_projects,
            environments=self.settings.sentry_environments,
        )
        # One watermark per distinct poll (org, query, scope): changing the query must
        # not inherit a watermark that would hide older matching issues.
        scope = "|".join(
            [
                self.settings.sentry_base_url,
                self.settings.sentry_org or "",
                self.settings.sentry_query,
                ",".join(self.settings.sentry_projects),
                ",".join(self.settings.sentry_environments),
            ]
        )
        source.name = f"sentry:{hashlib.sha256(scope.encode()).hexdigest()[:16]}"
        return source

    def triage_config(self) -> TriageConfig:
        """Routing and response targets from the ``triage:`` block of the config file."""
        try:
            return TriageConfig.model_validate(self.settings.triage)
        except ValidationError as exc:
            lines = [
                f"triage.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            ]
            raise ConfigError("\n".join(lines)) from None

    def slack(self) -> SlackWebhookNotifier | None:
        """The Slack webhook notifier, when ``BOT_SLACK_WEBHOOK_URL`` is set."""
        url = self.settings.slack_webhook_url
        if url is not None and self._slack is None:
            self._slack = SlackWebhookNotifier(url.get_secret_value())
        return self._slack

    def close(self) -> None:
        """Close the Sentry and Slack clients, the target pools and the store's engine."""
        if isinstance(self._sentry, HttpSentryClient):
            self._sentry.close()
        if self._slack is not None:
            self._slack.close()
            self._slack = None
        for target in self.targets.values():
            if isinstance(target, Closeable):
                target.close()
        self.targets.clear()
        self.store.dispose()


@runtime_checkable
class Closeable(Protocol):
    """A part holding connections (a target's pool) that ``App.close`` releases."""

    def close(self) -> None: ...

"""The parts of each tick, built from an :class:`~bot.interfaces.app.App`.

One place composes playbooks, targets, the executor, the event sink (notifications),
the issue source, the code host and the outbox senders: :func:`build_cycle` for the
poll and lifecycle stages (and a webhook batch), :func:`build_delivery` for the
fix-link scan and the outbox. The stages in :mod:`bot.pipeline` only read them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from datetime import timedelta
from pathlib import Path

from bot.actions.target import TargetDatabase
from bot.adapters.github.blocks import StoreBlocks
from bot.adapters.github.client import GitHubCodeHost
from bot.adapters.slack.response_url import SLACK_RESPONSE_CHANNEL, response_url_sender
from bot.adapters.targets.factory import open_target, url_dialect
from bot.codehost.port import CodeHost
from bot.errors import BotError, ConfigError, SentryDuplicateComment
from bot.interfaces.app import App
from bot.notify.port import Payload, Sender
from bot.pipeline.events import EventRecorder, NoticeConfig
from bot.pipeline.execute import Executor
from bot.pipeline.parts import CycleParts, DeliveryParts, UnconfiguredSource, UnreadableSource
from bot.pipeline.ports import TargetResolver
from bot.pipeline.sources import IssueSource
from bot.playbooks.matcher import Matcher
from bot.playbooks.models import Playbook
from bot.sentry.port import SentryPort
from bot.triage import TriageConfig

log = logging.getLogger(__name__)


def load_matcher(app: App) -> tuple[Matcher, dict[str, Playbook]]:
    """Load every valid playbook; each broken file is logged with file, line and field,
    and so is a playbook whose action cannot run on its configured target's dialect.

    A broken playbook never stops the valid ones from running, and never runs itself.
    Files are parsed once per process and again only when they change (see
    :mod:`bot.playbooks.cache`); the matcher is rebuilt only then, too.
    """
    directory = app.settings.playbooks_dir
    if not directory.is_dir():
        # Not "no playbook matched" for every issue: the whole configuration is wrong.
        raise ConfigError(
            f"BOT_PLAYBOOKS_DIR: {directory} is not a directory; expected the folder of"
            " playbook YAML files (the project ships ./playbooks)"
        )

    def target_dialect(name: str) -> str | None:
        url = app.settings.target_url(name)
        return url_dialect(url) if url else None

    # Target URLs come from the settings, fixed for the process: the file fingerprint
    # alone decides when to parse again.
    result, fresh = app.playbook_cache.load(
        app.settings.playbooks_dir, target_dialect=target_dialect
    )
    if fresh or app.matcher is None:
        for error in result.errors:
            log.error("playbook not loaded: %s", error)
        app.matcher = (Matcher(result.playbooks), {pb.id: pb for pb in result.playbooks})
    app.playbook_errors = [str(e) for e in result.errors]
    return app.matcher


def target_resolver(app: App) -> TargetResolver:
    """Targets by playbook name, from ``BOT_TARGET_<NAME>_URL``; one per name per App,
    so each target's small connection pool lives as long as the process."""
    cache: dict[str, TargetDatabase] = app.targets

    def resolve(name: str) -> TargetDatabase | None:
        if name in cache:
            return cache[name]
        dsn = app.settings.target_url(name)
        if not dsn:
            return None
        cache[name] = open_target(dsn, name=name)
        return cache[name]

    return resolve


def event_recorder(app: App) -> EventRecorder:
    """The event sink writing notifications to the outbox, per the settings."""
    settings = app.settings
    return EventRecorder(
        app.clock,
        NoticeConfig(
            slack=settings.slack_webhook_url is not None,
            sentry_notes=settings.replay_file is None,
            reports_dir=settings.reports_dir,
            report_base_url=settings.report_base_url,
            quiet_hours=settings.quiet_hours,
        ),
    )


def build_executor(app: App, playbooks: dict[str, Playbook]) -> tuple[Executor, EventRecorder]:
    """An executor whose events go to the notification outbox."""
    sink = event_recorder(app)
    executor = Executor(
        app.store,
        playbooks,
        target_resolver(app),
        app.clock,
        on_event=sink,
        hidden_debt_runs=app.settings.hidden_debt_runs,
        hidden_debt_hours=app.settings.hidden_debt_hours,
    )
    return executor, sink


def codehost(app: App) -> CodeHost | None:
    """GitHub, when ``GITHUB_TOKEN`` and ``GITHUB_REPOS`` are set."""
    token = app.settings.github_token
    if token is None or not app.settings.github_repos:
        return None
    return GitHubCodeHost(
        token.get_secret_value(),
        base_url=app.settings.github_api_url,
        repos=app.settings.github_repos,
        clock=app.clock,
        blocks=StoreBlocks(app.store),  # a rate limit one step saw binds the next ones
    )


def _sentry_comment_sender(sentry: SentryPort) -> Sender:
    def send(payload: Payload) -> None:
        # A duplicate means the same note is already there: delivered.
        with contextlib.suppress(SentryDuplicateComment):
            sentry.add_comment(str(payload["issue_id"]), str(payload["text"]))

    return send


def senders(app: App) -> dict[str, Sender]:
    """The outbox's channels: Slack webhook, Sentry notes, Slack ``response_url`` replies."""
    settings = app.settings
    out: dict[str, Sender] = {}
    slack = app.slack()
    if slack is not None:
        out["slack"] = slack.send
    if settings.replay_file is None and not settings.sentry_problems():
        out["sentry_comment"] = _sentry_comment_sender(app.sentry())
    if settings.slack_signing_secret is not None:
        out[SLACK_RESPONSE_CHANNEL] = response_url_sender()
    return out


def build_delivery(app: App) -> DeliveryParts:
    """The fix-link scan's and the outbox's parts."""
    return DeliveryParts(
        store=app.store,
        clock=app.clock,
        senders=senders(app),
        codehost=codehost(app),
        repos=tuple(app.settings.github_repos),
    )


def _source(app: App) -> IssueSource:
    problems = app.settings.sentry_problems()
    if app.settings.replay_file is None and problems:
        return UnconfiguredSource(tuple(problems))
    try:
        return app.source()
    except BotError as exc:
        # A missing or malformed replay file: the poll fails with this error when it
        # reads issues; the lifecycle step and webhook status changes need no source.
        return UnreadableSource("unreadable", exc)


def _triage(app: App) -> tuple[TriageConfig | None, tuple[str, ...]]:
    # A malformed ``triage:`` block fails the stages that triage, when they do
    # (CycleParts.require_triage), not every step built from these parts.
    try:
        return app.triage_config(), ()
    except ConfigError as exc:
        return None, (str(exc),)


def build_cycle(app: App) -> CycleParts:
    """The poll, match, plan and lifecycle parts, playbooks parsed at most once.

    Raises :class:`ConfigError` for a missing playbook folder. A missing Sentry API, a
    broken replay file and a malformed ``triage:`` block are not raised here: the stage
    that needs the part raises (``parts.require_sentry()``, the source when polled,
    ``parts.require_triage()``), so the steps that do not need it still run.
    """
    matcher, playbooks = load_matcher(app)
    executor, sink = build_executor(app, playbooks)
    problems = app.settings.sentry_problems()
    triage, triage_problems = _triage(app)
    return CycleParts(
        store=app.store,
        clock=app.clock,
        matcher=matcher,
        playbooks=playbooks,
        executor=executor,
        emit=sink,
        targets=target_resolver(app),
        source=_source(app),
        sentry=None if problems else app.sentry(),
        triage=triage,
        delivery=build_delivery(app),
        playbook_errors=tuple(app.playbook_errors),
        poll_overlap=timedelta(seconds=app.settings.poll_overlap_seconds),
        quiet_hours=app.settings.quiet_hours,
        replay=app.settings.replay_file is not None,
        sentry_problems=tuple(problems),
        triage_problems=triage_problems,
    )


def playbooks_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of the playbook files: changes when a file does."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return ()
    out = []
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:
            continue
        out.append((entry.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class PartsCache:
    """:func:`build_cycle` once, again only when a playbook file changes: a webhook
    delivery must not pay for parsing every playbook (and new target connections)
    each time."""

    # Rebuilt at least this often anyway: the event sink keeps a log of what it sent.
    MAX_USES = 500

    def __init__(self, app: App) -> None:
        self.app = app
        self._key: object = None
        self._parts: CycleParts | None = None
        self._uses = 0
        self._lock = threading.Lock()  # the inbox worker's threads share one cache

    def get(self) -> CycleParts:
        """The cached parts, rebuilt when stale or while the Sentry API was missing."""
        key = playbooks_signature(self.app.settings.playbooks_dir)
        with self._lock:
            stale = self._parts is None or key != self._key or self._uses >= self.MAX_USES
            if (
                stale
                or self._parts is None
                or self._parts.sentry is None
                or isinstance(self._parts.source, UnreadableSource)
            ):
                self._parts, self._key, self._uses = build_cycle(self.app), key, 0
                if self._parts.sentry is None:
                    # Status changes need no API; deliveries that need a fetch wait.
                    log.warning(
                        "webhooks that need the Sentry API will wait: %s",
                        "; ".join(self._parts.sentry_problems),
                    )
            self._uses += 1
            return self._parts

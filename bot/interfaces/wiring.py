"""Wiring of the cycle's collaborators from an :class:`~bot.interfaces.app.App`.

Kept apart from :mod:`bot.interfaces.app` so the composition of playbooks, targets and the
event sink (notifications) reads in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.actions.target import TargetDatabase
from bot.adapters.targets.factory import open_target, url_dialect
from bot.errors import ConfigError
from bot.interfaces.app import App
from bot.pipeline.execute import EventSink, Executor
from bot.playbooks.matcher import Matcher
from bot.playbooks.models import Playbook

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


def target_resolver(app: App) -> Any:
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


def build_executor(app: App, playbooks: dict[str, Playbook]) -> tuple[Executor, EventSink]:
    """An executor whose events go to the notification outbox."""
    from bot.pipeline.events import EventRecorder

    sink = EventRecorder(app)
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

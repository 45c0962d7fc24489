"""Building the Slack endpoint and the console from the wired :class:`~bot.interfaces.app.App`.

The app factory calls :func:`slack_interactions` and :func:`console` once and mounts
their ``routes()``. Both share one way to execute an approved run
(:func:`leader_runner`): only the replica holding the scheduler lease executes it at
once; a standby leaves it ``approved`` and the leader's next poll step runs it
(:meth:`Executor.execute_approved`). The executor's compare-and-set claim makes any
second attempt a no-op either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import httpx
from starlette.routing import BaseRoute

from bot.adapters.slack.response_url import SLACK_RESPONSE_CHANNEL, response_url_sender
from bot.errors import ConfigError
from bot.interfaces.app import App
from bot.interfaces.http.console import Console
from bot.interfaces.http.console_auth import ConsoleAuth
from bot.interfaces.http.parts import HttpParts
from bot.interfaces.http.slack import SlackInteractions
from bot.interfaces.http.slack_verify import NonceStore
from bot.interfaces.leader import LeaseElector, default_holder
from bot.interfaces.wiring import build_executor, load_matcher
from bot.pipeline.approvals import ApprovalService, Approvers
from bot.pipeline.outbox import OutboxFlusher

log = logging.getLogger(__name__)
LeaderCheck = Callable[[], bool]


def lease_leader_check(app: App, ttl: timedelta = timedelta(seconds=60)) -> LeaderCheck:
    """True while this process holds (or can take) the scheduler lease."""
    elector = LeaseElector(
        app.store, holder=default_holder(app.settings.instance_id), ttl=ttl, clock=app.clock
    )
    return elector.try_acquire


def leader_runner(app: App, is_leader: LeaderCheck) -> Callable[[str], None]:
    """Execute an approved run here if this replica leads; else leave it to the leader."""

    def run(run_id: str) -> None:
        if not is_leader():
            log.info("run %s approved; the leader will execute it", run_id[:8])
            return
        _, playbooks = load_matcher(app)
        executor, _ = build_executor(app, playbooks)
        out = executor.execute_run(run_id)
        log.info("run %s executed after approval: %s", run_id[:8], out.status)

    return run


def reply_flusher(app: App, client: httpx.Client | None = None) -> Callable[[], None]:
    """Deliver queued ``response_url`` replies now (the outbox step would, later)."""
    flusher = OutboxFlusher(
        app.store, {SLACK_RESPONSE_CHANNEL: response_url_sender(client)}, app.clock
    )

    def flush() -> None:
        flusher.flush(limit=20)

    return flush


def approvals_service(app: App) -> ApprovalService:
    return ApprovalService(app.store, app.clock, Approvers.parse(app.settings.approvers))


def slack_interactions(
    app: App, *, is_leader: LeaderCheck, client: httpx.Client | None = None
) -> SlackInteractions:
    secret = app.settings.slack_signing_secret
    return SlackInteractions(
        store=app.store,
        clock=app.clock,
        signing_secret=secret.get_secret_value() if secret else None,
        approvals=approvals_service(app),
        nonces=NonceStore(app.store, app.clock),
        run_approved=leader_runner(app, is_leader),
        flush_replies=reply_flusher(app, client),
    )


def console(app: App, *, is_leader: LeaderCheck) -> Console:
    token = app.settings.console_token
    if token is None:
        raise ConfigError("BOT_CONSOLE_TOKEN: missing; the console is not mounted without it")
    return Console(
        store=app.store,
        clock=app.clock,
        auth=ConsoleAuth(token.get_secret_value(), app.clock),
        approvals=approvals_service(app),
        run_approved=leader_runner(app, is_leader),
        quiet_hours=app.settings.quiet_hours,
    )


def routes(parts: HttpParts) -> list[BaseRoute]:
    """Slack interactivity (always mounted: 404 until ``SLACK_SIGNING_SECRET`` is set) and
    the console (only with ``BOT_CONSOLE_TOKEN``). "Leader" is the serve process's own
    scheduler lease (``parts.elector``), so approved runs execute where the poll runs."""

    def is_leader() -> bool:
        return parts.elector.is_leader

    mounted: list[BaseRoute] = [*slack_interactions(parts.app, is_leader=is_leader).routes()]
    if parts.settings.console_token is not None:
        mounted += console(parts.app, is_leader=is_leader).routes()
    return mounted

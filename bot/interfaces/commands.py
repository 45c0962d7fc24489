"""The bodies of the ``sentry-bot`` commands (:mod:`bot.interfaces.cli` declares them).

Each body reads the settings (``--config`` file, then the environment), opens the
:class:`~bot.interfaces.app.App`, does its work through the composition root
(:mod:`bot.interfaces.wiring`) and closes the app again. Errors are left to the CLI,
which turns them into one clean line and an exit status.
"""

from __future__ import annotations

import gc
import getpass
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path

import typer
from sqlmodel import col, select

from bot import __version__, failpoints
from bot.adapters.selfmon import SecretScrubber, init_selfmon, secrets_from_settings
from bot.demo import run_demo
from bot.errors import BotError
from bot.interfaces import status as status_mod
from bot.interfaces.app import App
from bot.interfaces.heartbeat import health_status
from bot.interfaces.http.server import serve as run_server
from bot.interfaces.scheduler import run_scheduler
from bot.interfaces.wiring import build_cycle, build_executor, load_matcher, target_resolver
from bot.pipeline.cycle import run_cycle
from bot.pipeline.flags import FlagReverter
from bot.pipeline.guards import set_paused
from bot.pipeline.sources import ReplaySource
from bot.playbooks.backtest import backtest as run_backtest
from bot.safety.redact import mask_dsn
from bot.settings import Settings, load_settings
from bot.store.db import Store, redact_url
from bot.store.models import RemediationRun
from bot.triage.report import collect_report_facts, render_report


def load(config: Path | None) -> Settings:
    """The settings, with the failpoint armed (``BOT_FAILPOINT``, read here once)."""
    settings = load_settings(config)
    failpoints.arm(settings.failpoint)
    return settings


class ScrubFilter(logging.Filter):
    """Last line of defence: every configured secret and every DSN password is masked
    in each log record (sources already scrub; this catches what they missed)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._scrubber = SecretScrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = mask_dsn(self._scrubber.scrub_text(message))
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str, secrets: list[str] | None = None) -> None:
    """Log lines to stderr; with ``secrets``, every record scrubbed of them."""
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if secrets is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(ScrubFilter(secrets))
    # Migrations run on every start; their chatter is not news.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs full request URLs at INFO; a webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def open_app(config: Path | None) -> App:
    """Settings, scrubbed logging, the app, and its store upgraded to the newest schema."""
    settings = load(config)
    setup_logging(settings.log_level, secrets_from_settings(settings))
    bot = App.from_settings(settings)
    bot.store.upgrade()  # the bot upgrades its schema on start
    settle_heap()
    return bot


def settle_heap() -> None:
    """Start-up is over: collect once, then move every object alive now (modules, the
    ORM's and pydantic's machinery, settings) out of the cyclic collector's reach
    (:func:`gc.freeze`), so a full collection in the middle of a burst scans what the
    burst allocated, not the whole process. bench/burst.py: ~0.35 s of a 2 s burst of
    1,000 issues was full collections walking the start-up heap."""
    gc.collect()
    gc.freeze()


def init_bot_selfmon(bot: App) -> None:
    """Report the bot's own errors to Sentry when BOT_SENTRY_DSN is set (scrubbed)."""
    dsn = bot.settings.bot_sentry_dsn
    init_selfmon(
        dsn.get_secret_value() if dsn else None,
        release=f"sentry-remediation-bot@{__version__}",
        environment=bot.settings.bot_environment,
        secrets=secrets_from_settings(bot.settings),
    )


def resolve_run_id(store: Store, prefix: str) -> str:
    """A full run id from an id or a unique prefix of at least 6 characters."""
    if len(prefix) < 6:
        raise BotError("give at least 6 characters of the run id")
    with store.session() as session:
        ids = session.exec(
            select(RemediationRun.id).where(col(RemediationRun.id).startswith(prefix))
        ).all()
    if not ids:
        raise BotError(f"no run {prefix!r}")
    if len(ids) > 1:
        raise BotError(f"run id prefix {prefix!r} is ambiguous ({len(ids)} runs)")
    return ids[0]


def db_upgrade(config: Path | None) -> None:
    """``sentry-bot db upgrade``."""
    bot = open_app(config)
    typer.echo(
        f"state store at {redact_url(bot.settings.database_url)} is at "
        f"revision {bot.store.current_revision()}"
    )


def cycle(config: Path | None, *, as_json: bool) -> None:
    """``sentry-bot cycle``: one full pass, printed."""
    bot = open_app(config)
    init_bot_selfmon(bot)
    try:
        report = run_cycle(build_cycle(bot))
    finally:
        bot.close()
    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())


def status(
    config: Path | None,
    issue: str | None,
    *,
    as_json: bool,
    team: str | None,
    severity: str | None,
    limit: int | None,
    cursor: str | None,
) -> None:
    """``sentry-bot status``: the overview, or one issue's timeline."""
    bot = open_app(config)
    try:
        with bot.store.session() as session:
            if issue:
                timeline = status_mod.issue_timeline(session, issue)
                out = (
                    json.dumps(timeline, indent=2, default=str)
                    if as_json
                    else status_mod.render_timeline(timeline)
                )
            elif as_json:
                data = status_mod.overview(
                    session, team=team, severity=severity, limit=limit, cursor=cursor
                )
                out = json.dumps(data, indent=2, default=str)
            else:
                data = status_mod.overview(
                    session,
                    team=team,
                    severity=severity,
                    limit=limit or 50,
                    cursor=cursor,
                    runs_limit=20,
                )
                out = status_mod.render_overview(data)
    finally:
        bot.close()
    typer.echo(out)


def demo(state: Path | None, *, as_json: bool) -> None:
    """``sentry-bot demo``."""
    # The bot's own INFO lines would bury the story; warnings still show.
    setup_logging("WARNING")
    typer.echo(run_demo(state, as_json=as_json))


def approve(config: Path | None, run_id: str, by: str) -> None:
    """``sentry-bot approve``: approve, execute and verify; exit 1 unless it succeeded."""
    bot = open_app(config)
    try:
        _, playbooks = load_matcher(bot)
        executor, _ = build_executor(bot, playbooks)
        full_id = resolve_run_id(bot.store, run_id)
        out = executor.approve(full_id, by or getpass.getuser())
    finally:
        bot.close()
    typer.echo(
        f"run {full_id[:8]} ({out.playbook_id} on {out.short_id}): {out.status}"
        + (f", {out.rows_affected} rows changed" if out.rows_affected is not None else "")
        + (f"; verify: {out.verify}" if out.verify else "")
        + (f"; {out.note}" if out.note else "")
    )
    if out.status not in ("succeeded", "noop"):
        raise typer.Exit(1)


def revert(config: Path | None, run_id: str) -> None:
    """``sentry-bot revert``: put back what a set_flag run changed."""
    bot = open_app(config)
    try:
        _, playbooks = load_matcher(bot)
        full_id = resolve_run_id(bot.store, run_id)
        reverter = FlagReverter(bot.store, playbooks, target_resolver(bot), bot.clock)
        outcome = reverter.revert(full_id, "sentry-bot revert")
        detail = reverter.last_detail
    finally:
        bot.close()
    typer.echo(f"run {full_id[:8]}: {outcome}" + (f": {detail}" if detail else ""))
    if outcome == "failed":
        raise typer.Exit(1)


def pause(config: Path | None, reason: str) -> None:
    """``sentry-bot pause``."""
    bot = open_app(config)
    try:
        with bot.store.session() as session:
            set_paused(session, reason or "paused", bot.clock.now())
    finally:
        bot.close()
    typer.echo(f"paused: {reason}")


def resume(config: Path | None) -> None:
    """``sentry-bot resume``."""
    bot = open_app(config)
    try:
        with bot.store.session() as session:
            set_paused(session, None, bot.clock.now())
    finally:
        bot.close()
    typer.echo("resumed")


def backtest(config: Path | None, file: Path) -> None:
    """``sentry-bot backtest``: the matchers over a replay file (no store needed)."""
    settings = load(config)
    setup_logging("WARNING")
    bot = App.from_settings(settings)
    matcher, _ = load_matcher(bot)
    for err in bot.playbook_errors:
        typer.echo(f"playbook not loaded: {err}", err=True)
    source = ReplaySource(file)
    report = run_backtest(matcher, ((i, i.latest_event) for i in source.issues))
    typer.echo(report.render())


def run(config: Path | None) -> None:
    """``sentry-bot run``: the scheduler until SIGTERM; exits with its status."""
    bot = open_app(config)
    # APScheduler's INFO lines ("Adding job tentatively", "Added job", "Running
    # job") repeat what our own scheduler logs once, with the job's outcome.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    init_bot_selfmon(bot)
    try:
        code = run_scheduler(bot)
    finally:
        bot.close()
    raise typer.Exit(code)


def serve(config: Path | None, host: str, port: int) -> None:
    """``sentry-bot serve``: HTTP and the scheduler until SIGTERM."""
    bot = open_app(config)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    if bot.settings.sentry_client_secret is None:
        logging.getLogger("bot.serve").warning(
            "SENTRY_CLIENT_SECRET is not set: /hooks/sentry answers 503"
        )
    init_bot_selfmon(bot)
    try:
        code = run_server(bot, host=host, port=port, log_level=bot.settings.log_level)
    finally:
        bot.close()
    raise typer.Exit(code)


def health(config: Path | None) -> None:
    """``sentry-bot health``: exit 0 when a heartbeat is fresh, else 1."""
    settings = load(config)
    bot = App.from_settings(settings)
    try:
        max_age = timedelta(
            seconds=max(
                120, 4 * settings.outbox_interval_seconds, 2 * settings.poll_interval_seconds
            )
        )
        ok, message = health_status(bot.store, bot.clock, max_age, instance=settings.instance_id)
    finally:
        bot.close()
    typer.echo(message)
    if not ok:
        raise typer.Exit(1)


def report(config: Path | None, key: str, output: Path | None) -> None:
    """``sentry-bot report``: the Markdown report, printed or written to ``output``."""
    bot = open_app(config)
    try:
        with bot.store.session() as session:
            facts = collect_report_facts(session, key, quiet_hours=bot.settings.quiet_hours)
            if facts is None:
                raise BotError(f"no tracked issue or incident {key!r}")
            text = render_report(facts)
    finally:
        bot.close()
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"report written to {output}")

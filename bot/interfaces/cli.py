"""The ``sentry-bot`` command line (typer). The only place settings are read.

Exit status: 0 ok, 1 a command failed (or validation found problems), 2 bad
configuration or usage. Configuration problems print one line each, no traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bot.errors import BotError, ConfigError
from bot.interfaces.app import App
from bot.interfaces.playbooks_cli import app as playbooks_app
from bot.settings import Settings, load_settings

app = typer.Typer(
    name="sentry-bot",
    help="Poll Sentry, match playbooks, remediate safely, resolve after quiet hours.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: typer's rich help labels every flag `<bool>` (and every value
    # `<str>`), which reads as if a flag took a value.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="The bot's state store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(playbooks_app, name="playbooks")
debug_app = typer.Typer(help="Tools for testing the bot itself.", no_args_is_help=True)
app.add_typer(debug_app, name="debug")

T = TypeVar("T")


class _State:
    config: Path | None = None


_state = _State()


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with settings (env wins).")
    ] = None,
) -> None:
    _state.config = config


def _settings(**overrides: Any) -> Settings:
    from bot import failpoints

    settings = load_settings(_state.config)
    failpoints.arm(settings.failpoint)  # BOT_FAILPOINT, read here once (crash tests)
    return settings.model_copy(update=overrides) if overrides else settings


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning bot errors into clean messages and exit codes."""
    try:
        return fn()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2) from None
    except BotError as exc:
        typer.echo(f"error: {_clean(str(exc))}", err=True)
        raise typer.Exit(1) from None


def _clean(text: str) -> str:
    from bot.safety.redact import mask_dsn

    return mask_dsn(text)


class _ScrubFilter(logging.Filter):
    """Last line of defence: every configured secret and every DSN password is masked
    in each log record (sources already scrub; this catches what they missed)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        from bot.adapters.selfmon import SecretScrubber

        self._scrubber = SecretScrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        from bot.safety.redact import mask_dsn

        message = record.getMessage()
        clean = mask_dsn(self._scrubber.scrub_text(message))
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _setup_logging(level: str, secrets: list[str] | None = None) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if secrets is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_ScrubFilter(secrets))
    # Migrations run on every start; their chatter is not news.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs full request URLs at INFO; a webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _open_app(**overrides: Any) -> App:
    from bot.adapters.selfmon import secrets_from_settings

    settings = _settings(**overrides)
    _setup_logging(settings.log_level, secrets_from_settings(settings))
    bot = App.from_settings(settings)
    bot.store.upgrade()  # the bot upgrades its schema on start
    return bot


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the state-store migrations (also done automatically on start)."""

    def body() -> None:
        from bot.store.db import redact_url

        bot = _open_app()
        typer.echo(
            f"state store at {redact_url(bot.settings.database_url)} is at "
            f"revision {bot.store.current_revision()}"
        )

    _run(body)


@debug_app.command("failpoints")
def debug_failpoints() -> None:
    """Print every failpoint name (arm one with BOT_FAILPOINT=<name>), one per line."""
    from bot.failpoints import FAILPOINTS

    for name in FAILPOINTS:
        typer.echo(name)


@app.command()
def cycle(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """One pass: poll Sentry, track, match, plan, execute per mode, verify, record."""

    def body() -> None:
        from bot.pipeline.cycle import run_cycle

        bot = _open_app()
        _init_selfmon(bot)
        try:
            report = run_cycle(bot)
        finally:
            bot.close()
        typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())

    _run(body)


@app.command()
def status(
    issue: Annotated[str | None, typer.Argument(help="Issue id or short id: its timeline.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    team: Annotated[str | None, typer.Option(help="Only issues routed to this team.")] = None,
    severity: Annotated[str | None, typer.Option(help="Only issues of this severity.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Issues per page (JSON: all unless given; table: 50), newest first.",
        ),
    ] = None,
    cursor: Annotated[
        str | None, typer.Option(help="Start at this page (the next_cursor of the last one).")
    ] = None,
) -> None:
    """What the store knows: tracked issues, runs, outbox, pause; or one issue's timeline."""

    def body() -> None:
        from bot.interfaces import status as status_mod

        bot = _open_app()
        try:
            with bot.store.session() as session:
                if issue:
                    data = status_mod.issue_timeline(session, issue)
                    out = (
                        json.dumps(data, indent=2, default=str)
                        if as_json
                        else (status_mod.render_timeline(data))
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

    _run(body)


@app.command()
def demo(
    state: Annotated[
        Path | None,
        typer.Option(help="SQLite file for the demo's state (default: .state/demo.db)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The whole loop on embedded parts: embedded PostgreSQL target with the seeds' broken
    states, Sentry/GitHub/Slack fakes on loopback, real cycles, 49 simulated hours."""

    def body() -> None:
        from bot.demo import run_demo

        # The bot's own INFO lines would bury the story; warnings still show.
        _setup_logging("WARNING")
        typer.echo(run_demo(state, as_json=as_json))

    _run(body)


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix) from `status`.")],
    by: Annotated[str, typer.Option(help="Who approves (journaled).")] = "",
) -> None:
    """Approve a run waiting in approval mode, then execute and verify it."""

    def body() -> None:
        import getpass

        from bot.interfaces.wiring import build_executor, load_matcher
        from bot.pipeline.cycle import resolve_run_id

        bot = _open_app()
        try:
            _, playbooks = load_matcher(bot)
            executor, _ = build_executor(bot, playbooks)
            full_id = resolve_run_id(bot, run_id)
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

    _run(body)


@app.command()
def revert(
    run_id: Annotated[str, typer.Argument(help="A set_flag run id (or a unique prefix).")],
) -> None:
    """Put back the value a set_flag run set (only if it still holds the bot's value)."""

    def body() -> None:
        from bot.interfaces.wiring import load_matcher, target_resolver
        from bot.pipeline.cycle import resolve_run_id
        from bot.pipeline.flags import FlagReverter

        bot = _open_app()
        try:
            _, playbooks = load_matcher(bot)
            full_id = resolve_run_id(bot, run_id)
            reverter = FlagReverter(bot.store, playbooks, target_resolver(bot), bot.clock)
            outcome = reverter.revert(full_id, "sentry-bot revert")
            detail = reverter.last_detail
        finally:
            bot.close()
        typer.echo(f"run {full_id[:8]}: {outcome}" + (f": {detail}" if detail else ""))
        if outcome == "failed":
            raise typer.Exit(1)

    _run(body)


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="Why (shown in status and refusals).")] = "paused",
) -> None:
    """Global pause: nothing executes (shadow previews still run) until `resume`."""

    def body() -> None:
        from bot.pipeline.guards import set_paused

        bot = _open_app()
        try:
            with bot.store.session() as session:
                set_paused(session, reason or "paused", bot.clock.now())
        finally:
            bot.close()
        typer.echo(f"paused: {reason}")

    _run(body)


@app.command()
def resume() -> None:
    """Lift the global pause."""

    def body() -> None:
        from bot.pipeline.guards import set_paused

        bot = _open_app()
        try:
            with bot.store.session() as session:
                set_paused(session, None, bot.clock.now())
        finally:
            bot.close()
        typer.echo("resumed")

    _run(body)


@app.command()
def backtest(
    file: Annotated[Path, typer.Argument(help="Replay/export JSON (list endpoint shape).")],
) -> None:
    """Replay an export through the matchers: which playbooks would fire, how often."""

    def body() -> None:
        from bot.interfaces.wiring import load_matcher
        from bot.pipeline.sources import ReplaySource
        from bot.playbooks.backtest import backtest as run_backtest

        settings = _settings()
        _setup_logging("WARNING")
        bot = App.from_settings(settings)
        matcher, _ = load_matcher(bot)
        for err in bot.playbook_errors:
            typer.echo(f"playbook not loaded: {err}", err=True)
        source = ReplaySource(file)
        report = run_backtest(matcher, ((i, i.latest_event) for i in source.issues))
        typer.echo(report.render())

    _run(body)


@app.command()
def run() -> None:
    """The scheduler: poll, lifecycle, fix links and outbox at their intervals, until SIGTERM."""

    def body() -> None:
        from bot.interfaces.scheduler import run_scheduler

        bot = _open_app()
        # APScheduler's INFO lines ("Adding job tentatively", "Added job", "Running
        # job") repeat what our own scheduler logs once, with the job's outcome.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        _init_selfmon(bot)
        try:
            code = run_scheduler(bot)
        finally:
            bot.close()
        raise typer.Exit(code)

    _run(body)


def _init_selfmon(bot: App) -> None:
    """Report the bot's own errors to Sentry when BOT_SENTRY_DSN is set (scrubbed)."""
    from bot import __version__
    from bot.adapters.selfmon import init_selfmon, secrets_from_settings

    dsn = bot.settings.bot_sentry_dsn
    init_selfmon(
        dsn.get_secret_value() if dsn else None,
        release=f"sentry-remediation-bot@{__version__}",
        environment=bot.settings.bot_environment,
        secrets=secrets_from_settings(bot.settings),
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
) -> None:
    """HTTP (Sentry webhooks, /metrics, /healthz, /readyz) and the scheduler, one process."""

    def body() -> None:
        from bot import __version__
        from bot.adapters.selfmon import init_selfmon, secrets_from_settings
        from bot.interfaces.http.server import serve as run_server

        bot = _open_app()
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
        if bot.settings.sentry_client_secret is None:
            logging.getLogger("bot.serve").warning(
                "SENTRY_CLIENT_SECRET is not set: /hooks/sentry answers 503"
            )
        dsn = bot.settings.bot_sentry_dsn
        init_selfmon(
            dsn.get_secret_value() if dsn else None,
            release=f"sentry-remediation-bot@{__version__}",
            environment=bot.settings.bot_environment,
            secrets=secrets_from_settings(bot.settings),
        )
        try:
            code = run_server(bot, host=host, port=port, log_level=bot.settings.log_level)
        finally:
            bot.close()
        raise typer.Exit(code)

    _run(body)


@app.command()
def health() -> None:
    """Exit 0 when a scheduler heartbeat is fresh (container healthcheck), else 1."""

    def body() -> None:
        from datetime import timedelta

        from bot.interfaces.scheduler import health_status

        settings = _settings()
        bot = App.from_settings(settings)
        try:
            max_age = timedelta(
                seconds=max(
                    120, 4 * settings.outbox_interval_seconds, 2 * settings.poll_interval_seconds
                )
            )
            ok, message = health_status(
                bot.store, bot.clock, max_age, instance=settings.instance_id
            )
        finally:
            bot.close()
        typer.echo(message)
        if not ok:
            raise typer.Exit(1)

    _run(body)


@app.command()
def report(
    key: Annotated[str, typer.Argument(help="Issue id, short id or incident id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead.")
    ] = None,
) -> None:
    """A Markdown post-incident report from what the bot recorded."""

    def body() -> None:
        from bot.triage.report import collect_report_facts, render_report

        bot = _open_app()
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

    _run(body)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

"""The ``sentry-bot`` command line (typer). The only place settings are read.

Exit status: 0 ok, 1 a command failed (or validation found problems), 2 bad
configuration or usage. Configuration problems print one line each, no traceback.

This module declares the commands and their options only; their bodies live in
:mod:`bot.interfaces.commands`, imported when a command runs, so ``--help`` and a
typo answer without loading the database layer or the HTTP clients.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, TypeVar

import typer

from bot.errors import BotError, ConfigError
from bot.failpoints import FAILPOINTS
from bot.interfaces.playbooks_cli import app as playbooks_app
from bot.safety.redact import mask_dsn

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


def _commands() -> ModuleType:
    """The command bodies. Imported here, not at the top, to keep CLI start-up fast:
    they pull in SQLAlchemy, httpx and the whole pipeline, which ``--help`` never needs."""
    from bot.interfaces import commands  # lazy on purpose: keeps `--help` fast

    return commands


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning bot errors into clean messages and exit codes."""
    try:
        return fn()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2) from None
    except BotError as exc:
        typer.echo(f"error: {mask_dsn(str(exc))}", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the state-store migrations (also done automatically on start)."""
    _run(lambda: _commands().db_upgrade(_state.config))


@debug_app.command("failpoints")
def debug_failpoints() -> None:
    """Print every failpoint name (arm one with BOT_FAILPOINT=<name>), one per line."""
    for name in FAILPOINTS:
        typer.echo(name)


@app.command()
def cycle(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """One pass: poll Sentry, track, match, plan, execute per mode, verify, record."""
    _run(lambda: _commands().cycle(_state.config, as_json=as_json))


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
    _run(
        lambda: _commands().status(
            _state.config,
            issue,
            as_json=as_json,
            team=team,
            severity=severity,
            limit=limit,
            cursor=cursor,
        )
    )


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
    _run(lambda: _commands().demo(state, as_json=as_json))


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix) from `status`.")],
    by: Annotated[str, typer.Option(help="Who approves (journaled).")] = "",
) -> None:
    """Approve a run waiting in approval mode, then execute and verify it."""
    _run(lambda: _commands().approve(_state.config, run_id, by))


@app.command()
def revert(
    run_id: Annotated[str, typer.Argument(help="A set_flag run id (or a unique prefix).")],
) -> None:
    """Put back the value a set_flag run set (only if it still holds the bot's value)."""
    _run(lambda: _commands().revert(_state.config, run_id))


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="Why (shown in status and refusals).")] = "paused",
) -> None:
    """Global pause: nothing executes (shadow previews still run) until `resume`."""
    _run(lambda: _commands().pause(_state.config, reason))


@app.command()
def resume() -> None:
    """Lift the global pause."""
    _run(lambda: _commands().resume(_state.config))


@app.command()
def backtest(
    file: Annotated[Path, typer.Argument(help="Replay/export JSON (list endpoint shape).")],
) -> None:
    """Replay an export through the matchers: which playbooks would fire, how often."""
    _run(lambda: _commands().backtest(_state.config, file))


@app.command()
def run() -> None:
    """The scheduler: poll, lifecycle, fix links and outbox at their intervals, until SIGTERM."""
    _run(lambda: _commands().run(_state.config))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
) -> None:
    """HTTP (Sentry webhooks, /metrics, /healthz, /readyz) and the scheduler, one process."""
    _run(lambda: _commands().serve(_state.config, host, port))


@app.command()
def health() -> None:
    """Exit 0 when a scheduler heartbeat is fresh (container healthcheck), else 1."""
    _run(lambda: _commands().health(_state.config))


@app.command()
def report(
    key: Annotated[str, typer.Argument(help="Issue id, short id or incident id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead.")
    ] = None,
) -> None:
    """A Markdown post-incident report from what the bot recorded."""
    _run(lambda: _commands().report(_state.config, key, output))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

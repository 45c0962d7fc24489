"""``sentry-bot demo``: the whole loop, for real, on embedded parts (see :mod:`.story`).

The bundled files live beside this module so the demo runs from any directory:
``seed_incidents.json`` (the nine seed incidents), ``targets.sql`` (the same file as
``examples/targets.sql``) and ``playbooks/`` (the same files as the top-level
``playbooks/``; a test keeps the copies identical).
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path

from bot.demo.render import as_json as to_json
from bot.demo.render import render
from bot.demo.story import run_story

DEFAULT_STATE = Path(".state") / "demo.db"


def follow_up_commands(state: Path) -> list[str]:
    """The commands that show the demo's state, runnable from any directory."""
    argv0 = Path(sys.argv[0])
    exe = str(argv0.resolve()) if argv0.name == "sentry-bot" else "sentry-bot"
    prefix = f"BOT_DATABASE_URL={shlex.quote(f'sqlite:///{state}')} {shlex.quote(exe)}"
    return [
        f"{prefix} status",
        f"{prefix} status BLUE-BANDED-BEE-42",
        f"{prefix} report BLUE-BANDED-BEE-42",
    ]


def run_demo(state: Path | None = None, *, as_json: bool = False) -> str:
    """Run the story and return its output (text, or one JSON object)."""
    path = (state or DEFAULT_STATE).expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="sentry-bot-demo-") as work:
        story = run_story(path, Path(work))
    commands = follow_up_commands(path)
    if as_json:
        return json.dumps(to_json(story, commands), indent=2, default=str)
    return render(story, commands)


__all__ = ["DEFAULT_STATE", "follow_up_commands", "run_demo"]

"""README's commands table lists every command the CLI has (and no command it lacks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from bot.interfaces.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
GROUPS = ("playbooks", "db", "debug")


def _cli_commands() -> set[str]:
    """Every leaf command path, e.g. ``status``, ``playbooks validate``, ``db upgrade``."""
    out: set[str] = set()

    def walk(cmd: Any, prefix: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out.add(prefix)

    walk(typer.main.get_command(app), "")
    return out


def _readme_commands() -> set[str]:
    """Commands named in the first column of README's table: `sentry-bot X …` and, after
    a group (`sentry-bot playbooks validate` / `schema`), the group's further verbs."""
    table = README.read_text().split("## Commands", 1)[1].split("\n\n", 2)[1]
    found: set[str] = set()
    for cell in re.findall(r"^\| (.+?) \| ", table, flags=re.M):
        group = None
        for code in re.findall(r"`([^`]+)`", cell):
            words = [w for w in code.split() if re.fullmatch(r"[a-z][a-z-]*", w)]
            if words[:1] == ["sentry-bot"]:
                words = words[1:]
                group = words[0] if words[0] in GROUPS else None
                found.add(" ".join(words[:2] if group else words[:1]))
            elif words:
                found.add(f"{group} {words[0]}" if group else words[0])
    return found


def test_every_command_is_in_the_readme_table() -> None:
    assert _readme_commands() == _cli_commands()

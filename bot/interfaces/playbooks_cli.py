"""``sentry-bot playbooks validate|schema|list``: a typer sub-app.

The commands use the built-in action registry. A caller (tests, an embedding CLI) may
inject another action catalog through the click context object: ``obj={"actions":
{name: action}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer
from pydantic import BaseModel, Field, create_model

from bot.actions.base import Action
from bot.playbooks.backtest import format_table
from bot.playbooks.loader import RegistryActions, load_playbooks
from bot.playbooks.models import ActionSpec, Playbook

app = typer.Typer(help="Validate, describe and list playbooks.", no_args_is_help=True)

DirArg = Annotated[Path, typer.Argument(help="playbooks directory", show_default=True)]


def _actions(ctx: typer.Context) -> Mapping[str, Action] | None:
    obj = ctx.find_root().obj
    if isinstance(obj, Mapping) and isinstance(obj.get("actions"), Mapping):
        actions: Mapping[str, Action] = obj["actions"]
        return actions
    return None


@app.command()
def validate(ctx: typer.Context, dir: DirArg = Path("playbooks")) -> None:
    """Report every error in every playbook file; exit 1 if there is any."""
    result = load_playbooks(dir, actions=_actions(ctx))
    for error in result.errors:
        typer.echo(str(error))
    if result.errors:
        files = len({e.file for e in result.errors})
        typer.echo(f"{len(result.errors)} error(s) in {files} file(s)")
        raise typer.Exit(1)
    typer.echo(f"OK: {len(result.playbooks)} playbook(s) valid in {dir}")


@app.command()
def schema(ctx: typer.Context) -> None:
    """Print the JSON Schema of a playbook file (for editor autocompletion)."""
    typer.echo(json.dumps(playbook_json_schema(_actions(ctx)), indent=2))


@app.command("list")
def list_(ctx: typer.Context, dir: DirArg = Path("playbooks")) -> None:
    """Show the valid playbooks in evaluation order; exit 1 if some files are invalid."""
    result = load_playbooks(dir, actions=_actions(ctx))
    ordered = sorted(result.playbooks, key=lambda p: (-p.priority, p.id))
    rows = [
        [
            pb.id,
            str(pb.priority),
            match_summary(pb),
            pb.action.type,
            pb.action.target or "-",
            pb.guards.mode,
        ]
        for pb in ordered
    ]
    headers = ["id", "priority", "match", "action", "target", "mode"]
    typer.echo(format_table(headers, rows))
    if result.errors:
        typer.echo(f"{len(result.errors)} error(s): run `playbooks validate {dir}`")
        raise typer.Exit(1)


def match_summary(pb: Playbook, width: int = 60) -> str:
    """A one-line human summary of a playbook's match rules, truncated to ``width``."""
    m = pb.match
    parts = [
        f"{name}~/{rx}/"
        for name, rx in (("title", m.title), ("message", m.message), ("culprit", m.culprit))
        if rx is not None
    ]
    parts += [
        f"{name}={','.join(v)}"
        for name, v in (("project", m.project), ("level", m.level), ("env", m.environment))
        if v is not None
    ]
    parts += [f"tag:{k}~/{v}/" for k, v in m.tags.items()]
    if m.min_events:
        parts.append(f"events>={m.min_events}")
    if m.min_users:
        parts.append(f"users>={m.min_users}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def playbook_json_schema(actions: Mapping[str, Action] | None = None) -> dict[str, Any]:
    """JSON Schema of a playbook file. ``action`` is a union discriminated on ``type``,
    with each action's own settings schema; an action whose module cannot be imported
    falls back to a free-form settings object."""
    catalog = RegistryActions() if actions is None else actions
    variants: list[type[BaseModel]] = []
    for name in sorted(catalog):
        settings: Any
        try:
            settings = catalog[name].settings_model
        except Exception:  # a broken action module still gets a (generic) schema entry
            settings = dict[str, Any]
        camel = "".join(part.title() for part in name.split("_"))
        tag: Any = Literal[name]
        variants.append(
            create_model(
                f"{camel}Action",
                __base__=ActionSpec,
                type=(tag, ...),
                settings=(settings, Field(default_factory=dict)),
            )
        )
    action_type: Any
    if not variants:
        action_type = ActionSpec
    elif len(variants) == 1:
        action_type = variants[0]
    else:
        action_type = Annotated[Union[tuple(variants)], Field(discriminator="type")]  # noqa: UP007
    model = create_model("Playbook", __base__=Playbook, action=(action_type, ...))
    out = model.model_json_schema(by_alias=True)
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return out

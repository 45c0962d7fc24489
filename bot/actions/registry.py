"""Action name → implementation. Modules are imported lazily so a broken optional
action cannot stop the bot from loading the others."""

from __future__ import annotations

import importlib

from bot.actions.base import Action
from bot.errors import PlaybookError

_MODULES: dict[str, str] = {
    "requeue_stuck_tasks": "bot.actions.requeue",
    "release_advisory_locks": "bot.actions.advisory_locks",
    "reclassify_failures": "bot.actions.reclassify",
    "fail_orphaned_tasks": "bot.actions.orphaned",
    "notify_only": "bot.actions.notify_only",
    "retention_cleanup": "bot.actions.retention",
    "set_flag": "bot.actions.set_flag",
}


def action_names() -> list[str]:
    return sorted(_MODULES)


def get_action(name: str) -> Action:
    """Return the action registered as ``name`` (each module exposes ``ACTION``)."""
    module_name = _MODULES.get(name)
    if module_name is None:
        raise PlaybookError(
            f"unknown action type {name!r}; expected one of: {', '.join(action_names())}"
        )
    module = importlib.import_module(module_name)
    action: Action = module.ACTION
    return action

"""The loader and schema against the REAL action registry (skipped for an action whose
module does not exist yet), so the fakes used elsewhere cannot drift from it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bot.actions import registry
from bot.interfaces.playbooks_cli import playbook_json_schema
from bot.playbooks import load_playbooks
from bot.playbooks.loader import RegistryActions, parse_playbook
from tests.fixtures.playbooks.factories import FIXTURES, fake_actions


def _require(*names: str) -> None:
    for name in names:
        pytest.importorskip(registry._MODULES[name])


def test_fixture_playbooks_are_valid_for_the_real_actions() -> None:
    _require("requeue_stuck_tasks", "release_advisory_locks", "notify_only")
    result = load_playbooks(FIXTURES)
    assert result.ok, [str(e) for e in result.errors]
    stuck = next(pb for pb in result.playbooks if pb.id == "stuck-tasks-requeue")
    settings = stuck.action.parsed_settings
    assert type(settings) is registry.get_action("requeue_stuck_tasks").settings_model


def test_real_settings_model_rejects_a_hostile_table_name_at_load() -> None:
    _require("requeue_stuck_tasks")
    text = (
        (FIXTURES / "stuck-tasks.yaml")
        .read_text()
        .replace("table: tasks", 'table: "tasks; DROP TABLE x"')
    )
    pb, errors, _ = parse_playbook(text, Path("stuck.yaml"))
    assert pb is None
    assert [(e.field, e.line) for e in errors] == [("action.settings.table", 20)]


@pytest.mark.parametrize("name", registry.action_names())
def test_fake_actions_honour_the_real_contract(name: str) -> None:
    module = registry._MODULES[name]
    try:
        importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} not written yet")
    real = RegistryActions()[name]
    assert isinstance(real.needs_target, bool)
    assert isinstance(real.accepted_params, frozenset)
    fake = fake_actions().get(name)
    if fake is not None:
        assert fake.needs_target == real.needs_target
        assert fake.accepted_params == real.accepted_params


def test_schema_from_the_real_registry_has_every_action() -> None:
    schema = playbook_json_schema()
    mapping = schema["properties"]["action"]["discriminator"]["mapping"]
    assert set(mapping) == set(registry.action_names())

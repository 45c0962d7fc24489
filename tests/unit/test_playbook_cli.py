"""``playbooks validate|schema|list`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bot.interfaces.playbooks_cli import app, playbook_json_schema
from tests.fixtures.playbooks.factories import FIXTURES, fake_actions

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), obj={"actions": fake_actions()})
    return result.exit_code, result.output


def test_validate_ok_reports_the_count() -> None:
    code, out = invoke("validate", str(FIXTURES))
    assert code == 0, out
    assert out.strip() == f"OK: 3 playbook(s) valid in {FIXTURES}"


def test_validate_reports_every_error_in_every_file_and_exits_1(tmp_path: Path) -> None:
    for name in ("stuck-tasks.yaml", "job-removed.yaml"):
        (tmp_path / name).write_text((FIXTURES / name).read_text())
    stuck = tmp_path / "stuck-tasks.yaml"
    stuck.write_text(stuck.read_text().replace("priority: 100", "priorty: 100"))
    (tmp_path / "bad.yml").write_text("id: bad\npriority: 1\nmatch: {title: '(('}\n")
    code, out = invoke("validate", str(tmp_path))
    assert code == 1
    assert "missing required field 'priority'" not in out  # the typo explains it
    assert f"{stuck}:4: priorty: unknown field 'priorty' — did you mean 'priority'?" in out
    assert f"{tmp_path / 'bad.yml'}:3: match.title: invalid regex" in out
    assert f"{tmp_path / 'bad.yml'}:1: action: missing required field 'action'" in out
    assert out.strip().splitlines()[-1] == "3 error(s) in 2 file(s)"


def test_validate_missing_directory_exits_1(tmp_path: Path) -> None:
    code, out = invoke("validate", str(tmp_path / "missing"))
    assert code == 1 and "not found" in out


def test_list_shows_a_table_in_priority_order() -> None:
    code, out = invoke("list", str(FIXTURES))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "priority", "match", "action", "target", "mode"]
    ids = [line.split()[0] for line in lines[2:]]
    assert ids == ["stuck-tasks-requeue", "advisory-lock-release", "job-removed-notify"]
    stuck = lines[2]
    assert "title~/Found \\d+ stuck tasks/" in stuck
    assert stuck.split()[-3:] == ["requeue_stuck_tasks", "jobs_db", "approval"]
    assert lines[4].split()[-3:] == ["notify_only", "-", "shadow"]


def test_list_with_errors_exits_1_and_points_to_validate(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("id: x\n")
    code, out = invoke("list", str(tmp_path))
    assert code == 1
    assert "playbooks validate" in out


def test_schema_prints_json_schema_with_action_union() -> None:
    code, out = invoke("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "Playbook"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "priority", "match", "action"}
    action = schema["properties"]["action"]
    assert action["discriminator"]["propertyName"] == "type"
    assert set(action["discriminator"]["mapping"]) == set(fake_actions())
    requeue = schema["$defs"]["RequeueStuckTasksAction"]
    settings_ref = requeue["properties"]["settings"]["$ref"].rsplit("/", 1)[-1]
    assert "table" in schema["$defs"][settings_ref]["properties"]
    guards = schema["$defs"]["Guards"]["properties"]
    assert guards["mode"]["default"] == "shadow"
    assert schema["$defs"]["ResolveSpec"]["properties"]["quiet_hours"]["default"] == 48
    assert "from" in schema["$defs"]["ExtractParam"]["properties"]


def test_schema_falls_back_to_a_generic_object_for_a_broken_action() -> None:
    class Catalog(dict[str, object]):
        def __getitem__(self, key: str) -> object:
            if key == "notify_only":
                raise ImportError("broken")
            return super().__getitem__(key)

    schema = playbook_json_schema(Catalog(fake_actions()))  # type: ignore[arg-type]
    notify = schema["$defs"]["NotifyOnlyAction"]["properties"]["settings"]
    assert notify["type"] == "object" and "$ref" not in notify

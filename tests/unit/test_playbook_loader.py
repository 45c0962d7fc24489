"""Loader: every error in every file, with file, line, field and a typo suggestion."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from bot.errors import PlaybookError
from bot.playbooks import LoadError, PlaybookLoadFailed, load_playbooks, load_playbooks_strict
from bot.playbooks.loader import parse_playbook
from tests.fixtures.playbooks.factories import FIXTURES, fake_actions

VALID = """\
id: stuck
priority: 100
match:
  title: "Found \\\\d+ stuck tasks"
extract:
  job_id:
    from: message
    regex: "job (?P<job_id>[0-9a-f-]{36})"
    type: uuid
action:
  type: requeue_stuck_tasks
  target: jobs_db
  settings:
    table: tasks
    mode: lease_timeout
    lease_column: updated_at
    timeout_seconds: 600
    scope: {job_id: job_id}
"""


def parse(text: str, actions: Any = None) -> list[LoadError]:
    pb, errors, _ = parse_playbook(
        textwrap.dedent(text), Path("pb.yaml"), actions=actions or fake_actions()
    )
    assert (pb is None) == bool(errors)
    return errors


def only(errors: list[LoadError]) -> LoadError:
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_fixture_directory_loads_every_playbook_with_defaults() -> None:
    result = load_playbooks(FIXTURES, actions=fake_actions())
    assert result.ok, [str(e) for e in result.errors]
    by_id = {pb.id: pb for pb in result.playbooks}
    assert set(by_id) == {"stuck-tasks-requeue", "advisory-lock-release", "job-removed-notify"}
    notify = by_id["job-removed-notify"]
    assert notify.guards.mode == "shadow"  # new playbooks are dry-run by default
    assert notify.resolve.quiet_hours == 48
    assert notify.resolve.in_commit is True
    assert notify.match.level == ["info"]  # a single value is accepted as a list
    stuck = by_id["stuck-tasks-requeue"]
    assert stuck.guards.mode == "approval"
    assert stuck.guards.limits().max_rows == 50
    assert stuck.action.parsed_settings.model_dump()["table"] == "tasks"
    assert by_id["advisory-lock-release"].resolve.quiet_hours == 24


def test_valid_text_has_no_errors() -> None:
    assert parse(VALID) == []


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "suggestion"),
    [
        ("priority: 100", "priorty: 100", 2, "priorty", "priority"),
        ('  title: "Found', '  titel: "Found', 4, "match.titel", "title"),
        ("    type: uuid", "    typ: uuid", 9, "extract.job_id.typ", "type"),
        ("    table: tasks", "    tabel: tasks", 14, "action.settings.tabel", "table"),
        ("  target: jobs_db", "  targte: jobs_db", 12, "action.targte", "target"),
    ],
)
def test_typo_names_line_field_and_closest_key(
    old: str, new: str, line: int, field: str, suggestion: str
) -> None:
    # One mistake, one error: the "missing" twin of a recognised typo is not reported.
    typo = only(parse(VALID.replace(old, new)))
    assert (typo.line, typo.field) == (line, field)
    assert typo.message.endswith(f"did you mean {suggestion!r}?")
    assert str(typo).startswith(f"pb.yaml:{line}: {field}: unknown field")


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    error = only(parse(VALID + "zzzz: 1\n"))
    assert error.message == "unknown field 'zzzz'"
    assert error.line == 19


def test_guards_typo_in_nested_block() -> None:
    error = only(parse(VALID + "guards:\n  mdoe: auto\n"))
    assert (error.line, error.field) == (20, "guards.mdoe")
    assert "did you mean 'mode'?" in error.message


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ('"Found \\\\d+ stuck tasks"', '"Found (unclosed"', 4, "match.title"),
        ('"job (?P<job_id>', '"job (?P<job_id', 8, "extract.job_id.regex"),
    ],
)
def test_bad_regex_names_file_line_field_and_re2_error(
    old: str, new: str, line: int, field: str
) -> None:
    error = only(parse(VALID.replace(old, new)))
    assert (error.file, error.line, error.field) == (Path("pb.yaml"), line, field)
    assert "invalid regex" in error.message
    assert "RE2" in error.message
    assert "missing )" in error.message or "invalid named capture group" in error.message


def test_bad_tag_regex_points_at_the_tag_line() -> None:
    error = only(parse(VALID.replace("match:\n", "match:\n  tags:\n    release: '[a-'\n")))
    assert (error.line, error.field) == (5, "match.tags.release")
    assert "missing ]" in error.message  # RE2's wording


def test_regex_without_the_named_group_is_rejected() -> None:
    error = only(parse(VALID.replace("(?P<job_id>", "(?P<jobid>")))
    assert (error.line, error.field) == (8, "extract.job_id.regex")
    assert "(?P<job_id>" in error.message


def test_missing_priority_is_reported_at_the_document() -> None:
    error = only(parse(VALID.replace("priority: 100\n", "")))
    assert error.field == "priority"
    assert error.message == "missing required field 'priority'"


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        ("target: jobs_db", "target: jobs-db; DROP", "action.target", "not an identifier"),
        ("table: tasks", 'table: "tasks; DROP TABLE x"', "action.settings.table", "identifier"),
        ("scope: {job_id: job_id}", 'scope: {"a b": job_id}', "action.settings.scope", "ident"),
        ("type: requeue_stuck_tasks", "type: requeue_stuck_task", "action.type", "did you mean"),
        ("  target: jobs_db\n", "", "action", "needs a target"),
        ("type: uuid", "type: uuid\n    values: [a]", "extract.job_id", "only allowed with"),
        ("type: uuid", "type: float", "extract.job_id.type", "'uuid'"),
        ("from: message", "from: body", "extract.job_id.from", "unknown source"),
        ("scope: {job_id: job_id}", "scope: {job_id: other}", "extract.job_id", "not accept"),
    ],
)
def test_invalid_fields_are_located(old: str, new: str, field: str, needle: str) -> None:
    errors = parse(VALID.replace(old, new))
    assert errors, "expected a load error"
    assert any(e.field == field and needle in e.message for e in errors), [str(e) for e in errors]
    assert all(e.line is not None for e in errors)


def test_scope_param_must_be_extracted_and_required() -> None:
    optional = parse(VALID.replace("type: uuid", "type: uuid\n    required: false"))
    assert only(optional).field == "extract.job_id.required"
    missing = parse(VALID.replace("scope: {job_id: job_id}", "scope: {job_id: job}"))
    fields = {e.field for e in missing}
    assert {"extract.job_id", "action.settings.scope"} <= fields


def test_target_on_an_action_that_takes_none_is_an_error() -> None:
    text = "id: n\npriority: 1\nmatch: {level: error}\naction: {type: notify_only, target: db}\n"
    error = only(parse(text))
    assert (error.field, error.line) == ("action.target", 4)


def test_empty_match_is_refused() -> None:
    error = only(parse("id: n\npriority: 1\nmatch: {min_events: 3}\naction: {type: notify_only}\n"))
    assert error.field == "match"
    assert "every issue" in error.message


def test_duplicate_yaml_key_is_an_error() -> None:
    error = only(parse(VALID.replace("priority: 100\n", "priority: 100\npriority: 5\n")))
    assert (error.line, error.field, error.message) == (3, "priority", "duplicate key 'priority'")


def test_invalid_yaml_reports_the_line() -> None:
    error = only(parse(VALID.replace("  target: jobs_db", "  target: [jobs_db")))
    assert error.message.startswith("invalid YAML")
    assert error.line is not None and error.line >= 12


def test_non_mapping_document_is_an_error() -> None:
    assert "must be a YAML mapping" in only(parse("- a\n- b\n")).message


def test_unavailable_action_module_is_a_load_error_not_a_crash() -> None:
    class Broken(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise ModuleNotFoundError("No module named 'bot.actions.requeue'")

    error = only(parse(VALID, actions=Broken(fake_actions())))
    assert error.field == "action.type"
    assert "not available" in error.message


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_broken_files_never_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a-good.yaml", VALID)
    write(tmp_path, "b-typo.yaml", VALID.replace("id: stuck", "id: b").replace("prior", "pior"))
    write(tmp_path, "c-yaml.yml", "id: [unclosed\n")
    write(tmp_path, "d-regex.yaml", VALID.replace("id: stuck", "id: d").replace("\\\\d+", "(("))
    write(tmp_path, "notes.txt", "not a playbook")
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["stuck"]
    assert sorted({e.file.name for e in result.errors}) == [
        "b-typo.yaml",
        "c-yaml.yml",
        "d-regex.yaml",
    ]


def test_duplicate_ids_refuse_every_file_sharing_the_id(tmp_path: Path) -> None:
    first = write(tmp_path, "first.yaml", VALID)
    # The second copy allows more rows: it must not run either (issue #9).
    second = write(tmp_path, "second.yaml", VALID + "guards:\n  max_rows: 5000\n")
    other = write(tmp_path, "other.yaml", VALID.replace("id: stuck", "id: other"))
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["other"]
    errors = sorted(result.errors, key=lambda e: e.file)
    assert [(e.file, e.line, e.field) for e in errors] == [(first, 1, "id"), (second, 1, "id")]
    assert str(second) in errors[0].message and str(first) in errors[1].message
    assert all("duplicate playbook id 'stuck'" in e.message for e in errors)
    assert all("none of these files loads" in e.message for e in errors)
    assert other.exists()


def test_an_invalid_copy_still_blocks_its_duplicate(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID.replace("priority", "priorty"))
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert result.playbooks == []
    assert any("duplicate playbook id 'stuck'" in e.message for e in result.errors)


def test_strict_raises_a_playbook_error_listing_all(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID.replace("priority", "priorty"))
    write(tmp_path, "b.yaml", "id: b\n")
    with pytest.raises(PlaybookError) as info:
        load_playbooks_strict(tmp_path, actions=fake_actions())
    assert isinstance(info.value, PlaybookLoadFailed)
    assert {e.file.name for e in info.value.errors} == {"a.yaml", "b.yaml"}
    text = str(info.value)
    assert "a.yaml:2: priorty" in text and "b.yaml" in text


def test_strict_returns_playbooks_when_all_valid() -> None:
    assert len(load_playbooks_strict(FIXTURES, actions=fake_actions())) == 3


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    result = load_playbooks(tmp_path / "nope", actions=fake_actions())
    assert "not found" in only(result.errors).message

"""A playbook or config file cannot freeze the bot (issue #9, points 3-5).

- nested-quantifier regexes run in linear time (RE2), in playbooks and triage routing;
  a pattern RE2 cannot run (backreference, lookaround) is a load error with file, line;
- YAML is bounded: aliases/anchors, deep nesting and oversized files are refused before
  anything is built, and the good files in the same directory still load.

The timeouts below are guards, not measurements: without RE2 / the bounds these cases
do not finish at all (Python's ``re`` on ``^(\\w+\\s?)+$`` against 41 characters ran 45 s
before it was killed; billion laughs never finishes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bot.errors import ConfigError
from bot.playbooks.loader import load_playbooks
from bot.playbooks.matcher import Matcher
from bot.safety.linear_regex import RegexRefused, compile_linear
from bot.safety.safe_yaml import MAX_BYTES, BoundedYamlError, load_bounded
from bot.settings import load_settings
from bot.triage import TriageConfig, triage
from tests.fixtures.playbooks.factories import FIXTURES, fake_actions
from tests.unit.test_triage_seed_cases import make_issue

NESTED = r"^(\w+\s?)+$"
HOSTILE_TITLE = "a" * 40 + "!"  # 41 characters: catastrophic for a backtracking engine
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BILLION_LAUGHS = """\
id: lol
priority: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def good_playbook() -> str:
    return (FIXTURES / "stuck-tasks.yaml").read_text()


def with_title(regex: str) -> str:
    data = yaml.safe_load(good_playbook())
    data["id"] = "hostile-title"
    data["match"]["title"] = regex
    return yaml.safe_dump(data)


# --- linear-time regexes ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_nested_quantifier_playbook_regex_ends_instead_of_hanging(tmp_path: Path) -> None:
    (tmp_path / "hostile.yaml").write_text(with_title(NESTED))
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert result.errors == []  # RE2 accepts it: it is only slow for a backtracking engine
    matcher = Matcher(result.playbooks)
    for title in (HOSTILE_TITLE, "a " * 50_000 + "!"):
        issue = make_issue("HOSTILE-1", title)
        assert matcher.match(issue) is None
        assert matcher.wants_event(issue) is False
    # …and it still matches what it should.
    assert compile_linear(NESTED).search("all good words") is not None


@pytest.mark.timeout(60)
def test_the_nested_quantifier_in_triage_routing_ends_instead_of_hanging() -> None:
    config = TriageConfig.model_validate(
        {"routing": [{"name": "nested", "team": "Nobody", "title": NESTED, "culprit": NESTED}]}
    )
    issue = make_issue("HOSTILE-2", HOSTILE_TITLE, culprit="b" * 40 + "!")
    result = triage(issue, None, config, NOW)
    assert result.routing_rule is None
    fits = make_issue("FITS-1", "plain words only", culprit="handler words")
    assert triage(fits, None, config, NOW).team == "Nobody"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(?P<x>a)(?P=x)", "RE2"),  # backreference
        (r"(?=stuck)\w+", "lookahead"),
        (r"(?<=job )\w+", "lookbehind"),
        (r"(a)\1", "backreference"),
    ],
)
def test_a_pattern_re2_refuses_is_a_load_error_with_file_line_and_reason(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(with_title(pattern))
    (tmp_path / "good.yaml").write_text(good_playbook())
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["stuck-tasks-requeue"]
    [error] = result.errors
    assert error.file == bad and error.field == "match.title"
    title_line = next(
        n for n, text in enumerate(with_title(pattern).splitlines(), 1) if "title:" in text
    )
    assert error.line == title_line
    assert reason in error.message and "RE2" in error.message


def test_a_routing_pattern_re2_refuses_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="lookahead"):
        TriageConfig.model_validate({"routing": [{"name": "x", "team": "T", "title": "(?=a)"}]})
    with pytest.raises(RegexRefused):
        compile_linear("(?<!a)b")


def test_named_groups_and_case_flags_work_as_playbooks_write_them() -> None:
    found = compile_linear(r"job_id=(?P<job_id>[0-9a-f-]{36})").search(
        "Found 3 stuck tasks job_id=0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d."
    )
    assert found is not None and found.group("job_id") == "0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d"
    assert compile_linear("(?i)stripe").search("STRIPE card") is not None
    assert compile_linear("checkout", ignore_case=True).search("CheckOut") is not None


# --- bounded YAML ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_billion_laughs_is_refused_and_the_valid_playbooks_still_load(tmp_path: Path) -> None:
    (tmp_path / "a-lol.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "b-good.yaml").write_text(good_playbook())
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["stuck-tasks-requeue"]
    [error] = result.errors
    assert error.file.name == "a-lol.yaml" and error.line == 3
    assert "anchors" in error.message
    assert "a-lol.yaml:3" in str(error)


def test_a_lone_alias_is_refused_at_its_line() -> None:
    with pytest.raises(BoundedYamlError) as info:
        load_bounded("a: 1\nb: *x\n")
    assert info.value.line == 2 and "aliases" in info.value.problem


@pytest.mark.timeout(60)
def test_an_oversized_playbook_is_refused_without_being_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("id: big\npriority: 1\ndescription: |\n")
        line = "  " + "x" * 98 + "\n"
        for _ in range(MAX_BYTES // len(line) * 50):  # 50 MB
            f.write(line)
    (tmp_path / "good.yaml").write_text(good_playbook())
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["stuck-tasks-requeue"]
    [error] = result.errors
    assert error.file == big and "limit is 1,000,000" in error.message


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("id: deep\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "good.yaml").write_text(good_playbook())
    result = load_playbooks(tmp_path, actions=fake_actions())
    assert [pb.id for pb in result.playbooks] == ["stuck-tasks-requeue"]
    [error] = result.errors
    assert "nested deeper than" in error.message and error.line == 2


def test_the_config_file_is_bounded_too(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("sentry_org: acme\ntriage: &t {default_team: x}\nother: *t\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert f"{config}:2" in str(info.value) and "anchors" in str(info.value)

"""Typed extraction: truth tables per type, and hostile values never get through."""

from __future__ import annotations

from typing import Any

import pytest

from bot.playbooks.extract import (
    CompiledParam,
    ExtractFailure,
    Rejected,
    convert,
    extract_params,
    show,
)
from bot.playbooks.models import ExtractParam

HOSTILE = "'; DROP TABLE tasks; --"


def spec(type_: str, **extra: Any) -> ExtractParam:
    return ExtractParam.model_validate(
        {"from": "event", "regex": "(?P<v>.*)", "type": type_, **extra}
    )


@pytest.mark.parametrize(
    ("type_", "extra", "raw", "expected"),
    [
        (
            "uuid",
            {},
            "0BF5A3FC-4CAE-4D2B-9A61-2F1E0C9D8B7A",
            "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a",
        ),
        (
            "uuid",
            {},
            "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a",
            "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a",
        ),
        ("uuid", {}, "0bf5a3fc4cae4d2b9a612f1e0c9d8b7a", None),  # hyphenless: not canonical
        ("uuid", {}, "{0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a}", None),
        ("uuid", {}, "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7", None),
        ("uuid", {}, HOSTILE, None),
        ("int", {}, "42", 42),
        ("int", {}, "-7", -7),
        ("int", {"min": 1, "max": 10}, "1", 1),
        ("int", {"min": 1, "max": 10}, "10", 10),
        ("int", {"min": 1, "max": 10}, "0", None),
        ("int", {"min": 1, "max": 10}, "11", None),
        ("int", {}, "1e3", None),
        ("int", {}, " 42", None),
        ("int", {}, "9" * 19, None),  # beyond BIGINT-safe digits
        ("int", {}, HOSTILE, None),
        ("identifier", {}, "tasks", "tasks"),
        ("identifier", {}, "_Tasks_2", "_Tasks_2"),
        ("identifier", {}, "2tasks", None),
        ("identifier", {}, "public.tasks", None),
        ("identifier", {}, "a" * 63, "a" * 63),
        ("identifier", {}, "a" * 64, None),
        ("identifier", {}, HOSTILE, None),
        ("enum", {"values": ["postgres", "mongo"]}, "mongo", "mongo"),
        ("enum", {"values": ["postgres", "mongo"]}, "Mongo", None),
        ("enum", {"values": ["postgres", "mongo"]}, HOSTILE, None),
        ("string", {}, "worker-7", "worker-7"),
        ("string", {"max_length": 5}, "abcdef", None),
        ("string", {"max_length": 6}, "abcdef", "abcdef"),
        ("string", {"pattern": "[a-z]+-[0-9]+"}, "worker-7", "worker-7"),
        ("string", {"pattern": "[a-z]+-[0-9]+"}, "worker-7x", None),  # fullmatch, not search
        ("string", {"pattern": "[a-z]+-[0-9]+"}, HOSTILE, None),
    ],
)
def test_convert_truth_table(type_: str, extra: dict[str, Any], raw: str, expected: Any) -> None:
    if expected is None:
        with pytest.raises(Rejected):
            convert(spec(type_, **extra), raw)
    else:
        assert convert(spec(type_, **extra), raw) == expected


def test_show_escapes_and_truncates_untrusted_text() -> None:
    assert show("a\nb") == "'a\\nb'"
    long = show("x" * 1000)
    assert long.startswith("'" + "x" * 40 + "'")
    assert "+960 chars" in long
    assert len(long) < 70


def params(**specs: dict[str, Any]) -> dict[str, CompiledParam]:
    return {n: CompiledParam.build(n, ExtractParam.model_validate(s)) for n, s in specs.items()}


JOB = {"from": "message", "regex": "job (?P<job_id>.+)", "type": "uuid"}
SHARD = {"from": "tag:shard", "regex": "(?P<shard>\\d+)", "type": "int", "required": False}


def texts(mapping: dict[str, str]) -> Any:
    return mapping.get


def test_extracts_typed_values_from_their_sources() -> None:
    got = extract_params(
        params(job_id=JOB, shard=SHARD),
        texts({"message": "for job 0BF5A3FC-4CAE-4D2B-9A61-2F1E0C9D8B7A", "tag:shard": "12"}),
    )
    assert got == {"job_id": "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a", "shard": 12}


def test_optional_param_absent_is_left_out() -> None:
    got = extract_params(
        params(job_id=JOB, shard=SHARD),
        texts({"message": "job 0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a"}),
    )
    assert got == {"job_id": "0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a"}


def test_required_param_not_found_is_a_failure() -> None:
    got = extract_params(params(job_id=JOB), texts({"message": "no id here"}))
    assert isinstance(got, ExtractFailure)
    assert got.param == "job_id" and "found nothing in message" in got.reason


def test_hostile_value_is_a_failure_with_an_escaped_reason() -> None:
    got = extract_params(params(job_id=JOB), texts({"message": f"job {HOSTILE}"}))
    assert isinstance(got, ExtractFailure)
    assert "not a uuid" in got.reason and "DROP TABLE" in got.reason
    assert got.reason.endswith(repr(HOSTILE))  # shown through repr, never raw


def test_optional_param_with_a_bad_value_still_rejects() -> None:
    # required: false means "may be absent", not "may be anything".
    bad = dict(SHARD, regex="(?P<shard>.+)")
    got = extract_params(
        params(job_id=JOB, shard=bad),
        texts({"message": "job 0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a", "tag:shard": HOSTILE}),
    )
    assert isinstance(got, ExtractFailure) and got.param == "shard"


def test_explicit_group_name() -> None:
    s = {"from": "title", "regex": "lock (?P<k>\\d+)", "group": "k", "type": "int"}
    assert extract_params(params(lock_key=s), texts({"title": "lock 20260417"})) == {
        "lock_key": 20260417
    }


def test_regex_sees_only_the_first_8_kib() -> None:
    text = "x" * 9000 + " job 0bf5a3fc-4cae-4d2b-9a61-2f1e0c9d8b7a"
    got = extract_params(params(job_id=JOB), texts({"message": text}))
    assert isinstance(got, ExtractFailure)

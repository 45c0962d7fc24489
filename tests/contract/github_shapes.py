"""Generate ``bot/testing/github_shapes.py`` from GitHub's OpenAPI description.

FakeGitHub's answers must carry every field GitHub's description marks required (PR
``head``/``base.repo``, full user objects, search items…). This writes, for each
response the fake gives, a skeleton with every required field (recursively) set to a
neutral value of the right type; the fake lays its real values over it. A titled
schema that recurs (``Simple User``, ``Repository``…) is written once as its own
constant and referenced, so the module stays short. Run again when
``@octokit/openapi`` is upgraded::

    .venv/bin/python -m tests.contract.github_shapes
"""

from __future__ import annotations

import json
import pprint
import re
from collections import Counter
from pathlib import Path
from typing import Any

from tests.contract.specs import GITHUB_SPEC, ROOT

OUT = ROOT / "bot" / "testing" / "github_shapes.py"

#: name in the module -> (path, method, status, take the array's item)
SHAPES = {
    "SEARCH_ISSUE_ITEM": ("/search/issues", "get", "200", "items"),
    "SEARCH_COMMIT_ITEM": ("/search/commits", "get", "200", "items"),
    "PULL_REQUEST": ("/repos/{owner}/{repo}/pulls/{pull_number}", "get", "200", None),
    "COMMIT": ("/repos/{owner}/{repo}/commits/{ref}", "get", "200", None),
    "ISSUE_COMMENT": ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "get", "200", None),
}


class Titled(dict[str, Any]):
    """An object skeleton from a schema with a ``title`` (a candidate for hoisting)."""

    def __init__(self, title: str, value: dict[str, Any]) -> None:
        super().__init__(value)
        self.title = title


class Ref:
    """Stands for a hoisted constant in the output; its repr is the constant's name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def skeleton(schema: dict[str, Any]) -> Any:
    """A value valid for ``schema`` using only required fields and neutral values."""
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = skeleton(part)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return skeleton(options[0])
    if schema.get("nullable") and schema.get("type") != "object":
        return None
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        if schema.get("nullable"):
            return None
        props = schema.get("properties", {})
        value = {name: skeleton(props.get(name, {})) for name in schema.get("required", [])}
        return Titled(schema["title"], value) if schema.get("title") else value
    if kind == "array":
        return []
    if kind == "integer" or kind == "number":
        return 0
    if kind == "boolean":
        return False
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "uri":
        return "https://api.github.com/"
    if fmt == "email":
        return "noreply@github.com"
    return ""


def _key(value: Titled) -> tuple[str, str]:
    return value.title, json.dumps(value, sort_keys=True, default=repr)


def _walk(value: Any) -> list[Titled]:
    """Every titled object inside ``value`` (not ``value`` itself), outermost first."""
    found: list[Titled] = []
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, Titled):
                found.append(item)
            found += _walk(item)
    return found


def hoist(shapes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(shared constants, shapes) where each titled object seen twice is a :class:`Ref`."""
    counts = Counter(_key(t) for shape in shapes.values() for t in _walk(shape))
    names: dict[tuple[str, str], str] = {}
    shared: dict[str, Any] = {}

    def replace(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {k: replace(v) for k, v in value.items()}
        if isinstance(value, Titled) and counts[_key(value)] > 1:
            key = _key(value)
            if key not in names:
                name = re.sub(r"\W+", "_", value.title).strip("_").upper()
                while name in shared or name in shapes:
                    name += "_"
                names[key] = name
                shared[name] = out
            return Ref(names[key])
        return out

    top = {name: {k: replace(v) for k, v in shape.items()} for name, shape in shapes.items()}
    return shared, top


def main() -> None:
    spec = json.loads(Path(GITHUB_SPEC).read_text(encoding="utf-8"))
    shapes: dict[str, Any] = {}
    for name, (path, method, status, items) in SHAPES.items():
        schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]
        schema = schema["schema"]
        if items:
            schema = schema["properties"][items]["items"]
        shapes[name] = skeleton(schema)
    shared, top = hoist(shapes)
    lines = [
        '"""Skeletons of GitHub\'s responses: every required field, neutral values.',
        "",
        "Generated by ``tests/contract/github_shapes.py`` from @octokit/openapi",
        "``generated/api.github.com.deref.json``; FakeGitHub lays its values over these.",
        "A schema that recurs (by title) is one constant, referenced where it occurs.",
        '"""',
        "",
        "from bot.json_types import JsonObject",
        "",
    ]
    # hoist() records a constant after those inside it, so each is defined before use.
    for name, value in [*shared.items(), *top.items()]:
        text = pprint.pformat(value, width=88, sort_dicts=True)
        lines += [f"{name}: JsonObject = {text}", ""]
    OUT.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()

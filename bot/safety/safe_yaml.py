"""Bounded YAML for the files the bot reads (playbooks, the ``--config`` file).

PyYAML's safe loader still expands what the file asks for: nine nested levels of
anchors and aliases ("billion laughs") make a few hundred bytes describe 10^9 nodes, and
anything that walks the result (validation, the duplicate-key check) never finishes;
deep nesting overflows the recursion limit; a 50 MB file is parsed for 20 s. So, before
any Python object is built:

- a file larger than :data:`MAX_BYTES` is refused without parsing;
- anchors and aliases are refused (our formats never need them), at their line;
- nesting deeper than :data:`MAX_DEPTH` and more than :data:`MAX_NODES` nodes are refused.

Errors are :class:`BoundedYamlError` with the 1-based line, so callers report
``file:line: reason`` like any other YAML error.
"""

from __future__ import annotations

import yaml

from bot.json_types import JsonValue

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000


class BoundedYamlError(yaml.YAMLError):
    """The YAML text exceeds a bound (size, alias, depth, node count)."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}" if self.line else self.problem


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses anchors/aliases, deep nesting, huge graphs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            raise BoundedYamlError("aliases (*name) are not allowed in this file", line)
        if getattr(event, "anchor", None) is not None:
            raise BoundedYamlError("anchors (&name) are not allowed in this file", line)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise BoundedYamlError(f"more than {MAX_NODES} YAML nodes", line)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise BoundedYamlError(f"nested deeper than {MAX_DEPTH} levels", line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def check_size(size: int) -> None:
    """Raise :class:`BoundedYamlError` if a file of ``size`` bytes is too large to read."""
    if size > MAX_BYTES:
        raise BoundedYamlError(f"file is {size:,} bytes; the limit is {MAX_BYTES:,}", None)


def compose_bounded(text: str) -> tuple[yaml.Node | None, JsonValue]:
    """Parse one YAML document within the bounds: (root node, constructed data).

    Raises :class:`BoundedYamlError` for a bound, ``yaml.YAMLError`` for bad syntax.
    """
    check_size(len(text.encode("utf-8", "surrogatepass")))
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def load_bounded(text: str) -> JsonValue:
    """Like ``yaml.safe_load`` within the bounds (see :func:`compose_bounded`)."""
    return compose_bounded(text)[1]

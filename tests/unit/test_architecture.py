"""The package's shape, checked: the layout rules of docs/architecture.md (issue #11).

Each rule is measured on the source with :mod:`ast`, so a change that breaks one fails
here with the file and line, not in a reviewer's memory:

- no module over 450 lines; ``Any`` on fewer than 80 lines (raw JSON uses the named
  aliases of ``bot/json_types.py``);
- function-local imports of bot modules: fewer than 5, each with a comment saying why
  (only to keep CLI start-up fast); none under ``if TYPE_CHECKING:``;
- no import cycle between bot modules (module-level imports);
- the pipeline never reaches up: ``bot.pipeline`` imports neither the composition root
  (``bot.interfaces``) nor an adapter nor a fake;
- production code never imports ``bot.testing`` (the demo, which runs on fakes, aside);
- only adapters (and the HTTP interface, and the fakes of HTTP services) import
  httpx, PyGithub, PyMySQL, prometheus_client, sentry_sdk or uvicorn.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bot"
MODULES = sorted(p for p in BOT.rglob("*.py") if "migrations" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


NAMES = {module_name(p): p for p in MODULES}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_modules(node: ast.Import | ast.ImportFrom, current: str) -> list[str]:
    """Bot modules an import statement loads (``from bot.x import y`` loads bot.x.y when
    that is a module, else bot.x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "bot"]
    if node.level:  # relative imports are not used in this package
        raise AssertionError(f"{current}: relative import")
    base = node.module or ""
    if base.split(".")[0] != "bot":
        return []
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.append(sub if sub in NAMES else base)
    return found


def top_level_imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in tree(path).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported_modules(node, module_name(path)):
                yield node.lineno, name


def nested_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Bot imports that are not at module level (in a function, a class or an ``if``)."""
    module = tree(path)
    top = {id(n) for n in module.body}
    for node in ast.walk(module):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
            for name in imported_modules(node, module_name(path)):
                yield node.lineno, name


def test_no_module_over_450_lines() -> None:
    long = {module_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_any_on_fewer_than_80_lines() -> None:
    lines = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in MODULES
        for n, text in enumerate(p.read_text().splitlines(), 1)
        if any(word == "Any" for word in _words(text))
    ]
    assert len(lines) < 80, "\n".join(lines)


def _words(text: str) -> list[str]:
    out, word = [], ""
    for ch in text:
        if ch.isalnum() or ch == "_":
            word += ch
        else:
            out.append(word)
            word = ""
    return [*out, word]


def test_local_imports_few_and_commented() -> None:
    found = [(p, line, name) for p in MODULES for line, name in nested_imports(p)]
    assert len(found) < 5, found
    for path, line, name in found:
        source = path.read_text().splitlines()
        context = " ".join(source[max(0, line - 3) : line])
        assert "#" in context, f"{path.relative_to(ROOT)}:{line} imports {name} without a why"


def test_no_import_cycles() -> None:
    graph = {name: {dep for _, dep in top_level_imports(path)} for name, path in NAMES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("bot.pipeline", ("bot.interfaces", "bot.adapters", "bot.testing", "bot.demo")),
        ("bot.actions", ("bot.pipeline", "bot.interfaces", "bot.testing", "bot.demo")),
        ("bot.playbooks", ("bot.pipeline", "bot.interfaces", "bot.adapters", "bot.testing")),
        ("bot.triage", ("bot.pipeline", "bot.interfaces", "bot.adapters", "bot.testing")),
        ("bot.store", ("bot.pipeline", "bot.interfaces", "bot.adapters", "bot.testing")),
        ("bot.adapters", ("bot.pipeline", "bot.interfaces", "bot.testing", "bot.demo")),
        ("bot.interfaces", ("bot.testing",)),
    ],
)
def test_layers_do_not_reach_up(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{name}:{line} imports {dep}"
        for name, path in NAMES.items()
        if name == layer or name.startswith(layer + ".")
        for line, dep in [*top_level_imports(path), *nested_imports(path)]
        if any(dep == f or dep.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []


DRIVERS = ("httpx", "github", "pymysql", "prometheus_client", "sentry_sdk", "uvicorn")
# Who may import a client library: the adapters; the HTTP interface (Starlette app,
# /metrics); the fakes of HTTP services (they answer httpx requests).
# And the composition root, which builds the adapters (it hands the Sentry adapter its
# httpx transport).
MAY_IMPORT_DRIVERS = (
    "bot.adapters",
    "bot.interfaces.http",
    "bot.interfaces.app",
    "bot.interfaces.wiring",
    "bot.testing",
)


def test_only_adapters_import_client_libraries() -> None:
    bad = []
    for name, path in NAMES.items():
        if any(name == p or name.startswith(p + ".") for p in MAY_IMPORT_DRIVERS):
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            bad += [f"{name}:{node.lineno} imports {r}" for r in roots if r in DRIVERS]
    assert bad == []

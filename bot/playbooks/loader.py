"""Load and validate every playbook file in a directory, reporting every error at once.

Each error names the file, the line and the field (the YAML node tree is composed
alongside the data, so a pydantic error location maps back to the line of that key)
and, for an unknown key, suggests the closest valid one. A broken file never hides the
errors of the others: :func:`load_playbooks` returns a :class:`LoadResult` with the
playbooks that loaded and all the errors; :func:`load_playbooks_strict` raises
:class:`PlaybookLoadFailed` (a :class:`~bot.errors.PlaybookError`) listing all of them.

Action settings are validated by the action's own ``settings_model`` (which checks the
table and column names inside as identifiers); the action registry is imported lazily
so this module loads even when an action module is broken.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from bot.actions import registry
from bot.actions.base import Action
from bot.errors import BotError, PlaybookError
from bot.playbooks.models import Playbook, compile_regex, is_identifier
from bot.safety.safe_yaml import BoundedYamlError, check_size, compose_bounded

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadError:
    """One problem in one playbook file."""

    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        label = f" {self.field}:" if self.field else ""
        return f"{where}:{label} {self.message}"


@dataclass
class LoadResult:
    """The playbooks that loaded, and every error found in every file."""

    playbooks: list[Playbook] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class PlaybookLoadFailed(PlaybookError):
    """One or more playbook files are invalid."""

    def __init__(self, errors: Sequence[LoadError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} playbook error(s):\n{lines}")


class RegistryActions(Mapping[str, Action]):
    """The built-in action registry as a lazy mapping: a module is imported on lookup."""

    def __getitem__(self, name: str) -> Action:
        if name not in registry.action_names():
            raise KeyError(name)
        return registry.get_action(name)

    def __iter__(self) -> Iterator[str]:
        return iter(registry.action_names())

    def __len__(self) -> int:
        return len(registry.action_names())


def load_playbooks(
    directory: Path,
    *,
    actions: Mapping[str, Action] | None = None,
    target_dialect: Callable[[str], str | None] | None = None,
) -> LoadResult:
    """Load every ``*.yaml``/``*.yml`` in ``directory`` (sorted), collecting all errors.

    ``actions`` maps action type -> action (default: the built-in registry, lazily).
    An id defined by more than one file is an error in every one of those files, and
    none of them loads: which copy "wins" must never depend on file names.
    ``target_dialect`` names the dialect of a configured target (None: not configured);
    given, a playbook whose action has no meaning on its target's dialect (say
    ``release_advisory_locks`` on SQLite) is reported and left out.
    """
    catalog = RegistryActions() if actions is None else actions
    result = LoadResult()
    if not directory.is_dir():
        result.errors.append(LoadError(directory, None, "", "playbooks directory not found"))
        return result
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    by_id: dict[str, list[tuple[Path, int | None, Playbook | None]]] = {}
    for path in files:
        try:
            check_size(path.stat().st_size)  # before reading: a 50 MB file is refused
            text = path.read_text(encoding="utf-8")
        except BoundedYamlError as exc:
            result.errors.append(LoadError(path, None, "", f"refused: {exc.problem}"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(LoadError(path, None, "", f"cannot read file: {exc}"))
            continue
        playbook, errors, root = parse_playbook(text, path, actions=catalog)
        result.errors.extend(errors)
        pb_id = playbook.id if playbook is not None else _declared_id(root)
        if playbook is not None:
            problem = _dialect_problem(playbook, catalog, target_dialect)
            if problem:
                line = _line_for(root, ("action", "target")) if root is not None else None
                result.errors.append(LoadError(path, line, "action.target", problem))
                playbook = None  # left out, but its id still blocks a duplicate
        if pb_id is not None:
            line = _line_for(root, ("id",)) if root is not None else None
            by_id.setdefault(pb_id, []).append((path, line, playbook))
    for pb_id, copies in by_id.items():
        if len(copies) == 1:
            if copies[0][2] is not None:
                result.playbooks.append(copies[0][2])
            continue
        for path, line, _ in copies:
            others = ", ".join(str(p) for p, _, _ in copies if p != path)
            msg = f"duplicate playbook id {pb_id!r} (also in {others}): none of these files loads"
            result.errors.append(LoadError(path, line, "id", msg))
    return result


def _dialect_problem(
    playbook: Playbook,
    catalog: Mapping[str, Action],
    target_dialect: Callable[[str], str | None] | None,
) -> str | None:
    """Why this playbook's action cannot run on its configured target, or None."""
    target = playbook.action.target
    if target_dialect is None or not target:
        return None
    try:
        dialect = target_dialect(target)
    except BotError as exc:
        return f"target {target}: {exc}"
    supported: frozenset[str] | None = getattr(catalog.get(playbook.action.type), "dialects", None)
    if dialect is None or supported is None or dialect in supported:
        return None
    return (
        f"{playbook.action.type} cannot run on target {target}: it is a {dialect} database,"
        f" and the action supports {', '.join(sorted(supported))} only"
        + (" (SQLite has no session-level locks)" if dialect == "sqlite" else "")
    )


def _declared_id(root: yaml.Node | None) -> str | None:
    """The ``id:`` an invalid file declares (it still blocks a duplicate elsewhere)."""
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            is_id = isinstance(key, yaml.ScalarNode) and key.value == "id"
            if is_id and isinstance(value, yaml.ScalarNode) and value.value:
                return str(value.value)
    return None


def load_playbooks_strict(
    directory: Path, *, actions: Mapping[str, Action] | None = None
) -> list[Playbook]:
    """Like :func:`load_playbooks`, but raise :class:`PlaybookLoadFailed` on any error."""
    result = load_playbooks(directory, actions=actions)
    if result.errors:
        raise PlaybookLoadFailed(result.errors)
    return result.playbooks


def parse_playbook(
    text: str, file: Path, *, actions: Mapping[str, Action] | None = None
) -> tuple[Playbook | None, list[LoadError], yaml.Node | None]:
    """Parse and fully validate one playbook's YAML text.

    Returns the playbook (None if anything is wrong), every error found, and the YAML
    root node (for callers that need to locate further errors).
    """
    catalog = RegistryActions() if actions is None else actions
    try:
        root, data = compose_bounded(text)
    except BoundedYamlError as exc:
        return None, [LoadError(file, exc.line, "", f"refused: {exc.problem}")], None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [LoadError(file, line, "", f"invalid YAML: {problem}")], None
    if root is None or not isinstance(data, dict):
        return None, [LoadError(file, 1, "", "a playbook file must be a YAML mapping")], root
    errors = [LoadError(file, line, key, msg) for line, key, msg in _duplicate_keys(root)]
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        errors.extend(_from_validation(exc, file, root, Playbook))
        return None, _by_line(errors), root
    errors.extend(_semantic_errors(playbook, file, root, catalog))
    return (None if errors else playbook), _by_line(errors), root


def _semantic_errors(
    pb: Playbook, file: Path, root: yaml.Node, actions: Mapping[str, Action]
) -> list[LoadError]:
    """Checks that need more than one field, or the action registry."""
    errors: list[LoadError] = []

    def err(loc: Loc, msg: str) -> None:
        errors.append(LoadError(file, _line_for(root, loc), _dotted(loc), msg))

    for name, spec in pb.extract.items():
        if not is_identifier(name):
            err(("extract", name), f"param name {name!r} is not an identifier")
        group = spec.group or name
        if group not in compile_regex(spec.regex).groupindex:
            err(("extract", name, "regex"), f"regex has no named group (?P<{group}>...)")

    kind = pb.action.type
    try:
        action = actions[kind]
    except KeyError:
        err(("action", "type"), f"unknown action type {kind!r}" + _suggest(kind, list(actions)))
        return errors
    except Exception as exc:  # a broken action module must not stop the other files
        err(("action", "type"), f"action type {kind!r} is not available: {exc}")
        return errors

    if action.needs_target and pb.action.target is None:
        err(("action",), f"action {kind!r} needs a target (a database name such as jobs_db)")
    if not action.needs_target and pb.action.target is not None:
        err(("action", "target"), f"action {kind!r} takes no target")
    try:
        parsed = action.settings_model.model_validate(pb.action.settings)
    except ValidationError as exc:
        prefix: Loc = ("action", "settings")
        errors.extend(_from_validation(exc, file, root, action.settings_model, prefix))
        return errors
    # A settings ``scope`` ({column: param}) narrows the action's rows by extracted params:
    # those params are accepted, and must be extracted (required) or the run cannot narrow.
    scope = getattr(parsed, "scope", None)
    scoped = set(scope.values()) if isinstance(scope, Mapping) else set()
    # ``optional_scope`` narrows only when its param was extracted: accepted, not required.
    optional = getattr(parsed, "optional_scope", None)
    narrowing = set(optional.values()) if isinstance(optional, Mapping) else set()
    accepted = set(action.accepted_params) | scoped | narrowing
    for name in pb.extract:
        if name not in accepted:
            names = ", ".join(sorted(accepted)) or "none"
            err(("extract", name), f"action {kind!r} does not accept param {name!r} ({names})")
    for name in sorted(scoped):
        if name not in pb.extract:
            err(("action", "settings", "scope"), f"scope uses param {name!r}, not extracted")
        elif not pb.extract[name].required:
            err(("extract", name, "required"), f"param {name!r} is used in scope: must be required")
    pb.action._parsed = parsed
    return errors


def _from_validation(
    exc: ValidationError, file: Path, root: yaml.Node, model: type[BaseModel], prefix: Loc = ()
) -> list[LoadError]:
    out: list[tuple[Loc, str]] = []
    # "priorty" unknown + "priority" missing is one mistake: report only the typo.
    explained: set[Loc] = set()
    for item in exc.errors(include_url=False):
        loc: Loc = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            close = _closest(key, _known_keys(model, loc[:-1]))
            msg = f"unknown field {key!r}" + (f" — did you mean {close!r}?" if close else "")
            if close:
                explained.add((*loc[:-1], close))
        elif kind == "missing":
            msg = f"missing required field {str(loc[-1])!r}"
        else:
            msg = str(item["msg"]).removeprefix("Value error, ")
        out.append((loc, msg))
    return [
        LoadError(file, _line_for(root, prefix + loc), _dotted(prefix + loc), msg)
        for loc, msg in out
        if not (msg.startswith("missing required") and loc in explained)
    ]


def _closest(word: str, candidates: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = _closest(word, candidates)
    return f" — did you mean {close!r}?" if close else ""


def _by_line(errors: list[LoadError]) -> list[LoadError]:
    return sorted(errors, key=lambda e: e.line or 0)


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def _line_for(root: yaml.Node, loc: Loc) -> int | None:
    """1-based line of the deepest key on ``loc`` that exists in the YAML node tree."""
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: yaml.Node, path: Loc = ()) -> Iterator[tuple[int, str, str]]:
    """YAML silently keeps the last of two equal keys; a playbook treats that as an error."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                where = _dotted((*path, name))
                yield key.start_mark.line + 1, where, f"duplicate key {name!r}"
            seen.add(name)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Valid keys of the mapping at ``loc`` inside ``model`` (for typo suggestions)."""
    tp: object = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if str(part) not in fields:
                return []
            tp = fields[str(part)].annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _unwrap(tp: object) -> object:
    """``X | None`` -> ``X`` (the first non-None member of a union)."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(tp) if a is not type(None)]
        return members[0] if members else tp
    return tp

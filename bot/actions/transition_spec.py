"""What a state transition is: its spec and the ``set`` vocabulary of a playbook.

See :mod:`bot.actions.transition` for what a transition promises, and
:mod:`bot.actions.transition_sql` for how the statements are composed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from psycopg import sql

from bot.actions.target import Params, TargetConnection, check_identifier

AssignKind = Literal["value", "null", "now", "increment", "copy"]
_FORMS = ("value", "now", "increment", "copy", "column")


@dataclass(frozen=True)
class Assign:
    """One ``column: <what>`` of a ``set``; ``arg`` is the value, amount or column."""

    kind: AssignKind
    arg: object = None


def parse_assign(spec: object, *, where: str) -> Assign:
    """Parse one playbook ``set`` entry; ``ValueError`` (a load error) if malformed."""
    if spec is None:
        return Assign("null")
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in _FORMS:
            raise ValueError(
                f"{where}: expected a value, null, {{now: true}}, {{increment: N}}, "
                f"{{copy: column}} or {{value: <json>}}, got {spec!r}"
            )
        form, arg = next(iter(spec.items()))
        if form == "now":
            if arg is not True:
                raise ValueError(f"{where}: write {{now: true}}")
            return Assign("now")
        if form == "increment":
            if isinstance(arg, bool) or not isinstance(arg, int):
                raise ValueError(f"{where}: increment needs an integer")
            return Assign("increment", arg)
        if form in ("copy", "column"):
            return Assign("copy", check_identifier(str(arg)))
        return Assign("value", arg)
    if isinstance(spec, list):
        raise ValueError(f"{where}: a list value must be written {{value: [...]}}")
    return Assign("value", spec)


def parse_set(values: Mapping[str, object], *, where: str) -> dict[str, Assign]:
    """Parse a whole ``set`` mapping (column names checked as identifiers)."""
    return {
        check_identifier(col): parse_assign(spec, where=f"{where}.{col}")
        for col, spec in values.items()
    }


@dataclass(frozen=True)
class CompanionSpec:
    """Update one row of ``table`` (found by its primary key ``key_column`` from the
    changed row's ``ref_column``) when its ``match`` columns equal the changed row's old
    values (``{companion column: main column}``)."""

    table: str
    key_column: str
    ref_column: str
    match: Mapping[str, str]
    set: Mapping[str, Assign]


@dataclass(frozen=True)
class CallSpec:
    """Call the queue's own function once per candidate; args are :class:`Assign` with
    ``copy`` meaning "this column of the candidate row"."""

    function: str
    args: tuple[Assign, ...]


@dataclass(frozen=True)
class TransitionSpec:
    """Everything one transition needs. ``where`` is on alias ``t`` with ``binds``."""

    table: str
    id_column: str
    where: sql.Composable
    binds: Params
    set: Mapping[str, Assign]
    # Dead-letter: rows where ``dead_when`` holds get ``dead_set`` instead of ``set``.
    dead_when: sql.Composable | None = None
    dead_set: Mapping[str, Assign] = field(default_factory=dict)
    companions: tuple[CompanionSpec, ...] = ()
    call: CallSpec | None = None
    # Extra columns whose old values go in the before-image (beside every set column).
    also_image: tuple[str, ...] = ()


DEAD_FLAG = "dead letter?"  # not a valid identifier: cannot clash with a column


S = TypeVar("S")
SpecBuilder = Callable[[TargetConnection, S, dict[str, str | int]], TransitionSpec]
_REMEMBERED = 4096


def remembered(build: SpecBuilder[S]) -> SpecBuilder[S]:
    """Remember an action's ``spec_for``: a pure function of the settings object, the
    connection's dialect and the parameters (it reads no catalog), so a storm's three
    phases (:mod:`bot.pipeline.storm`) compose each run's spec once. The last 4,096
    results are kept; a hit must be for the very same settings object."""
    cache: dict[tuple[int, str, tuple[tuple[str, str | int], ...]], tuple[S, TransitionSpec]] = {}

    def spec_for(conn: TargetConnection, s: S, params: dict[str, str | int]) -> TransitionSpec:
        key = (id(s), conn.dialect.name, tuple(sorted(params.items())))
        found = cache.get(key)
        if found is not None and found[0] is s:
            return found[1]
        spec = build(conn, s, params)
        if len(cache) >= _REMEMBERED:
            cache.clear()
        cache[key] = (s, spec)
        return spec

    spec_for.__doc__ = build.__doc__
    return spec_for

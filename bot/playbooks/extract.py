"""Typed extraction: turn named regex groups from untrusted event text into typed values.

Event text is attacker-controlled (anyone can put ``'; DROP TABLE tasks; --`` into an
exception message), so a value is only ever handed on after it passed its declared
type: a canonical UUID, a bounded int, a plain identifier, one of an enum's values, or a
length-capped string that fullmatches its pattern. Anything else is a rejection with a
reason; the caller treats it as "no match", never as a half-filled plan. Reasons show the
offending value only through :func:`show`, escaped and truncated.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.actions.base import ParamValue
from bot.playbooks.models import ExtractParam, compile_regex, is_identifier
from bot.safety.linear_regex import TEXT_LIMIT, LinearRegex

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")  # 18 digits always fits a BIGINT


def show(value: str, limit: int = 40) -> str:
    """A log-safe rendering of untrusted text: ``repr`` (escapes control chars), truncated."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"…(+{len(value) - limit} chars)"


class Rejected(ValueError):
    """A raw value did not pass its declared type."""


def convert(spec: ExtractParam, raw: str) -> ParamValue:
    """Return ``raw`` converted to ``spec.type``, or raise :class:`Rejected` saying why."""
    if spec.type == "uuid":
        if not _UUID_RE.fullmatch(raw):
            raise Rejected(f"not a uuid: {show(raw)}")
        return str(uuid.UUID(raw))
    if spec.type == "int":
        if not _INT_RE.fullmatch(raw):
            raise Rejected(f"not an int: {show(raw)}")
        number = int(raw)
        if spec.min is not None and number < spec.min:
            raise Rejected(f"{number} is below min {spec.min}")
        if spec.max is not None and number > spec.max:
            raise Rejected(f"{number} is above max {spec.max}")
        return number
    if spec.type == "identifier":
        if not is_identifier(raw):
            raise Rejected(f"not an identifier: {show(raw)}")
        return raw
    if spec.type == "enum":
        if raw not in (spec.values or ()):
            raise Rejected(f"not one of {spec.values}: {show(raw)}")
        return raw
    # string
    if len(raw) > spec.max_length:
        raise Rejected(f"longer than max_length {spec.max_length}: {show(raw)}")
    if spec.pattern is not None and not compile_regex(spec.pattern).fullmatch(raw):
        raise Rejected(f"does not fullmatch pattern {spec.pattern!r}: {show(raw)}")
    return raw


@dataclass(frozen=True)
class CompiledParam:
    """One extraction rule with its regex compiled once."""

    name: str
    spec: ExtractParam
    regex: LinearRegex
    group: str

    @classmethod
    def build(cls, name: str, spec: ExtractParam) -> CompiledParam:
        """Compile ``spec`` for the param called ``name`` (its group defaults to the name)."""
        return cls(name, spec, compile_regex(spec.regex), spec.group or name)


@dataclass(frozen=True)
class ExtractFailure:
    """Why extraction produced no parameters (the playbook then does not match)."""

    param: str
    reason: str

    def __str__(self) -> str:
        return f"param {self.param!r}: {self.reason}"


TextSource = Callable[[str], str | None]


def extract_params(
    params: Mapping[str, CompiledParam], source: TextSource
) -> dict[str, ParamValue] | ExtractFailure:
    """Extract every param from the texts ``source(name)`` returns (capped at TEXT_LIMIT).

    Returns all typed values, or the first failure: a required param whose regex found
    nothing, or any param (required or not) whose captured value fails its type.
    """
    out: dict[str, ParamValue] = {}
    for name, param in params.items():
        text = source(param.spec.from_)
        found = param.regex.search(text[:TEXT_LIMIT]) if text else None
        raw = found.group(param.group) if found else None
        if raw is None:
            if param.spec.required:
                where = param.spec.from_ if text is not None else f"{param.spec.from_} (absent)"
                return ExtractFailure(name, f"regex found nothing in {where}")
            continue
        try:
            out[name] = convert(param.spec, raw)
        except Rejected as exc:
            return ExtractFailure(name, str(exc))
    return out

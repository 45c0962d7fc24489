"""Linear-time regular expressions for untrusted text (Google RE2).

Event text is attacker-controlled, and regexes come from playbook and config files, so
a backtracking engine (Python's ``re``) could be frozen by one nested quantifier:
``^(\\w+\\s?)+$`` against a 41-character title never finishes. RE2 guarantees time
linear in the text for every pattern it accepts, and it refuses constructs that need
backtracking (backreferences, lookaround) outright: such a pattern is an error when the
file loads, never a hang when an event arrives.

Every regex applied to event text (playbook ``match``/``extract``/``pattern``, triage
``routing`` and ``business_critical``) is built with :func:`compile_linear`, and texts
are cut to :data:`TEXT_LIMIT` characters before matching.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

import re2  # google-re2: linear-time matching (no stubs; wrapped and typed here)

TEXT_LIMIT = 8192  # a regex never sees more than this many characters of one text
MAX_PATTERN = 4096  # characters; patterns are reviewed config, not essays
_MAX_MEM = 8 << 20  # RE2's per-pattern memory budget (bytes): a huge DFA is refused


class RegexRefused(ValueError):
    """RE2 cannot accept the pattern (the message says why)."""


class _Re2Options(Protocol):
    """The parts of ``re2.Options`` set here (the module ships no stubs)."""

    log_errors: bool
    max_mem: int
    case_sensitive: bool


class _Re2Match(Protocol):
    def group(self, name: str | int = 0, /) -> str | None: ...


class _Re2Pattern(Protocol):
    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str, /) -> _Re2Match | None: ...

    def fullmatch(self, text: str, /) -> _Re2Match | None: ...


class _Re2Set(Protocol):
    def Add(self, pattern: str, /) -> int: ...

    def Compile(self) -> None: ...

    def Match(self, text: bytes, /) -> list[int] | None: ...


def _options(*, ignore_case: bool) -> _Re2Options:
    options: _Re2Options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr; we raise with the reason
    options.max_mem = _MAX_MEM
    options.case_sensitive = not ignore_case
    return options


class LinearMatch:
    """The parts of a match the bot reads: named groups."""

    def __init__(self, match: _Re2Match) -> None:
        self._match = match

    def group(self, name: str | int = 0) -> str | None:
        value = self._match.group(name)
        return None if value is None else str(value)


class LinearRegex:
    """A compiled RE2 pattern; every search sees at most :data:`TEXT_LIMIT` characters."""

    def __init__(self, pattern: str, compiled: _Re2Pattern) -> None:
        self.pattern = pattern
        self._compiled = compiled

    @property
    def groupindex(self) -> dict[str, int]:
        return dict(self._compiled.groupindex)

    def search(self, text: str) -> LinearMatch | None:
        found = self._compiled.search(text[:TEXT_LIMIT])
        return LinearMatch(found) if found is not None else None

    def fullmatch(self, text: str) -> LinearMatch | None:
        found = self._compiled.fullmatch(text[:TEXT_LIMIT])
        return LinearMatch(found) if found is not None else None

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"


@functools.lru_cache(maxsize=1024)
def compile_linear(pattern: str, *, ignore_case: bool = False) -> LinearRegex:
    """Compile ``pattern`` with RE2 or raise :class:`RegexRefused` saying why.

    RE2 syntax is Python's for everything a playbook needs (named groups
    ``(?P<name>...)``, classes, ``(?i)``); it refuses backreferences and lookaround.
    """
    if len(pattern) > MAX_PATTERN:
        raise RegexRefused(f"pattern longer than {MAX_PATTERN} characters")
    try:
        compiled: _Re2Pattern = re2.compile(pattern, _options(ignore_case=ignore_case))
    except re2.error as exc:
        raise RegexRefused(_reason(exc)) from None
    except (TypeError, ValueError) as exc:
        raise RegexRefused(str(exc)) from None
    return LinearRegex(pattern, compiled)


# RE2::Set has no NFA to fall back on: when its DFA runs out of memory, Match answers
# "no pattern matched" (RE2's set.cc, ``dfa_failed``), which a prescreen must never do.
# A DFA scan adds at most one state per byte of text, so bounding the text and giving
# the set a large budget (a cap, not an allocation) keeps it far from that point.
SET_TEXT_LIMIT = 2048
_SET_MAX_MEM = 64 << 20


class LinearSet:
    """Several RE2 patterns matched in one pass: which of them occur in a text.

    One scan answers for every pattern, where testing each with its own search scans
    the text once per pattern. Texts longer than :data:`SET_TEXT_LIMIT` are refused
    (ValueError): the caller tests those pattern by pattern.
    """

    def __init__(self, patterns: tuple[str, ...], compiled: _Re2Set) -> None:
        self.patterns = patterns
        self._compiled = compiled

    def matching(self, text: str) -> frozenset[int]:
        """Indexes (into ``patterns``) of the patterns with a match somewhere in ``text``."""
        data = text.encode()
        if len(data) > SET_TEXT_LIMIT:
            raise ValueError(f"a text of more than {SET_TEXT_LIMIT} bytes for a pattern set")
        return frozenset(self._compiled.Match(data) or ())

    def __repr__(self) -> str:
        return f"LinearSet({len(self.patterns)} patterns)"


def compile_set(patterns: tuple[str, ...], *, ignore_case: bool = False) -> LinearSet:
    """Compile ``patterns`` into one :class:`LinearSet`, or raise :class:`RegexRefused`."""
    options = _options(ignore_case=ignore_case)
    options.max_mem = _SET_MAX_MEM
    compiled: _Re2Set = re2.Set.SearchSet(options)
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN:
            raise RegexRefused(f"pattern longer than {MAX_PATTERN} characters")
        try:
            compiled.Add(pattern)
        except re2.error as exc:
            raise RegexRefused(_reason(exc)) from None
    try:
        compiled.Compile()
    except re2.error as exc:
        raise RegexRefused(_reason(exc)) from None
    return LinearSet(patterns, compiled)


def _reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else str(exc)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    hint = ""
    if "invalid perl operator: (?=" in text or "invalid perl operator: (?!" in text:
        hint = " (lookahead needs backtracking)"
    elif "(?<" in text and "invalid" in text:
        hint = " (lookbehind needs backtracking)"
    elif "invalid escape sequence: \\" in text and any(c.isdigit() for c in text[-2:]):
        hint = " (backreferences need backtracking)"
    return f"not accepted by the linear-time engine RE2: {text}{hint}"

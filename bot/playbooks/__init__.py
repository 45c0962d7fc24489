"""Declarative playbooks: the file format, the loader, typed extraction and the matcher.

``load_playbooks(dir)`` → :class:`LoadResult` (every error, with file and line);
``Matcher(playbooks).match(issue, event)`` → :class:`MatchResult` or None;
``backtest(matcher, pairs)`` → :class:`BacktestReport`. The CLI sub-app lives in
:mod:`bot.interfaces.playbooks_cli` (imported separately so the core does not need typer).
"""

from __future__ import annotations

from bot.playbooks.backtest import BacktestReport, PlaybookBacktest, backtest
from bot.playbooks.loader import (
    LoadError,
    LoadResult,
    PlaybookLoadFailed,
    load_playbooks,
    load_playbooks_strict,
    parse_playbook,
)
from bot.playbooks.matcher import Explanation, Matcher, MatchResult
from bot.playbooks.models import ExtractParam, Guards, Playbook

__all__ = [
    "BacktestReport",
    "Explanation",
    "ExtractParam",
    "Guards",
    "LoadError",
    "LoadResult",
    "MatchResult",
    "Matcher",
    "Playbook",
    "PlaybookBacktest",
    "PlaybookLoadFailed",
    "backtest",
    "load_playbooks",
    "load_playbooks_strict",
    "parse_playbook",
]

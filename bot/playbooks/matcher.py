"""Match Sentry issues to playbooks: the highest-priority playbook whose rules all hold.

Rules are evaluated cheapest first (level / environment / project set lookups and
event counts) so most playbooks are ruled out before any regex runs; regexes are
compiled once when the :class:`Matcher` is built and only ever see the first
:data:`~bot.playbooks.extract.TEXT_LIMIT` characters of a text, so a 10,000-character
hostile title cannot make matching slow. A playbook whose rules hold but whose typed
extraction rejects a value does not match (logged at INFO, value escaped and
truncated); lower-priority playbooks are still tried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.actions.base import ParamValue
from bot.playbooks.extract import (
    CompiledParam,
    ExtractFailure,
    extract_params,
)
from bot.playbooks.models import Playbook, compile_regex
from bot.safety.linear_regex import TEXT_LIMIT
from bot.sentry.models import SentryEvent, SentryIssue

log = logging.getLogger(__name__)

# Rules the latest event can turn from failing to holding.
_EVENT_RULES = ("environment", "message", "tags.")


@dataclass(frozen=True)
class MatchResult:
    """The winning playbook for an issue and its typed parameters."""

    playbook: Playbook
    params: dict[str, ParamValue]

    @property
    def playbook_id(self) -> str:
        return self.playbook.id


@dataclass(frozen=True)
class Explanation:
    """How one playbook fared against one issue (for backtest / demo / debugging)."""

    playbook_id: str
    priority: int
    failed_rules: list[str] = field(default_factory=list)
    rejection: str | None = None
    params: dict[str, ParamValue] | None = None

    @property
    def matched(self) -> bool:
        return not self.failed_rules and self.rejection is None


class _Texts:
    """Per-issue texts, capped and computed at most once however many playbooks ask."""

    def __init__(self, issue: SentryIssue, event: SentryEvent | None) -> None:
        self.issue = issue
        self.event = event if event is not None else issue.latest_event
        self._event_text: str | None = None

    def event_text(self) -> str:
        if self._event_text is None:
            raw = self.event.text() if self.event is not None else ""
            self._event_text = (raw or self.issue.message)[:TEXT_LIMIT]
        return self._event_text

    def tag(self, name: str) -> str | None:
        value = self.issue.tags.get(name)
        if value is None and self.event is not None:
            value = self.event.tag(name)
        return value

    def environment(self) -> str | None:
        return self.issue.environment or (self.event.environment if self.event else None)

    def source(self, name: str) -> str | None:
        """Text for an extraction source: title | message | culprit | event | tag:<name>."""
        if name == "title":
            return self.issue.title[:TEXT_LIMIT]
        if name == "message":
            return self.issue.message[:TEXT_LIMIT]
        if name == "culprit":
            culprit = self.issue.culprit
            return culprit[:TEXT_LIMIT] if culprit is not None else None
        if name == "event":
            return self.event_text()
        tag = self.tag(name.removeprefix("tag:"))
        return tag[:TEXT_LIMIT] if tag is not None else None


class _Compiled:
    """One playbook with its sets built and regexes compiled, ready to evaluate."""

    def __init__(self, pb: Playbook) -> None:
        m = pb.match
        self.playbook = pb
        self.levels = frozenset(x.lower() for x in m.level) if m.level is not None else None
        self.envs = frozenset(m.environment) if m.environment is not None else None
        self.projects = frozenset(m.project) if m.project is not None else None
        self.title = compile_regex(m.title) if m.title is not None else None
        self.message = compile_regex(m.message) if m.message is not None else None
        self.culprit = compile_regex(m.culprit) if m.culprit is not None else None
        self.tags = [(k, compile_regex(v)) for k, v in m.tags.items()]
        self.params = {n: CompiledParam.build(n, s) for n, s in pb.extract.items()}

    def failed_rules(self, t: _Texts, *, all_of_them: bool) -> list[str]:
        """Names of the rules that do not hold; stops at the first unless ``all_of_them``."""
        issue, m = t.issue, self.playbook.match
        failed: list[str] = []
        # Set lookups and integer compares first: most playbooks end here, before a regex.
        if self.projects is not None and issue.project.slug not in self.projects:
            failed.append("project")
        if self.levels is not None and issue.level.lower() not in self.levels:
            failed.append("level")
        if issue.count < m.min_events:
            failed.append("min_events")
        if issue.user_count < m.min_users:
            failed.append("min_users")
        if self.envs is not None and t.environment() not in self.envs:
            failed.append("environment")
        if failed and not all_of_them:
            return failed
        if self.title is not None and not self.title.search(issue.title[:TEXT_LIMIT]):
            failed.append("title")
            if not all_of_them:
                return failed
        if self.culprit is not None and not self.culprit.search((issue.culprit or "")[:TEXT_LIMIT]):
            failed.append("culprit")
            if not all_of_them:
                return failed
        # The issue's own message first; the latest event's text is the fallback.
        if (
            self.message is not None
            and not self.message.search(issue.message[:TEXT_LIMIT])
            and not self.message.search(t.event_text())
        ):
            failed.append("message")
            if not all_of_them:
                return failed
        for key, regex in self.tags:
            value = t.tag(key)
            if value is None or not regex.search(value[:TEXT_LIMIT]):
                failed.append(f"tags.{key}")
                if not all_of_them:
                    return failed
        return failed


class Matcher:
    """Pick the playbook for an issue. Build once per playbook set; reuse for every issue."""

    def __init__(self, playbooks: Iterable[Playbook]) -> None:
        ordered = sorted(playbooks, key=lambda p: (-p.priority, p.id))
        self._compiled = [_Compiled(pb) for pb in ordered]

    @property
    def playbooks(self) -> list[Playbook]:
        """The playbooks in evaluation order: priority descending, then id."""
        return [c.playbook for c in self._compiled]

    def match(self, issue: SentryIssue, event: SentryEvent | None = None) -> MatchResult | None:
        """The highest-priority playbook (ties: lowest id) whose rules all hold and whose
        typed extraction succeeds, with its params; None when no playbook matches.

        ``event`` defaults to ``issue.latest_event``.
        """
        texts = _Texts(issue, event)
        for c in self._compiled:
            if c.failed_rules(texts, all_of_them=False):
                continue
            params = extract_params(c.params, texts.source)
            if isinstance(params, ExtractFailure):
                _log_rejection(c.playbook.id, issue, params)
                continue
            return MatchResult(c.playbook, params)
        return None

    def wants_event(self, issue: SentryIssue) -> bool:
        """Could the latest event make some playbook match an issue that matched without it?

        True when, for some playbook, every rule that fails on the issue alone is one the
        event can change (environment, message, tags), or when its rules hold and only
        its extraction failed. The cycle fetches an event (one request) only then.
        """
        texts = _Texts(issue, None)
        return any(
            all(rule.startswith(_EVENT_RULES) for rule in c.failed_rules(texts, all_of_them=True))
            for c in self._compiled
        )

    def explain(self, issue: SentryIssue, event: SentryEvent | None = None) -> list[Explanation]:
        """Every playbook, in evaluation order, with the rules that failed for this issue,
        or the extraction rejection, or (when it matched) the typed params."""
        texts = _Texts(issue, event)
        out: list[Explanation] = []
        for c in self._compiled:
            pb = c.playbook
            failed = c.failed_rules(texts, all_of_them=True)
            if failed:
                out.append(Explanation(pb.id, pb.priority, failed_rules=failed))
                continue
            params = extract_params(c.params, texts.source)
            if isinstance(params, ExtractFailure):
                out.append(Explanation(pb.id, pb.priority, rejection=str(params)))
            else:
                out.append(Explanation(pb.id, pb.priority, params=params))
        return out


def _log_rejection(playbook_id: str, issue: SentryIssue, failure: ExtractFailure) -> None:
    # The reason already shows the hostile value only via extract.show (repr, truncated).
    log.info("playbook %s does not match issue %s: %s", playbook_id, issue.short_id[:64], failure)

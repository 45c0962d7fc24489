"""Notifications and their Slack rendering (``text`` fallback plus Block Kit ``blocks``).

Everything that came from Sentry (titles, messages, team names, fact values) is
untrusted. Before it reaches mrkdwn it goes through :func:`escape_mrkdwn`:

- ``&``, ``<``, ``>`` become entities, so ``<!channel>``, ``<@U123>``,
  ``<!subteam^S1>`` and ``<http://evil|click>`` render as text and cannot ping or link;
- ``@channel`` / ``@here`` / ``@everyone`` / ``@all`` get a zero-width space after
  the ``@``. Slack only pings on these in webhook text when the payload sets
  ``link_names``, but Mattermost (which accepts the same payload) pings on the plain
  words, so they are neutralised for both.

Links are only ever built here, as ``<url|label>``: the URL must be http(s) with no
``|``, ``<``, ``>``, whitespace or control characters, and the label is escaped.

Slack limits respected (longer text is cut on a character boundary that never splits
an entity, and marked with ``…``): header ``plain_text`` 150, section text 3000,
section field 2000 and at most 10 fields per section, at most 50 blocks.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bot.clock import ensure_utc
from bot.json_types import JsonObject
from bot.safety.text import neutralise_bidi

HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
FIELDS_PER_SECTION = 10
CONTEXT_ELEMENTS_LIMIT = 10
MAX_BLOCKS = 50
FALLBACK_TEXT_LIMIT = 3000
TITLE_LIMIT = 300
MAX_URL_LEN = 2000
MAX_FACTS = 30
ELLIPSIS = "…"
ZWSP = "\u200b"

_MASS_MENTION = re.compile(r"@(channel|here|everyone|all)\b", re.IGNORECASE)
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._:-]")
_URL_FORBIDDEN = re.compile(r"[|<>\s\x00-\x1f\x7f]")


class NotificationKind(StrEnum):
    PLAN_AWAITING_APPROVAL = "plan_awaiting_approval"
    REMEDIATED = "remediated"
    FAILED = "failed"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    REGRESSED = "regressed"
    TRIAGED = "triaged"
    HIDDEN_DEBT = "hidden_debt"


_HEADINGS: dict[NotificationKind, str] = {
    NotificationKind.PLAN_AWAITING_APPROVAL: ":raised_hand: Approval needed",
    NotificationKind.REMEDIATED: ":white_check_mark: Remediated",
    NotificationKind.FAILED: ":x: Remediation failed",
    NotificationKind.ESCALATED: ":rotating_light: Escalated",
    NotificationKind.RESOLVED: ":tada: Resolved",
    NotificationKind.REGRESSED: ":repeat: Regressed",
    NotificationKind.TRIAGED: ":mag: Triaged",
    NotificationKind.HIDDEN_DEBT: ":warning: Hidden debt (repeated remediation)",
}


class Link(BaseModel):
    """A link we render ourselves: ``url`` is validated at render time, ``label`` escaped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    url: str


class Notification(BaseModel):
    """One thing worth telling the team, independent of how it is rendered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: NotificationKind
    issue_short_id: str
    title: str
    permalink: str | None = None
    detail: str | None = None  # e.g. the exception message or the failure reason
    severity: str | None = None
    owner: str | None = None  # team or person
    category: str | None = None
    response_due_at: datetime | None = None
    playbook: str | None = None
    mode: str | None = None
    rows_changed: int | None = None
    verify_result: str | None = None
    undo_hint: str | None = None  # how to undo, derived from the before-image
    run_id: str | None = None
    fix_links: tuple[Link, ...] = ()
    report_link: str | None = None
    facts: dict[str, str] = Field(default_factory=dict)

    @property
    def approve_command(self) -> str | None:
        """``sentry-bot approve RUN_ID`` for a plan awaiting approval, else None."""
        if self.kind is NotificationKind.PLAN_AWAITING_APPROVAL and self.run_id:
            return f"sentry-bot approve {safe_id(self.run_id)}"
        return None


def escape_mrkdwn(text: str) -> str:
    """Untrusted text made inert for Slack mrkdwn: entities for ``& < >``, mentions defused."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = neutralise_bidi(escaped)  # a U+202E in a title must not reorder the message
    return _MASS_MENTION.sub(lambda m: f"@{ZWSP}{m.group(1)}", escaped)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut.

    Safe for escaped text: never leaves half an entity (``&am``) at the end.
    """
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ELLIPSIS))]
    cut = _ENTITY_TAIL.sub("", cut)
    return cut + ELLIPSIS


def esc(text: str, limit: int) -> str:
    """Escape untrusted ``text`` and fit it into ``limit`` characters."""
    return truncate(escape_mrkdwn(text), limit)


def safe_id(value: str, limit: int = 64) -> str:
    """An identifier (short id, run id) reduced to ``[A-Za-z0-9._:-]``."""
    return _SAFE_ID.sub("", value)[:limit]


def safe_url(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL that cannot break ``<url|label>``."""
    if not url or _URL_FORBIDDEN.search(url):
        return None
    lowered = url.lower()
    if not (lowered.startswith("https://") or lowered.startswith("http://")):
        return None
    if len(url.split("//", 1)[1].split("/", 1)[0]) == 0:
        return None
    escaped = url.replace("&", "&amp;")
    return escaped if len(escaped) <= MAX_URL_LEN else None


def link(url: str | None, label: str, label_limit: int = TITLE_LIMIT) -> str:
    """``<url|label>`` with the label escaped, or just the escaped label if the URL is unsafe."""
    shown = esc(label, label_limit)
    target = safe_url(url)
    return f"<{target}|{shown}>" if target else shown


def _heading(n: Notification) -> str:
    short = safe_id(n.issue_short_id) or "issue"
    return truncate(f"{_HEADINGS[n.kind]}: {short}", HEADER_LIMIT)


def _mrkdwn(text: str) -> JsonObject:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> JsonObject:
    return {"type": "section", "text": _mrkdwn(truncate(text, SECTION_TEXT_LIMIT))}


def _fields(n: Notification) -> list[tuple[str, str]]:
    """(label, escaped value) pairs; labels are ours, values are escaped here."""
    pairs: list[tuple[str, str]] = []

    def add(label: str, value: object | None) -> None:
        if value is not None and value != "":
            pairs.append((label, esc(str(value), FIELD_TEXT_LIMIT - len(label) - 4)))

    add("Severity", n.severity)
    add("Owner", n.owner)
    add("Category", n.category)
    if n.response_due_at is not None:
        add("Respond by", ensure_utc(n.response_due_at).strftime("%Y-%m-%d %H:%M UTC"))
    add("Playbook", n.playbook)
    add("Mode", n.mode)
    add("Rows changed", n.rows_changed)
    add("Verify", n.verify_result)
    if n.run_id:
        pairs.append(("Run", f"`{safe_id(n.run_id)}`"))
    facts = list(n.facts.items())
    for label, value in facts[:MAX_FACTS]:
        pairs.append((esc(label, 100), esc(value, FIELD_TEXT_LIMIT - 110)))
    if len(facts) > MAX_FACTS:
        pairs.append(("More", f"{len(facts) - MAX_FACTS} more facts omitted"))
    return pairs


def _field_sections(pairs: list[tuple[str, str]]) -> list[JsonObject]:
    sections = []
    for start in range(0, len(pairs), FIELDS_PER_SECTION):
        chunk = pairs[start : start + FIELDS_PER_SECTION]
        sections.append(
            {
                "type": "section",
                "fields": [
                    _mrkdwn(truncate(f"*{label}*\n{value}", FIELD_TEXT_LIMIT))
                    for label, value in chunk
                ],
            }
        )
    return sections


def _fix_links_text(links: tuple[Link, ...]) -> str:
    """A bulleted list of links that stops (with a count) before the section limit."""
    lines = ["*Fix*"]
    used = len(lines[0])
    for index, item in enumerate(links):
        line = f"• {link(item.url, item.label, 200)}"
        remaining = len(links) - index - 1
        reserve = len(f"\n… and {remaining} more") if remaining else 0
        if used + 1 + len(line) + reserve > SECTION_TEXT_LIMIT:
            lines.append(f"… and {len(links) - index} more")
            break
        lines.append(line)
        used += 1 + len(line)
    return "\n".join(lines)


def _code_block(text: str, limit: int) -> str:
    # A backtick run inside would close the block early; a zero-width space breaks it.
    body = esc(text, limit - 8).replace("```", f"`{ZWSP}``")
    return f"```{body}```"


def blocks(n: Notification) -> list[JsonObject]:
    """The Block Kit blocks for ``n`` (at most 50, each within Slack's limits)."""
    out: list[JsonObject] = [
        {"type": "header", "text": {"type": "plain_text", "text": _heading(n), "emoji": True}}
    ]
    headline = f"*{link(n.permalink, n.title)}*"
    if n.detail:
        budget = SECTION_TEXT_LIMIT - len(headline) - 1
        headline += "\n" + esc(n.detail, budget)
    out.append(_section(headline))
    out.extend(_field_sections(_fields(n)))
    if n.approve_command:
        out.append(_section(f"Approve with `{n.approve_command}`"))
    if n.undo_hint:
        out.append(_section("*Undo*\n" + _code_block(n.undo_hint, SECTION_TEXT_LIMIT - 9)))
    if n.fix_links:
        out.append(_section(_fix_links_text(n.fix_links)))
    context: list[JsonObject] = []
    if n.report_link:
        context.append(_mrkdwn(link(n.report_link, "Report", 50)))
    context.append(_mrkdwn(f"sentry-remediation-bot · {n.kind.value}"))
    out.append({"type": "context", "elements": context[:CONTEXT_ELEMENTS_LIMIT]})
    if len(out) > MAX_BLOCKS:
        omitted = len(out) - (MAX_BLOCKS - 1)
        out = out[: MAX_BLOCKS - 1]
        out.append({"type": "context", "elements": [_mrkdwn(f"{omitted} blocks omitted")]})
    return out


def fallback_text(n: Notification) -> str:
    """The top-level ``text``: what notifications, screen readers and Mattermost show."""
    parts = [f"{_heading(n)} {link(n.permalink, n.title, 200)}"]
    if n.approve_command:
        parts.append(f"Approve with `{n.approve_command}`")
    if n.detail:
        parts.append(esc(n.detail, 500))
    return truncate(" — ".join(parts), FALLBACK_TEXT_LIMIT)


def render(n: Notification) -> JsonObject:
    """The webhook payload for ``n``: ``{"text": fallback, "blocks": [...]}``."""
    return {"text": fallback_text(n), "blocks": blocks(n)}

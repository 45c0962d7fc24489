"""The Slack approval request (Block Kit with Approve / Deny buttons) and its updates.

Posted through the outbox when a plan waits for approval: the issue, its triage, the
playbook, the exact preview the run would execute (first rows, how many, the playbook's
``max_rows``), when the request expires, and two buttons whose ``value`` is the run id.
A click comes back to ``POST /hooks/slack/interactive`` (:mod:`bot.interfaces.http.slack`).
After the decision the message is replaced through the click's ``response_url`` by
:func:`outcome_message` (rows changed and verification, denied, expired, already handled).

Every piece of event text goes through :func:`bot.notify.messages.esc` (``& < >`` made
entities, mass mentions defused). Limits, from Slack's own SDK
(slackapi/python-slack-sdk ``slack_sdk/models/blocks/block_elements.py`` ``ButtonElement``:
``text_max_length = 75``, ``value_max_length = 2000``; ``InteractiveElement``:
``action_id_max_length = 255``; ``slack_sdk/models/blocks/blocks.py``: ``SectionBlock``
text 3000, ``HeaderBlock`` 150, ``ActionsBlock`` at most 25 elements; a message at most
50 blocks) are checked by :func:`check_limits`, which the tests run on hostile input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from bot.clock import ensure_utc
from bot.json_types import JsonObject
from bot.notify.messages import (
    HEADER_LIMIT,
    MAX_BLOCKS,
    SECTION_TEXT_LIMIT,
    ZWSP,
    esc,
    link,
    safe_id,
    truncate,
)

BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ACTION_ID_LIMIT = 255
ACTIONS_ELEMENTS_LIMIT = 25
PREVIEW_ROWS_SHOWN = 5
APPROVE_ACTION = "approve"
DENY_ACTION = "deny"


def _mrkdwn(text: str) -> JsonObject:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> JsonObject:
    return {"type": "section", "text": _mrkdwn(truncate(text, SECTION_TEXT_LIMIT))}


def _preview_text(rows: Sequence[JsonObject], count: int, max_rows: int | None) -> str:
    """``count`` rows (of at most ``max_rows``) and the first few, as an escaped code block."""
    cap = f" (max_rows {max_rows})" if max_rows is not None else ""
    head = f"*Preview*: {count} row(s) would change{cap}"
    if not rows:
        return head
    shown = rows[:PREVIEW_ROWS_SHOWN]
    lines = [json.dumps(r, sort_keys=True, default=str)[:400] for r in shown]
    body = esc("\n".join(lines), SECTION_TEXT_LIMIT - len(head) - 60).replace("```", f"`{ZWSP}``")
    more = f"\n… and {count - len(shown)} more" if count > len(shown) else ""
    return f"{head}, first {len(shown)}:\n```{body}```{more}"


def approval_request(
    *,
    run_id: str,
    short_id: str,
    title: str,
    permalink: str | None,
    detail: str | None,
    severity: str | None,
    category: str | None,
    team: str | None,
    playbook: str,
    action: str,
    target: str | None,
    summary: str,
    rows: Sequence[JsonObject],
    max_rows: int | None,
    expires_at: datetime | None,
) -> JsonObject:
    """The webhook payload (``text`` + ``blocks``) asking for approval of ``run_id``."""
    rid = safe_id(run_id, 64)
    short = safe_id(short_id) or "issue"
    heading = truncate(f":raised_hand: Approval needed: {short}", HEADER_LIMIT)
    headline = f"*{link(permalink, title)}*"
    if detail:
        headline += "\n" + esc(detail, SECTION_TEXT_LIMIT - len(headline) - 1)
    triage = " · ".join(
        f"{label} {esc(value, 200)}"
        for label, value in (("severity", severity), ("category", category), ("team", team))
        if value
    )
    plan = (
        f"*Playbook* `{esc(playbook, 200)}`: {esc(action, 100)}"
        + (f" on `{esc(target, 100)}`" if target else "")
        + f"\n{esc(summary, 1000)}"
    )
    expiry = (
        f"Expires {ensure_utc(expires_at).strftime('%Y-%m-%d %H:%M UTC')}"
        if expires_at is not None
        else "Does not expire"
    )
    out: list[JsonObject] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading, "emoji": True}},
        _section(headline),
    ]
    if triage:
        out.append(_section(f"*Triage*: {triage}"))
    out.append(_section(plan))
    out.append(_section(_preview_text(rows, len(rows), max_rows)))
    out.append(
        {
            "type": "actions",
            "block_id": f"approval:{rid}"[:ACTION_ID_LIMIT],
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": rid,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Deny"},
                    "value": rid,
                },
            ],
        }
    )
    out.append(
        {
            "type": "context",
            "elements": [_mrkdwn(f"{expiry} · run `{rid}` · or `sentry-bot approve {rid}`")],
        }
    )
    text = truncate(f"{heading} {link(permalink, title, 200)} (run {rid})", SECTION_TEXT_LIMIT)
    return {"text": text, "blocks": out}


def outcome_message(headline: str, details: Sequence[str] = ()) -> JsonObject:
    """A ``response_url`` body replacing the approval message with what happened.

    ``headline`` and ``details`` are escaped here. Per Slack's "Handling user interaction"
    docs, ``replace_original: true`` swaps the original message for this one.
    """
    text = esc(headline, 300)
    blocks = [_section(f"*{text}*")]
    blocks += [_section(esc(d, SECTION_TEXT_LIMIT)) for d in details[: MAX_BLOCKS - 1]]
    return {"replace_original": True, "text": text, "blocks": blocks}


def ephemeral(text: str) -> JsonObject:
    """A ``response_url`` body only the clicking user sees; the original message stays."""
    return {"response_type": "ephemeral", "replace_original": False, "text": esc(text, 2000)}


def check_limits(payload: JsonObject) -> list[str]:
    """Every Block Kit limit ``payload`` breaks (empty when it is fine to post)."""
    problems: list[str] = []
    blocks = payload.get("blocks", [])
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        text = (block.get("text") or {}).get("text", "")
        if kind == "header" and len(text) > HEADER_LIMIT:
            problems.append(f"block {i}: header {len(text)} > {HEADER_LIMIT}")
        if kind == "section" and len(text) > SECTION_TEXT_LIMIT:
            problems.append(f"block {i}: section {len(text)} > {SECTION_TEXT_LIMIT}")
        if kind == "actions":
            elements = block.get("elements", [])
            if len(elements) > ACTIONS_ELEMENTS_LIMIT:
                problems.append(f"block {i}: {len(elements)} elements")
            for el in elements:
                if len(el.get("value", "")) > BUTTON_VALUE_LIMIT:
                    problems.append(f"block {i}: button value > {BUTTON_VALUE_LIMIT}")
                if len(el.get("action_id", "")) > ACTION_ID_LIMIT:
                    problems.append(f"block {i}: action_id > {ACTION_ID_LIMIT}")
                if len(el.get("text", {}).get("text", "")) > BUTTON_TEXT_LIMIT:
                    problems.append(f"block {i}: button text > {BUTTON_TEXT_LIMIT}")
    return problems

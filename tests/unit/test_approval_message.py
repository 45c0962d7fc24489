"""The Block Kit approval request: content, escaping of event text, Slack's limits.

Limits come from slackapi/python-slack-sdk ``slack_sdk/models/blocks/block_elements.py``
(``ButtonElement.text_max_length = 75``, ``value_max_length = 2000``,
``InteractiveElement.action_id_max_length = 255``) and ``slack_sdk/models/blocks/blocks.py``
(section text 3000, header 150, actions ≤ 25 elements), 50 blocks per message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.notify.approval_message import (
    approval_request,
    check_limits,
    ephemeral,
    outcome_message,
)

RUN = "3f0c2a9e-1111-4222-8333-444455556666"
HOSTILE = [
    "<!channel> deploy now",
    "<@U0123ABC> please click <https://evil.example|here>",
    "@here @everyone @channel",
    "&lt;!here&gt; already-escaped",
    "```break out of the code block``` *bold* _it_",
    "<!subteam^S123|@oncall>",
    "\u202eRTL override\u0000nul",
    "x" * 20_000,
]


def _request(text: str, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return approval_request(
        run_id=RUN,
        short_id="QUEUE-42",
        title=text,
        permalink="https://sentry.example/issues/42/",
        detail=text,
        severity="high",
        category=text[:50],
        team=text[:50],
        playbook="stuck-tasks",
        action="requeue_stuck_tasks",
        target="jobs_db",
        summary=f"would requeue 3 tasks ({text})",
        rows=rows if rows is not None else [{"id": 1, "status": "running", "note": text}],
        max_rows=50,
        expires_at=datetime(2026, 3, 1, 13, 0, tzinfo=UTC),
    )


def _all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def test_buttons_carry_the_run_id_and_the_preview_is_exact() -> None:
    rows = [{"id": i, "status": "running"} for i in range(1, 8)]
    payload = _request("Found 7 stuck tasks", rows)
    [actions] = [b for b in payload["blocks"] if b["type"] == "actions"]
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert set(buttons) == {"approve", "deny"}
    assert buttons["approve"]["value"] == RUN and buttons["deny"]["value"] == RUN
    assert buttons["approve"]["style"] == "primary" and buttons["deny"]["style"] == "danger"
    text = "\n".join(b.get("text", {}).get("text", "") for b in payload["blocks"])
    text += json.dumps(payload["blocks"][-1])
    assert "7 row(s) would change (max_rows 50), first 5" in text
    assert '{"id": 5, "status": "running"}' in text and '"id": 6' not in text
    assert "… and 2 more" in text
    assert "Expires 2026-03-01 13:00 UTC" in text
    assert "*Triage*: severity high" in text
    assert check_limits(payload) == []


@pytest.mark.parametrize("text", HOSTILE)
def test_event_text_is_escaped_and_limits_hold(text: str) -> None:
    payload = _request(text)
    rendered = _all_text(payload)
    assert "<!channel>" not in rendered and "<!subteam" not in rendered
    assert "<@U0123ABC>" not in rendered and "<https://evil" not in rendered
    assert "@here" not in rendered and "@everyone" not in rendered
    # The only raw links are the ones we build (the issue permalink).
    assert rendered.count("<https://") == rendered.count("<https://sentry.example/issues/42/|")
    assert check_limits(payload) == []


def test_many_wide_rows_stay_within_limits() -> None:
    rows = [{"id": i, "blob": "<&>" * 500} for i in range(200)]
    payload = _request("t", rows)
    assert check_limits(payload) == []
    assert "200 row(s) would change" in _all_text(payload)


def test_check_limits_reports_what_slack_would_refuse() -> None:
    bad = {
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}] * 51
        + [
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "a" * 256,
                        "value": "v" * 2001,
                        "text": {"type": "plain_text", "text": "t" * 76},
                    }
                ],
            }
        ]
    }
    problems = check_limits(bad)
    assert any("blocks > 50" in p for p in problems)
    assert any("section 3001" in p for p in problems)
    assert any("button value" in p for p in problems)
    assert any("action_id" in p for p in problems)
    assert any("button text" in p for p in problems)


def test_updates_escape_and_replace_or_stay_ephemeral() -> None:
    update = outcome_message("Run 3f0c2a9e succeeded (approved by <!channel>)", ["rows: 3"])
    assert update["replace_original"] is True and "<!channel>" not in _all_text(update)
    note = ephemeral("<@U1> is not allowed")
    assert note["response_type"] == "ephemeral" and note["replace_original"] is False
    assert "<@U1>" not in note["text"]

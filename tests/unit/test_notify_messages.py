"""Rendering notifications for Slack: escaping of hostile Sentry text, Block Kit limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.notify.messages import (
    FIELD_TEXT_LIMIT,
    HEADER_LIMIT,
    MAX_BLOCKS,
    SECTION_TEXT_LIMIT,
    ZWSP,
    Link,
    Notification,
    NotificationKind,
    escape_mrkdwn,
    link,
    render,
    safe_url,
    truncate,
)

PERMALINK = "https://sentry.example.com/organizations/acme/issues/4242/"


def make(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "kind": NotificationKind.REMEDIATED,
        "issue_short_id": "BLUE-BANDED-BEE-3Y",
        "title": "TaskStuckError: task 7 stuck in running",
        "permalink": PERMALINK,
    }
    fields.update(overrides)
    return Notification(**fields)


def all_mrkdwn(payload: dict[str, Any]) -> list[str]:
    """Every mrkdwn/plain text string in a payload (fallback, sections, fields, context)."""
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(f["text"] for f in block.get("fields", []))
        texts.extend(e["text"] for e in block.get("elements", []))
    return texts


# Only links we build ourselves may appear: "<https://...|label>".
_OUR_LINK = re.compile(r"<https?://[^|<>\s]+\|[^<>]*>")


def assert_inert(text: str) -> None:
    remaining = _OUR_LINK.sub("", text)
    assert "<" not in remaining and ">" not in remaining, text
    assert re.search(r"@(channel|here|everyone|all)\b", remaining, re.I) is None, text
    # every & starts an entity
    assert re.search(r"&(?!amp;|lt;|gt;)", remaining) is None, text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<!here> wake up", "&lt;!here&gt; wake up"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<!subteam^S01|oncall>", "&lt;!subteam^S01|oncall&gt;"),
        ("<http://evil.example|click me>", "&lt;http://evil.example|click me&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt; already", "&amp;lt; already"),
        ("x > y < z", "x &gt; y &lt; z"),
        ("ping @channel now", f"ping @{ZWSP}channel now"),
        ("@HERE and @everyone", f"@{ZWSP}HERE and @{ZWSP}everyone"),
        ("@all", f"@{ZWSP}all"),
        ("mail me@channelfactory.io", "mail me@channelfactory.io"),
        ("plain text", "plain text"),
    ],
)
def test_escape_mrkdwn_truth_table(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


@pytest.mark.parametrize(
    "hostile",
    [
        "<!channel> db is down",
        "<@U1> please look",
        "Tom & Jerry <b>",
        "<http://x|y>",
        "see <https://evil.example/login|Sentry login> to fix",
        "@here @channel",
        "```<!everyone>```",
    ],
)
def test_hostile_sentry_text_is_inert_everywhere(hostile: str) -> None:
    n = make(
        title=hostile,
        detail=hostile,
        owner=hostile,
        category=hostile,
        severity=hostile,
        playbook=hostile,
        verify_result=hostile,
        undo_hint=hostile,
        facts={hostile: hostile},
        fix_links=(Link(label=hostile, url="https://github.com/acme/app/pull/1"),),
    )
    payload = render(n)
    for text in all_mrkdwn(payload):
        assert_inert(text)
    # the hostile words are still visible to a reader, just not active
    assert escape_mrkdwn(hostile) in payload["blocks"][1]["text"]["text"]


def test_issue_link_is_ours_with_escaped_label() -> None:
    payload = render(make(title="<!channel> & co"))
    section = payload["blocks"][1]["text"]["text"]
    assert section.startswith(f"*<{PERMALINK}|&lt;!channel&gt; &amp; co>*")
    assert f"<{PERMALINK}|" in payload["text"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://sentry.io/issues/1/", "https://sentry.io/issues/1/"),
        ("http://localhost:9000/x?a=1&b=2", "http://localhost:9000/x?a=1&amp;b=2"),
        ("javascript:alert(1)", None),
        ("ftp://files.example/x", None),
        ("https://evil.example|click", None),
        ("https://evil.example>x", None),
        ("https://a.example/ b", None),
        ("https://a.example/\nb", None),
        ("https://", None),
        ("//no-scheme.example", None),
        ("", None),
        (None, None),
        ("https://a.example/" + "x" * 2100, None),
    ],
)
def test_safe_url(url: str | None, expected: str | None) -> None:
    assert safe_url(url) == expected


def test_unsafe_permalink_renders_label_without_link() -> None:
    payload = render(make(permalink="javascript:alert(1)", title="boom"))
    assert payload["blocks"][1]["text"]["text"] == "*boom*"
    assert "javascript" not in json.dumps(payload)


def test_link_helper_escapes_label_even_without_url() -> None:
    assert link(None, "<@U1>") == "&lt;@U1&gt;"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("abcdefghij", 10, "abcdefghij"),
        ("abcdefghijk", 10, "abcdefghi…"),
        ("abcdef&amp;xyz", 10, "abcdef…"),  # never half an entity
        ("abcde&lt;xyz", 9, "abcde…"),
        ("abcde&lt;xyz", 11, "abcde&lt;x…"),
    ],
)
def test_truncate_never_splits_an_entity(text: str, limit: int, expected: str) -> None:
    result = truncate(text, limit)
    assert result == expected
    assert len(result) <= limit


def test_ten_thousand_char_message_fits_every_limit() -> None:
    huge = ("<!channel> & " * 800)[:10_000]
    n = make(
        title=huge,
        detail=huge,
        owner=huge,
        undo_hint=huge,
        facts={f"fact {i}": huge for i in range(40)},
        fix_links=tuple(
            Link(label=huge, url=f"https://github.com/acme/app/pull/{i}") for i in range(60)
        ),
    )
    payload = render(n)
    blocks = payload["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    assert len(payload["text"]) <= SECTION_TEXT_LIMIT
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= HEADER_LIMIT
        elif block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= SECTION_TEXT_LIMIT
            assert len(block.get("fields", [])) <= 10
            for f in block.get("fields", []):
                assert len(f["text"]) <= FIELD_TEXT_LIMIT
    for text in all_mrkdwn(payload):
        assert_inert(text)
    fix = next(b for b in blocks if b.get("text", {}).get("text", "").startswith("*Fix*"))
    assert fix["text"]["text"].rstrip().endswith("more")
    assert any("more facts omitted" in f["text"] for b in blocks for f in b.get("fields", []))
    json.dumps(payload)  # JSON-safe


def test_block_kit_structure_for_plan_awaiting_approval() -> None:
    n = make(
        kind=NotificationKind.PLAN_AWAITING_APPROVAL,
        severity="P1",
        owner="team-jobs",
        category="database",
        response_due_at=datetime(2026, 3, 1, 14, 0, tzinfo=UTC),
        playbook="requeue_stuck_tasks",
        mode="approval",
        rows_changed=3,
        run_id="6f1c2d3e-0000-4000-8000-000000000001",
        report_link="https://bot.example/runs/6f1c",
        facts={"environment": "production"},
    )
    payload = render(n)
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":raised_hand: Approval needed: BLUE-BANDED-BEE-3Y",
            "emoji": True,
        },
    }
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[2]["fields"]}
    assert fields == {
        "*Severity*": "P1",
        "*Owner*": "team-jobs",
        "*Category*": "database",
        "*Respond by*": "2026-03-01 14:00 UTC",
        "*Playbook*": "requeue_stuck_tasks",
        "*Mode*": "approval",
        "*Rows changed*": "3",
        "*Run*": "`6f1c2d3e-0000-4000-8000-000000000001`",
        "*environment*": "production",
    }
    approve = "sentry-bot approve 6f1c2d3e-0000-4000-8000-000000000001"
    assert blocks[3]["text"]["text"] == f"Approve with `{approve}`"
    assert approve in payload["text"]
    assert blocks[4]["elements"][0]["text"] == "<https://bot.example/runs/6f1c|Report>"


def test_approve_command_only_for_plans_and_sanitised() -> None:
    assert make(run_id="r1").approve_command is None
    plan = make(kind=NotificationKind.PLAN_AWAITING_APPROVAL, run_id="r1; rm -rf /")
    assert plan.approve_command == "sentry-bot approve r1rm-rf"


def test_undo_hint_is_a_code_block_that_cannot_be_closed_early() -> None:
    payload = render(make(undo_hint="UPDATE t SET state='running' WHERE id IN (7) ```<!here>"))
    texts = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    body = next(t for t in texts if t.startswith("*Undo*"))
    assert body.startswith("*Undo*\n```UPDATE t SET state='running'")
    assert body.endswith("```")
    assert body.count("```") == 2
    assert "&lt;!here&gt;" in body


def test_short_id_in_header_is_reduced_to_identifier_characters() -> None:
    payload = render(make(issue_short_id="<!channel> X-1"))
    assert payload["blocks"][0]["text"]["text"].endswith(": channelX-1")


@pytest.mark.parametrize("kind", list(NotificationKind))
def test_every_kind_renders_with_text_and_blocks(kind: NotificationKind) -> None:
    payload = render(make(kind=kind))
    assert payload["text"]
    assert payload["blocks"][0]["type"] == "header"
    assert payload["blocks"][-1]["elements"][-1]["text"].endswith(kind.value)


def test_notification_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        Notification(**{**make().model_dump(), "colour": "red"})

"""The PR comment body: marker first, Sentry text inert in GitHub Markdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bot.codehost.fixlinks import PrCommentFacts, inert, render_pr_comment
from bot.codehost.port import comment_marker, has_marker, mentions_short_id


@pytest.mark.parametrize(
    ("text", "must_not_match"),
    [
        ("ping @acme/platform-team now", r"@[A-Za-z]"),
        ("cc @octocat", r"@[A-Za-z]"),
        ("see #123 and acme/api#9", r"(?<!&)#\d"),
        ("<img src=x onerror=alert(1)>", r"<"),
        ("[click](https://evil.example/x)", r"(?<!\\)\[|https?://"),
        ("![img](http://x/y.png)", r"(?<!\\)!|(?<!\\)\("),
        ("`code` and **bold** | pipe", r"(?<!\\)[`*|]"),
        ("line1\nline2\r\n  ## heading", r"\n"),
    ],
)
def test_inert_text_cannot_mention_link_or_inject_html(text: str, must_not_match: str) -> None:
    assert re.search(must_not_match, inert(text)) is None


def test_inert_truncates_long_text() -> None:
    out = inert("x" * 5000, limit=100)
    assert out.endswith("…") and len(out) == 100


def test_render_has_marker_first_and_is_stable() -> None:
    facts = PrCommentFacts(
        short_id="BLUE-BANDED-BEE-42",
        title="ValueError: @acme/oncall <b>stuck</b>",
        permalink="https://sentry.io/organizations/acme/issues/42/",
        playbook_id="requeue_stuck_tasks",
        runs=2,
        rows_changed=14,
        last_seen=datetime(2026, 3, 1, 11, 0, tzinfo=UTC),
        quiet_since=datetime(2026, 3, 1, 11, 0, tzinfo=UTC),
    )
    body = render_pr_comment(facts)
    assert body.splitlines()[0] == comment_marker("BLUE-BANDED-BEE-42")
    assert has_marker(body, comment_marker("BLUE-BANDED-BEE-42"))
    assert body == render_pr_comment(facts)  # no "now" in it: the hash skips re-sends
    assert "2026-03-03 11:00 UTC" in body and "| Rows changed | 14 |" in body
    assert "[BLUE-BANDED-BEE-42](https://sentry.io/organizations/acme/issues/42/)" in body
    assert "@acme" not in body and "<b>" not in body


def test_render_resolved_and_regressed() -> None:
    base = {"short_id": "S-1", "title": "t"}
    resolved = render_pr_comment(
        PrCommentFacts(
            **base,
            resolved_at=datetime(2026, 3, 3, tzinfo=UTC),  # type: ignore[arg-type]
            resolved_in_commit="a" * 40,
        )
    )
    assert "**resolved** at 2026-03-03 00:00 UTC in commit `aaaaaaaaaaaa`" in resolved
    regressed = render_pr_comment(
        PrCommentFacts(**base, regressed_at=datetime(2026, 3, 4, tzinfo=UTC))  # type: ignore[arg-type]
    )
    assert "**regressed**" in regressed


def test_render_drops_a_permalink_that_is_not_http() -> None:
    body = render_pr_comment(PrCommentFacts(short_id="S-1", title="t", permalink="javascript:x"))
    assert "javascript" not in body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fixes BLUE-BANDED-BEE-42", True),
        ("fixes blue-banded-bee-42.", True),
        ("(BLUE-BANDED-BEE-42)", True),
        ("BLUE-BANDED-BEE-420", False),
        ("XBLUE-BANDED-BEE-42", False),
        ("BLUE BANDED BEE 42", False),
        ("", False),
    ],
)
def test_mentions_short_id_whole_token(text: str, expected: bool) -> None:
    assert mentions_short_id(text, "BLUE-BANDED-BEE-42") is expected

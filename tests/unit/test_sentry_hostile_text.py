"""Untrusted text normalised once at the Sentry boundary (bot/safety/text.py).

Anyone who can send an event controls an issue's title, culprit and metadata. These
tests drive the real HttpSentryClient against FakeSentry (which writes ASCII-escaped
JSON, so ``\\u0000`` and a lone ``\\ud800`` arrive exactly as escapes in the body).
"""

from __future__ import annotations

import json

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.codehost.fixlinks import inert
from bot.notify.messages import escape_mrkdwn
from bot.pipeline.events import report_filename
from bot.safety.text import (
    SHORT_ID_LIMIT,
    bound_short_id,
    clean,
    neutralise_bidi,
    normalise_item,
)
from bot.sentry.models import SentryIssue
from bot.testing import FakeSentry
from bot.triage.report import md

RLO = "\u202e"


@pytest.fixture
def fake(clock: FakeClock) -> FakeSentry:
    return FakeSentry(clock=clock, token="tok")


@pytest.fixture
def client(fake: FakeSentry, clock: FakeClock) -> HttpSentryClient:
    transport = httpx.MockTransport(fake.handler)
    return HttpSentryClient(org="acme", token="tok", clock=clock, transport=transport)


def test_nul_surrogate_and_long_short_id_are_tracked_safely(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    ordinary = fake.add_issue(title="Error: ordinary")
    nul = fake.add_issue(title="Error: a\x00b")
    lone = fake.add_issue(title="Error: x\ud800y", metadata={"value": "v\ud800"})
    long_a = fake.add_issue(shortId="A" * 299 + "1")
    long_b = fake.add_issue(shortId="A" * 299 + "2")

    got = {i.id: i for i in client.list_issues(query="")}

    assert set(got) == {ordinary["id"], nul["id"], lone["id"], long_a["id"], long_b["id"]}
    assert got[ordinary["id"]].raw_escaped is None  # the fast path, untouched
    assert got[nul["id"]].title == "Error: ab"
    assert "\\u0000" in (got[nul["id"]].raw_escaped or "")  # the original, kept escaped
    assert got[lone["id"]].title == "Error: xy" and got[lone["id"]].message == "v"
    assert "\\ud800" in (got[lone["id"]].raw_escaped or "")
    short_a, short_b = got[long_a["id"]].short_id, got[long_b["id"]].short_id
    assert len(short_a) <= SHORT_ID_LIMIT and len(short_b) <= SHORT_ID_LIMIT
    assert short_a != short_b  # bounded, still distinct
    for issue in got.values():  # every one serialises (the store's JSON column)
        json.dumps(issue.model_dump(mode="json", by_alias=True)).encode("utf-8")
    assert client.take_quarantined() == []


def test_malformed_issue_is_quarantined_and_the_rest_of_the_page_kept(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    good = [fake.add_issue() for _ in range(3)]
    bad = fake.add_issue(count="lots", title="Error: bad\x00")
    got = [i.id for i in client.list_issues(query="")]
    assert sorted(got) == sorted(g["id"] for g in good)
    [item] = client.take_quarantined()
    assert item.issue_id == bad["id"] and "count" in item.reason
    assert "\\u0000" in item.raw_escaped and item.raw_escaped.isascii()
    assert item.last_seen is not None
    assert client.take_quarantined() == []  # taken once


def test_ids_stay_strings_beyond_two_to_the_53() -> None:
    big = 2**63 - 25
    issue = SentryIssue.model_validate(
        {"id": big, "shortId": "P-1", "title": "t", "project": {"id": 7, "slug": "p"}}
    )
    assert issue.id == str(big) and issue.project.id == "7"


def test_clean_and_normalise_keep_ordinary_text_exactly() -> None:
    text = "Ünïcødé 😀 \\u0000 literal backslash"
    assert clean(text) == text
    item = {"id": "1", "title": text}
    assert normalise_item(item)["title"] == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"invoice{RLO}fdp.exe", "invoice[U+202E]fdp.exe"),
        ("a\u2066b\u2069c", "a[U+2066]b[U+2069]c"),
        ("mark\u200fend", "mark[U+200F]end"),
        ("plain", "plain"),
    ],
)
def test_bidi_controls_are_shown_not_obeyed(text: str, shown: str) -> None:
    assert neutralise_bidi(text) == shown


def test_bound_short_id_is_stable_and_unique() -> None:
    a, b = "X" * 300, "X" * 299 + "Y"
    assert bound_short_id(a) == bound_short_id(a)
    assert bound_short_id(a) != bound_short_id(b)
    assert bound_short_id("BEE-42") == "BEE-42"


@pytest.mark.parametrize(
    "pair",
    [("A/B", "AB"), ("../x", "x"), ("X" * 70 + "1", "X" * 70 + "2"), ("", "issue")],
)
def test_report_file_names_are_safe_and_unique(pair: tuple[str, str]) -> None:
    first, second = (report_filename(s) for s in pair)
    assert first != second
    for name in (first, second):
        assert name.endswith(".md") and "/" not in name and not name.startswith(".")
        assert len(name) <= 80


def test_shown_text_neutralises_bidi_in_slack_pr_comments_and_reports() -> None:
    title = f"Error: txt.{RLO}exe"
    for shown in (escape_mrkdwn(title), inert(title), md(title)):
        assert RLO not in shown and "U+202E" in shown

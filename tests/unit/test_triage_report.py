"""Report rendering without a store: derived action items and escaping rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.triage import TriageConfig, triage
from bot.triage.report import (
    FixFact,
    IssueFacts,
    ReportFacts,
    RunFact,
    action_items,
    md,
    md_link,
    render_report,
    span,
)
from tests.unit.test_triage_seed_cases import CASES, NOW

ISSUE = IssueFacts(
    id="1", short_id="BLUE-BANDED-BEE-6C", title="sql: transaction has already been committed",
    culprit="(*DbQueue).executeOnce", first_seen=NOW - timedelta(hours=6), last_seen=NOW,
)  # fmt: skip


def run(n: int, status: str = "succeeded", rows: int = 2) -> RunFact:
    return RunFact(
        id=f"r{n}", playbook="p", mode="auto", status=status, rows=rows, verify="ok",
        started=NOW, finished=NOW,
    )  # fmt: skip


def test_repeated_remediation_is_hidden_debt_and_code_bug_asks_for_a_regression_test() -> None:
    case = CASES["BLUE-BANDED-BEE-6C double commit"]
    result = triage(case.issue, case.event, TriageConfig(), NOW)
    items = action_items(ReportFacts(issue=ISSUE, triage=result, runs=(run(1), run(2), run(3))))
    text = "\n".join(items)
    assert "Hidden debt: remediated 3 times" in text
    assert "Add a regression test" in text and "\\(\\*DbQueue\\).executeOnce" in text
    assert "Link the fix PR (reference BLUE-BANDED-BEE-6C" in text


def test_single_run_unmerged_pr_and_failed_verification() -> None:
    facts = ReportFacts(
        issue=ISSUE,
        runs=(run(1), run(2, status="verify_failed", rows=0)),
        fixes=(FixFact(repo="acme/crawler", kind="pr", ref="9", url="https://x/pull/9"),),
    )
    text = "\n".join(action_items(facts))
    assert "Hidden debt" not in text  # only one run changed rows
    assert "Link the fix PR" not in text
    assert "Merge the fix [acme/crawler\\#9](https://x/pull/9)" in text
    assert "Investigate run r2: verify\\_failed" in text
    assert "No remediation ran" not in render_report(facts)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<!channel> & <b>", "&lt;\\!channel&gt; &amp; &lt;b&gt;"),
        ("@team ping", "@\u200bteam ping"),
        (
            "`code` *bold* _it_ [l](u) | ~x~",
            "\\`code\\` \\*bold\\* \\_it\\_ \\[l\\]\\(u\\) \\| \\~x\\~",
        ),
        ("line1\n# heading\r\n- item", "line1 \\# heading - item"),
    ],
)
def test_md_escapes_untrusted_text(raw: str, expected: str) -> None:
    assert md(raw) == expected


def test_md_truncates_and_links_only_http() -> None:
    assert len(md("x" * 1000, 50)) == 50
    assert md_link("PR", "javascript:alert(1)") == "PR"
    assert md_link("PR", "https://h/a b)c") == "[PR](https://h/a%20b%29c)"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(minutes=45), "45 min"),
        (timedelta(hours=2), "2 h"),
        (timedelta(days=2, minutes=5), "2 d 5 min"),
        (timedelta(days=1, hours=3, minutes=7), "1 d 3 h 7 min"),
    ],
)
def test_span(delta: timedelta, text: str) -> None:
    assert span(delta) == text

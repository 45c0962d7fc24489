"""Fix links recorded in the store (SQLite and real PostgreSQL), comments via the adapter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlmodel import select

from bot.adapters.github.client import GitHubCodeHost
from bot.clock import FakeClock
from bot.codehost.fixlinks import (
    FixCommit,
    best_fix_commit,
    fix_links,
    scan_fix_links,
    sync_pr_comments,
)
from bot.codehost.port import comment_marker
from bot.store.db import Store
from bot.store.models import FixLink
from bot.testing.github import FakeGitHub

TOKEN = "t-123"
REPO = "acme/api"
SID = "BLUE-BANDED-BEE-42"
MARKER = comment_marker(SID)


@dataclass
class Issue:
    id: str
    short_id: str


ISSUE = Issue("4242", SID)


@pytest.fixture
def fake(clock: FakeClock) -> FakeGitHub:
    gh = FakeGitHub(token=TOKEN, clock=clock, first_comment_id=1_000_001)
    gh.add_pr(REPO, 7, "Requeue stuck tasks", "Fixes BLUE-BANDED-BEE-42")
    gh.add_commit(REPO, "b" * 40, "queue: stop the leak\n\nFixes BLUE-BANDED-BEE-42")
    return gh


@pytest.fixture
def host(fake: FakeGitHub, clock: FakeClock) -> Iterator[GitHubCodeHost]:
    with fake.serve() as url:
        gh = GitHubCodeHost(TOKEN, base_url=url, repos=[REPO], clock=clock)
        yield gh
        gh.close()


def test_scan_records_each_link_once_and_updates_on_merge(
    store: Store, host: GitHubCodeHost, fake: FakeGitHub, clock: FakeClock
) -> None:
    first = scan_fix_links(store, host, [REPO], [ISSUE], clock)
    assert {(x.kind, x.ref) for x in first} == {("pr", "7"), ("commit", "b" * 40)}
    assert scan_fix_links(store, host, [REPO], [ISSUE], clock) == []
    assert len(fix_links(store, ISSUE.id)) == 2
    # Before the PR merges, the best fix is the commit on the default branch.
    assert best_fix_commit(store, ISSUE.id) == FixCommit(REPO, "b" * 40)

    pr = fake.prs[(REPO, 7)]
    pr.merged, pr.state, pr.merge_commit_sha = True, "closed", "a" * 40
    changed = scan_fix_links(store, host, [REPO], [ISSUE], clock)
    assert [(x.ref, x.merged, x.commit_sha) for x in changed] == [("7", True, "a" * 40)]
    assert len(fix_links(store, ISSUE.id)) == 2
    assert best_fix_commit(store, ISSUE.id) == FixCommit(REPO, "a" * 40)
    assert best_fix_commit(store, "no-such-issue") is None


def test_sync_keeps_one_comment_and_skips_unchanged_bodies(
    store: Store, host: GitHubCodeHost, fake: FakeGitHub, clock: FakeClock
) -> None:
    scan_fix_links(store, host, [REPO], [ISSUE], clock)
    assert sync_pr_comments(store, host, ISSUE, f"{MARKER}\nrun 1") == 1
    before = len(fake.requests)
    assert sync_pr_comments(store, host, ISSUE, f"{MARKER}\nrun 1") == 0
    assert len(fake.requests) == before  # the stored hash saved every API call
    assert sync_pr_comments(store, host, ISSUE, "run 2") == 1  # marker added if missing
    # The stored comment id is lost: the marker finds the comment again.
    with store.session() as session:
        for link in session.exec(select(FixLink)).all():
            link.comment_id, link.comment_body_hash = None, None
            session.add(link)
    assert sync_pr_comments(store, host, ISSUE, f"{MARKER}\nrun 3") == 1
    comments = fake.comments(REPO, 7)
    assert [c.body for c in comments] == [f"{MARKER}\nrun 3"]
    pr_link = next(x for x in fix_links(store, ISSUE.id) if x.kind == "pr")
    assert pr_link.comment_id == comments[0].id and pr_link.comment_body_hash


def test_real_github_comment_ids_fit_the_store(
    request: pytest.FixtureRequest, store: Store, clock: FakeClock
) -> None:
    """GitHub issue-comment ids are past 2**31; fix_link.comment_id must hold them."""
    fake = FakeGitHub(token=TOKEN, clock=clock)  # realistic ids (2_400_000_001, ...)
    fake.add_pr(REPO, 7, "Fixes BLUE-BANDED-BEE-42")
    host = fake.codehost()
    scan_fix_links(store, host, [REPO], [ISSUE], clock)
    assert sync_pr_comments(store, host, ISSUE, "hello") == 1
    assert fix_links(store, ISSUE.id)[0].comment_id == fake.comments(REPO, 7)[0].id

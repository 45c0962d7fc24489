"""One contract for the code-host port, run over every backend (as dramatiq's suite is).

Backends: ``in-memory`` (:class:`~bot.testing.github.InMemoryCodeHost` on FakeGitHub's
data), ``pygithub`` (the real :class:`~bot.adapters.github.client.GitHubCodeHost`
talking to FakeGitHub on loopback) and ``prism`` (the same adapter through Prism
validating every exchange against GitHub's own description, @octokit/openapi). Each
test seeds the same fake and makes the same assertions, so the twin cannot drift
from what the adapter makes of GitHub's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from bot.adapters.github.client import GitHubCodeHost
from bot.clock import FakeClock
from bot.codehost.port import CodeHost, comment_marker
from bot.errors import CodeHostError, CodeHostRepoUnavailable, CodeHostRetryLater
from bot.testing.github import FakeGitHub
from tests.contract.conftest import Prism, forward_to

TOKEN = "ghp_" + "k" * 36
REPO = "acme/api"
SID = "BLUE-BANDED-BEE-42"
MARKER = comment_marker(SID)
BACKENDS = [
    "in-memory",
    "pygithub",
    pytest.param("prism", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
]


@dataclass
class Backend:
    name: str
    fake: FakeGitHub
    host: CodeHost
    prism: Prism | None = None


def _seed(fake: FakeGitHub) -> None:
    fake.add_pr(
        REPO, 7, "Requeue stuck tasks", f"Fixes {SID}", merged=True, merge_commit_sha="a" * 40
    )
    fake.add_pr(REPO, 9, f"fix(queue): {SID} orphaned tasks", "no id in body")
    fake.add_pr(REPO, 11, f"Unrelated {SID}0", "about BLUE BANDED BEE 42 only")
    fake.add_pr("acme/web", 3, f"Fixes {SID} elsewhere")
    fake.add_commit(REPO, "b" * 40, f"queue: stop the leak\n\nFixes {SID}")
    fake.add_commit(REPO, "c" * 40, "unrelated change")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    fake = FakeGitHub(token=TOKEN, clock=clock)
    _seed(fake)
    if request.param == "in-memory":
        yield Backend("in-memory", fake, fake.codehost())
        return
    with ExitStack() as stack:
        base_url = stack.enter_context(fake.serve())
        prism: Prism | None = None
        if request.param == "prism":
            prism = request.getfixturevalue("github_prism")
            http = stack.enter_context(httpx.Client(timeout=60))
            prism.upstream.respond = forward_to(http, base_url, lambda _req, resp: resp)
            stack.callback(setattr, prism.upstream, "respond", None)
            fake.public_url = base_url = prism.url  # URLs in answers lead back through Prism
            prism.mark()
        host = GitHubCodeHost(
            TOKEN,
            base_url=base_url,
            repos=[REPO, "acme/web", "acme/private"],
            clock=clock,
            timeout=120,
            min_write_interval=0,
        )
        stack.callback(host.close)
        yield Backend(request.param, fake, host, prism)
        if prism is not None:
            assert prism.violations() == []


def test_finds_prs_by_title_or_body_and_commits_by_message(backend: Backend) -> None:
    refs = backend.host.search_fix_references(REPO, SID)
    # PR 11 names BLUE-BANDED-BEE-420 (not the whole token); acme/web is another repo.
    assert {(r.kind, r.ref) for r in refs} == {("pr", "7"), ("pr", "9"), ("commit", "b" * 40)}
    merged = next(r for r in refs if r.ref == "7")
    assert (merged.merged, merged.state, merged.merge_commit_sha) == (True, "closed", "a" * 40)
    assert merged.fix_sha == "a" * 40
    open_pr = next(r for r in refs if r.ref == "9")
    assert (open_pr.merged, open_pr.state, open_pr.fix_sha) == (False, "open", None)
    assert open_pr.url == f"https://github.com/{REPO}/pull/9"
    assert open_pr.title == f"fix(queue): {SID} orphaned tasks"
    commit = next(r for r in refs if r.kind == "commit")
    assert (commit.title, commit.state, commit.fix_sha) == (
        "queue: stop the leak",
        "default_branch",
        "b" * 40,
    )
    assert commit.url == f"https://github.com/{REPO}/commit/{'b' * 40}"


def test_nothing_found_is_an_empty_list(backend: Backend) -> None:
    assert backend.host.search_fix_references(REPO, "OTHER-1") == []


def test_a_repository_github_cannot_search_is_unavailable(backend: Backend) -> None:
    with pytest.raises(CodeHostRepoUnavailable):
        backend.host.search_fix_references("acme/private", SID)


def test_three_upserts_leave_exactly_one_edited_comment(backend: Backend) -> None:
    host, fake = backend.host, backend.fake
    fake.add_comment(REPO, 7, "LGTM, a human")
    first = host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv1")
    second = host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv2", comment_id=first)
    third = host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv3")  # stored id lost
    assert first == second == third
    assert [c.body for c in fake.comments(REPO, 7)] == ["LGTM, a human", f"{MARKER}\nv3"]


def test_an_unchanged_body_is_not_edited_again(backend: Backend, clock: FakeClock) -> None:
    cid = backend.host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nsame")
    created = backend.fake.comment(cid)
    assert created is not None
    stamp = created.updated_at
    clock.advance(seconds=30)
    assert backend.host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nsame", comment_id=cid) == cid
    assert created.updated_at == stamp


def test_the_marker_is_put_in_front_of_a_body_without_it(backend: Backend) -> None:
    cid = backend.host.upsert_pr_comment(REPO, 9, MARKER, "watching")
    assert [c.body for c in backend.fake.comments(REPO, 9)] == [f"{MARKER}\nwatching"]
    assert backend.host.upsert_pr_comment(REPO, 9, MARKER, "resolved") == cid


def test_a_stale_comment_id_of_someone_else_is_not_edited(backend: Backend) -> None:
    host, fake = backend.host, backend.fake
    human = fake.add_comment(REPO, 7, "please don't touch")
    elsewhere = host.upsert_pr_comment(REPO, 9, MARKER, f"{MARKER}\non 9")
    ours = host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv1", comment_id=human)
    assert ours not in (human, elsewhere)
    again = host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv2", comment_id=elsewhere)
    assert again == ours
    assert [c.body for c in fake.comments(REPO, 7)] == ["please don't touch", f"{MARKER}\nv2"]
    assert [c.body for c in fake.comments(REPO, 9)] == [f"{MARKER}\non 9"]
    fake.delete_comment(ours)
    assert host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nv3", comment_id=ours) != ours
    assert [c.body for c in fake.comments(REPO, 7)] == ["please don't touch", f"{MARKER}\nv3"]


def test_a_comment_on_a_missing_pull_request_fails(backend: Backend) -> None:
    with pytest.raises(CodeHostError) as info:
        backend.host.upsert_pr_comment(REPO, 404, MARKER, "x")
    assert not isinstance(info.value, CodeHostRetryLater)


def test_a_comment_over_githubs_limit_is_refused_before_sending(backend: Backend) -> None:
    sent = len(backend.fake.requests)
    with pytest.raises(CodeHostError, match="too long"):
        backend.host.upsert_pr_comment(REPO, 7, MARKER, "x" * 65536)
    assert len(backend.fake.requests) == sent
    assert backend.fake.comments(REPO, 7) == []


def test_get_commit_known_and_unknown(backend: Backend) -> None:
    found = backend.host.get_commit(REPO, "b" * 40)
    assert found is not None
    assert (found.kind, found.sha, found.state, found.title) == (
        "commit",
        "b" * 40,
        "exists",
        "queue: stop the leak",
    )
    assert backend.host.get_commit(REPO, "d" * 40) is None  # GitHub: 422, not 404


def test_a_secondary_rate_limit_is_retry_later_with_githubs_wait(backend: Backend) -> None:
    backend.fake.fail_next(
        "GET",
        "/search/issues",
        403,
        {"message": "You have exceeded a secondary rate limit.", "documentation_url": "x"},
        {"Retry-After": "120"},
    )
    with pytest.raises(CodeHostRetryLater) as info:
        backend.host.search_fix_references(REPO, SID)
    assert info.value.retry_after == 120.0


def test_a_github_outage_is_retry_later(backend: Backend) -> None:
    # 500, not 502-504: the adapter's urllib3 Retry re-sends those on its own first.
    backend.fake.fail_next("GET", "/commits/", 500, {"message": "Server Error"})
    with pytest.raises(CodeHostRetryLater) as info:
        backend.host.get_commit(REPO, "b" * 40)
    assert info.value.retry_after is not None and info.value.retry_after > 0

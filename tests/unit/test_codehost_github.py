"""The PyGithub adapter against the fake GitHub on a loopback port: its own behaviour.

What every code host must do (search, one comment per PR, commits, error types) is the
contract suite tests/contract/test_codehost_contract.py, run over this adapter, the
in-memory twin and the adapter behind Prism; here are the adapter's rate-limit
bookkeeping, pagination, GitHub Enterprise paths and secrecy of the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from bot.adapters.github.client import GitHubCodeHost
from bot.clock import FakeClock
from bot.codehost.port import comment_marker
from bot.errors import CodeHostError, CodeHostRetryLater
from bot.testing.github import FakeGitHub

TOKEN = "ghp_s3cretT0kenValue"
REPO = "acme/api"
SID = "BLUE-BANDED-BEE-42"
MARKER = comment_marker(SID)

Factory = Callable[..., GitHubCodeHost]


@pytest.fixture
def fake(clock: FakeClock) -> FakeGitHub:
    gh = FakeGitHub(token=TOKEN, clock=clock)
    gh.add_pr(
        REPO,
        7,
        "Requeue stuck tasks",
        "Fixes BLUE-BANDED-BEE-42",
        merged=True,
        merge_commit_sha="a" * 40,
    )
    gh.add_pr(REPO, 9, "fix(queue): BLUE-BANDED-BEE-42 orphaned tasks", "no id in body")
    gh.add_pr(REPO, 11, "Unrelated BLUE-BANDED-BEE-420", "about BLUE BANDED BEE 42 only")
    gh.add_pr("acme/web", 3, "Fixes BLUE-BANDED-BEE-42 elsewhere")
    gh.add_commit(REPO, "b" * 40, "queue: stop the leak\n\nFixes BLUE-BANDED-BEE-42")
    gh.add_commit(REPO, "c" * 40, "unrelated change")
    return gh


@pytest.fixture
def api_url(fake: FakeGitHub) -> Iterator[str]:
    with fake.serve() as url:
        yield url


@pytest.fixture
def make_host(api_url: str, clock: FakeClock) -> Iterator[Factory]:
    made: list[GitHubCodeHost] = []

    def make(**kw: object) -> GitHubCodeHost:
        kw.setdefault("base_url", api_url)
        kw.setdefault("repos", [REPO, "acme/web"])
        host = GitHubCodeHost(str(kw.pop("token", TOKEN)), clock=clock, **kw)  # type: ignore[arg-type]
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


def test_github_enterprise_base_path(fake: FakeGitHub, clock: FakeClock) -> None:
    with fake.serve(path_prefix="/api/v3") as url:
        assert url.endswith("/api/v3")
        ghe = GitHubCodeHost(TOKEN, base_url=url, repos=[REPO], clock=clock)
        refs = ghe.search_fix_references(REPO, SID)
        assert {r.ref for r in refs} == {"7", "9", "b" * 40}
        cid = ghe.upsert_pr_comment(REPO, 9, MARKER, "body")
        assert fake.comment(cid) is not None and fake.comment(cid).body == f"{MARKER}\nbody"  # type: ignore[union-attr]
        ghe.close()
        # The same server without the /api/v3 prefix is not GitHub: 404.
        wrong = GitHubCodeHost(TOKEN, base_url=url.removesuffix("/api/v3"), clock=clock)
        with pytest.raises(CodeHostError, match="404"):
            wrong.search_fix_references(REPO, SID)
        wrong.close()


def test_scans_paginated_comments_and_skips_unchanged_body(
    make_host: Factory, fake: FakeGitHub
) -> None:
    host = make_host(per_page=2)
    for i in range(5):
        fake.add_comment(REPO, 7, f"human {i}")
    cid = fake.add_comment(REPO, 7, f"{MARKER}\nold", user="sentry-remediation-bot")
    assert host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nnew") == cid
    pages = {r.query.get("page", "1") for r in fake.requests_to(f"/repos/{REPO}/issues/7/comments")}
    assert pages == {"1", "2", "3"}
    patches = len(fake.requests_to("/repos/", "PATCH"))
    assert host.upsert_pr_comment(REPO, 7, MARKER, f"{MARKER}\nnew", comment_id=cid) == cid
    assert len(fake.requests_to("/repos/", "PATCH")) == patches  # unchanged: not sent
    assert len(fake.comments(REPO, 7)) == 6


def test_client_search_budget_stops_the_31st_search(
    make_host: Factory, fake: FakeGitHub, clock: FakeClock
) -> None:
    host = make_host()
    for _ in range(15):  # two searches each: issues + commits
        host.search_fix_references(REPO, SID)
    assert len(fake.requests_to("/search/")) == 30
    with pytest.raises(CodeHostRetryLater) as info:
        host.search_fix_references(REPO, SID)
    assert len(fake.requests_to("/search/")) == 30  # never sent
    assert info.value.retry_after is not None and 55 <= info.value.retry_after <= 60
    clock.advance(seconds=61)
    assert host.search_fix_references(REPO, SID)


def test_server_primary_search_limit_yields_retry_later_until_reset(
    make_host: Factory, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.search_limit = 3
    host = make_host(search_per_minute=100)
    host.search_fix_references(REPO, SID)
    with pytest.raises(CodeHostRetryLater) as info:
        host.search_fix_references(REPO, SID)  # 3rd ok (remaining 0), so 4th is not sent
    assert info.value.retry_after is not None and 55 <= info.value.retry_after <= 62
    assert len(fake.requests_to("/search/")) == 3
    clock.advance(seconds=62)
    assert host.search_fix_references(REPO, SID)


def test_secondary_limit_short_retry_after_is_slept_on_the_clock(
    make_host: Factory, fake: FakeGitHub, clock: FakeClock
) -> None:
    host = make_host()
    fake.fail_next(
        "POST",
        "/issues/9/comments",
        403,
        {"message": "You have exceeded a secondary rate limit."},
        {"Retry-After": "3"},
    )
    cid = host.upsert_pr_comment(REPO, 9, MARKER, f"{MARKER}\nhello")
    assert 3.0 in clock.sleeps
    assert [c.id for c in fake.comments(REPO, 9)] == [cid]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (403, {"Retry-After": "120"}, 120.0),
        (429, {"Retry-After": "90"}, 90.0),
        (403, {}, 60.0),  # secondary message without Retry-After: at least a minute
    ],
)
def test_secondary_limit_long_wait_raises_and_blocks_further_calls(
    make_host: Factory,
    fake: FakeGitHub,
    clock: FakeClock,
    status: int,
    headers: dict[str, str],
    expected: float,
) -> None:
    host = make_host()
    fake.fail_next(
        "POST",
        "/issues/9/comments",
        status,
        {"message": "You have exceeded a secondary rate limit."},
        headers,
    )
    with pytest.raises(CodeHostRetryLater) as info:
        host.upsert_pr_comment(REPO, 9, MARKER, "x")
    assert info.value.retry_after == expected
    sent = len(fake.requests)
    with pytest.raises(CodeHostRetryLater):
        host.get_commit(REPO, "b" * 40)
    assert len(fake.requests) == sent  # refused locally
    clock.advance(seconds=expected + 1)
    assert host.get_commit(REPO, "b" * 40) is not None
    assert not clock.sleeps or max(clock.sleeps) <= 5


def test_token_never_in_errors_or_logs(
    make_host: Factory, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.token = "another-token"
    host = make_host()
    with pytest.raises(CodeHostError) as info:
        host.search_fix_references(REPO, SID)
    fake.token = TOKEN
    fake.fail_next("GET", "/commits/", 500, {"message": "boom"})
    with pytest.raises(CodeHostRetryLater) as info5xx:
        make_host(retry=None).get_commit(REPO, "b" * 40)
    texts = [repr(host), caplog.text]
    for exc in (info.value, info5xx.value):
        assert exc.context.get("status") in (401, 500)
        chain: BaseException | None = exc
        while chain is not None:
            texts += [str(chain), repr(chain)]
            chain = chain.__cause__
    assert not [t for t in texts if TOKEN in t]


def test_repo_outside_allowlist_is_refused(make_host: Factory, fake: FakeGitHub) -> None:
    with pytest.raises(CodeHostError, match="GITHUB_REPOS"):
        make_host(repos=["acme/web"]).upsert_pr_comment(REPO, 7, MARKER, "x")
    assert fake.requests == []

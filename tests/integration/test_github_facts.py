"""DESIGN.md "GitHub — facts the code host must respect", on SQLite and PostgreSQL stores.

- Search answers **422 "Validation Failed"** for a ``repo:`` the token cannot see
  (the body GitHub sends is quoted in changesets/action#252 and
  googleapis/release-please#948); one such repository must not stop the others.
- "Blocked until" survives from one step (one ``GitHubCodeHost``) to the next, and is
  shared by replicas through the state store: no request is sent while blocked.
- Every request sends ``Accept: application/vnd.github+json`` and
  ``X-GitHub-Api-Version`` (GitHub REST docs, "API versions" / "Media types"); the
  obsolete commit-search preview type is not sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bot.adapters.github.blocks import StoreBlocks
from bot.adapters.github.client import API_VERSION, GITHUB_JSON, GitHubCodeHost
from bot.clock import FakeClock
from bot.codehost.fixlinks import scan_fix_links
from bot.errors import CodeHostRepoUnavailable, CodeHostRetryLater
from bot.store.db import Store
from bot.testing.github import FakeGitHub

TOKEN = "ghp_" + "f" * 36
SID = "API-7Q"


@dataclass(frozen=True)
class Ref:
    id: str
    short_id: str


@pytest.fixture
def github(clock: FakeClock) -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub(token=TOKEN, clock=clock)
    fake.add_pr("acme/api", 12, f"Fixes {SID}", merged=True, merge_commit_sha="d" * 40)
    fake.add_pr("acme/web", 4, f"Also {SID}")
    with fake.serve() as url:
        yield fake, url


def _host(url: str, clock: FakeClock, store: Store | None = None) -> GitHubCodeHost:
    return GitHubCodeHost(
        TOKEN,
        base_url=url,
        repos=["acme/api", "acme/private", "acme/web"],
        clock=clock,
        blocks=StoreBlocks(store) if store is not None else None,
        max_wait=1,
    )


def test_an_unsearchable_repo_is_skipped_and_the_others_scanned(
    store: Store, clock: FakeClock, github: tuple[FakeGitHub, str]
) -> None:
    fake, url = github
    host = _host(url, clock)
    with pytest.raises(CodeHostRepoUnavailable):
        host.search_fix_references("acme/private", SID)
    unavailable: list[str] = []
    links = scan_fix_links(
        store,
        host,
        ["acme/api", "acme/private", "acme/web"],
        [Ref("1", SID), Ref("2", "API-8Z")],
        clock,
        unavailable=unavailable,
    )
    host.close()
    assert sorted((link.repo, link.ref) for link in links) == [
        ("acme/api", "12"),
        ("acme/web", "4"),
    ]
    assert unavailable == ["acme/private"]
    private = [r for r in fake.requests if "acme/private" in r.query.get("q", "")]
    assert len(private) == 2  # the direct call + once in the scan, not once per issue


def test_blocked_until_survives_into_the_next_step_and_replica(
    store: Store, clock: FakeClock, github: tuple[FakeGitHub, str]
) -> None:
    fake, url = github
    fake.fail_next(
        "GET",
        "/search/issues",
        403,
        {"message": "You have exceeded a secondary rate limit."},
        {"Retry-After": "600"},
    )
    first = _host(url, clock, store)
    with pytest.raises(CodeHostRetryLater):
        first.search_fix_references("acme/api", SID)
    first.close()
    sent = len(fake.requests)

    clock.advance(seconds=300)
    second = _host(url, clock, store)  # the next step, or another replica
    with pytest.raises(CodeHostRetryLater) as refused:
        second.search_fix_references("acme/api", SID)
    assert len(fake.requests) == sent  # refused locally: nothing sent while blocked
    assert refused.value.retry_after is not None and 299 <= refused.value.retry_after <= 301

    clock.advance(seconds=301)
    assert [r.ref for r in second.search_fix_references("acme/api", SID)] == ["12"]
    second.close()


def test_every_request_sends_the_json_media_type_and_api_version(
    clock: FakeClock, github: tuple[FakeGitHub, str]
) -> None:
    fake, url = github
    fake.add_commit("acme/api", "e" * 40, f"queue: fix\n\nFixes {SID}")
    host = _host(url, clock)
    refs = host.search_fix_references("acme/api", SID)
    host.upsert_pr_comment("acme/api", 12, "<!-- m -->", "hello")
    host.get_commit("acme/api", "e" * 40)
    host.close()
    assert {r.kind for r in refs} == {"pr", "commit"}
    assert fake.requests
    assert {(r.accept, r.api_version) for r in fake.requests} == {(GITHUB_JSON, API_VERSION)}

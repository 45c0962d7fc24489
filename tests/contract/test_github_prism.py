"""Every GitHubCodeHost call through Prism, and every exchange through openapi-core.

GitHub's own description (@octokit/openapi ``generated/api.github.com.deref.json``,
cut to :data:`tests.contract.specs.GITHUB_OPERATIONS`: issue and commit search, pull
request, commit, PR comments list/create/get/edit) validates the real PyGithub
adapter's requests and FakeGitHub's answers twice: Prism as a proxy, and openapi-core
on each recorded exchange, because Prism silently skipped the response bodies of issue
search and get-commit (DESIGN.md, "GitHub — facts the code host must respect").
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from bot.adapters.github.client import GitHubCodeHost
from bot.clock import FakeClock
from bot.codehost.port import comment_marker
from bot.errors import CodeHostError, CodeHostRepoUnavailable
from bot.testing.github import FakeGitHub
from tests.contract.conftest import Prism, forward_to
from tests.contract.openapi_check import OpenApiChecker

# Session fixtures start Prism (and load a 13 MB description) inside the first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "ghp_" + "c" * 36
SID = "API-7Q"
Edit = Callable[[httpx.Request, httpx.Response], httpx.Response]


@pytest.fixture(scope="session")
def checker(github_spec: dict[str, object]) -> OpenApiChecker:
    return OpenApiChecker(dict(github_spec))


@dataclass
class Proxied:
    prism: Prism
    fake: FakeGitHub
    host: GitHubCodeHost
    exchanges: list[tuple[httpx.Request, httpx.Response]] = field(default_factory=list)
    edit: Edit | None = None


@pytest.fixture
def proxied(github_prism: Prism, clock: FakeClock) -> Iterator[Proxied]:
    fake = FakeGitHub(token=TOKEN, clock=clock)
    fake.add_pr("acme/api", 12, f"Fixes {SID}", merged=True, merge_commit_sha="d" * 40)
    fake.add_commit("acme/api", "e" * 40, f"queue: stop the leak\n\nFixes {SID}")
    with fake.serve() as fake_url, httpx.Client(timeout=60) as http:
        state = Proxied(github_prism, fake, None)  # type: ignore[arg-type]

        def after(request: httpx.Request, response: httpx.Response) -> httpx.Response:
            if state.edit is not None:
                response = state.edit(request, response)
            state.exchanges.append((request, response))
            return response

        github_prism.upstream.respond = forward_to(http, fake_url, after)
        fake.public_url = github_prism.url  # URLs in answers lead back through Prism
        github_prism.mark()
        state.host = GitHubCodeHost(
            TOKEN,
            base_url=github_prism.url,
            repos=["acme/api", "acme/private"],
            clock=clock,
            timeout=120,
            min_write_interval=0,
        )
        try:
            yield state
        finally:
            state.host.close()
            github_prism.upstream.respond = None


def test_every_code_host_call_passes_both_validators(
    proxied: Proxied, checker: OpenApiChecker
) -> None:
    host = proxied.host
    refs = host.search_fix_references("acme/api", SID)
    assert {(r.kind, r.ref) for r in refs} == {("pr", "12"), ("commit", "e" * 40)}
    marker = comment_marker(SID)
    first = host.upsert_pr_comment("acme/api", 12, marker, "watching")
    again = host.upsert_pr_comment("acme/api", 12, marker, "resolved", comment_id=first)
    scanned = host.upsert_pr_comment("acme/api", 12, marker, "regressed")
    assert first == again == scanned
    assert host.get_commit("acme/api", "e" * 40) is not None
    assert host.get_commit("acme/api", "f" * 40) is None  # GitHub's 422 for an unknown sha
    with pytest.raises(CodeHostRepoUnavailable):  # 422 for a repo: it cannot see
        host.search_fix_references("acme/private", SID)

    assert proxied.prism.violations() == []
    problems = [p for req, resp in proxied.exchanges for p in checker.problems(req, resp)]
    assert problems == []
    paths = {(r.method, r.url.path.split("/")[1]) for r, _ in proxied.exchanges}
    assert {("GET", "search"), ("GET", "repos"), ("POST", "repos"), ("PATCH", "repos")} <= paths


def test_positive_control_prism_reports_a_pull_request_without_head(proxied: Proxied) -> None:
    def no_head(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "/pulls/" not in request.url.path:
            return response
        data = response.json()
        data.pop("head")
        return httpx.Response(response.status_code, headers=response.headers, json=data)

    proxied.edit = no_head
    with pytest.raises(CodeHostError):  # Prism answered 500 instead of the fake's body
        proxied.host.search_fix_references("acme/api", SID)
    assert proxied.prism.violations()


def test_positive_control_openapi_core_reports_what_prism_may_skip(
    proxied: Proxied, checker: OpenApiChecker
) -> None:
    def strip(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/search/issues":
            return response
        data = response.json()
        data.pop("search_type")
        data["items"][0].pop("user")
        return httpx.Response(response.status_code, headers=response.headers, json=data)

    proxied.edit = strip
    with contextlib.suppress(CodeHostError):  # whether Prism notices or not,
        proxied.host.search_fix_references("acme/api", SID)  # openapi-core must
    [(request, response)] = [x for x in proxied.exchanges if x[0].url.path == "/search/issues"]
    problems = checker.problems(request, response)
    assert problems and any("search_type" in p for p in problems), json.dumps(problems)[:500]

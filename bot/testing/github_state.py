"""The state behind the fake GitHub, shared by its REST server and its in-memory twin.

:class:`GitHubState` holds what a GitHub account would: repositories, pull requests,
commits on the default branch, issue comments, and the core and search rate budgets.
It sits below both :mod:`bot.testing.github_http` (the REST handler) and
:mod:`bot.testing.github` (``FakeGitHub``, ``InMemoryCodeHost``), so neither imports
the other's internals.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bot.clock import Clock, SystemClock
from bot.json_types import JsonValue

BOT_LOGIN = "sentry-remediation-bot"


@dataclass
class FakePR:
    repo: str
    number: int
    title: str
    body: str
    state: str
    merged: bool
    merge_commit_sha: str | None
    created_at: datetime
    user: str = "octocat"


@dataclass
class FakeCommit:
    repo: str
    sha: str
    message: str
    date: datetime


@dataclass
class FakeComment:
    id: int
    repo: str
    number: int
    body: str
    user: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the API prefix, e.g. /search/issues
    query: dict[str, str]
    accept: str = ""  # the Accept header
    api_version: str = ""  # X-GitHub-Api-Version


@dataclass
class InjectedFailure:
    method: str
    path_contains: str
    status: int
    body: JsonValue
    headers: dict[str, str] = field(default_factory=dict)


class GitHubState:
    """What the fake GitHub knows: repos, pull requests, commits, comments, rate budgets.

    The loopback server (:mod:`bot.testing.github_http`) and the in-memory twin
    (:class:`bot.testing.github.InMemoryCodeHost`) both read and write it under ``lock``.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        clock: Clock | None = None,
        search_limit: int = 30,
        search_limit_style: Literal["primary", "secondary"] = "primary",
        core_limit: int = 5000,
        first_comment_id: int = 2_400_000_001,
    ) -> None:
        self.token = token
        self.clock: Clock = clock or SystemClock()
        self.search_limit = search_limit
        self.search_limit_style = search_limit_style
        self.core_limit = core_limit
        self.lock = threading.RLock()
        self.repos: set[str] = set()
        self.prs: dict[tuple[str, int], FakePR] = {}
        self.commits: dict[tuple[str, str], FakeCommit] = {}
        self._comments: dict[int, FakeComment] = {}
        # Real issue-comment ids have passed 2**31, so the fake's do too by default.
        self._next_comment_id = first_comment_id
        self.requests: list[RecordedRequest] = []
        self.failures: list[InjectedFailure] = []
        self.search_window_start: float | None = None
        self.search_used = 0
        self.core_used = 0
        # The base URL the fake writes into its answers (``url`` fields, Link headers)
        # when clients reach it through a proxy such as Prism; None: its own address.
        self.public_url: str | None = None

    # -- seeding -----------------------------------------------------------------
    def add_repo(self, repo: str) -> None:
        with self.lock:
            self.repos.add(repo)

    def add_pr(
        self,
        repo: str,
        number: int,
        title: str,
        body: str = "",
        *,
        merged: bool = False,
        merge_commit_sha: str | None = None,
        state: str | None = None,
    ) -> FakePR:
        """Add a pull request (merged ones are closed and need a ``merge_commit_sha``)."""
        if merged and not merge_commit_sha:
            raise ValueError("a merged PR needs merge_commit_sha")
        pr = FakePR(
            repo=repo,
            number=number,
            title=title,
            body=body,
            state=state or ("closed" if merged else "open"),
            merged=merged,
            merge_commit_sha=merge_commit_sha,
            created_at=self.clock.now(),
        )
        with self.lock:
            self.repos.add(repo)
            self.prs[(repo, number)] = pr
        return pr

    def add_commit(self, repo: str, sha: str, message: str) -> FakeCommit:
        """Add a commit on the default branch."""
        commit = FakeCommit(repo=repo, sha=sha, message=message, date=self.clock.now())
        with self.lock:
            self.repos.add(repo)
            self.commits[(repo, sha)] = commit
        return commit

    def add_comment(self, repo: str, number: int, body: str, *, user: str = "octocat") -> int:
        """Add a comment as someone else (a human reviewer, by default)."""
        with self.lock:
            if (repo, number) not in self.prs:
                raise KeyError(f"no PR {repo}#{number}")
            return self._create_comment(repo, number, body, user).id

    def fail_next(
        self,
        method: str,
        path_contains: str,
        status: int,
        body: JsonValue,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``method`` request whose path contains ``path_contains`` with this."""
        with self.lock:
            self.failures.append(
                InjectedFailure(method.upper(), path_contains, status, body, headers or {})
            )

    # -- inspection --------------------------------------------------------------
    def comments(self, repo: str, number: int) -> list[FakeComment]:
        """The comments on PR ``number``, oldest first."""
        with self.lock:
            return sorted(
                (c for c in self._comments.values() if (c.repo, c.number) == (repo, number)),
                key=lambda c: c.id,
            )

    def comment(self, comment_id: int) -> FakeComment | None:
        with self.lock:
            return self._comments.get(comment_id)

    def delete_comment(self, comment_id: int) -> None:
        """Delete a comment, as a human might."""
        with self.lock:
            self._comments.pop(comment_id, None)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(path_prefix) and (method is None or r.method == method)
            ]

    # -- used by the handler and the in-memory twin --------------------------------
    def take_failure(self, method: str, path: str) -> InjectedFailure | None:
        """The first injected failure for ``method`` ``path``, removed (call under ``lock``)."""
        for failure in self.failures:
            if failure.method == method and failure.path_contains in path:
                self.failures.remove(failure)
                return failure
        return None

    def _create_comment(self, repo: str, number: int, body: str, user: str) -> FakeComment:
        now = self.clock.now()
        comment = FakeComment(self._next_comment_id, repo, number, body, user, now, now)
        self._next_comment_id += 1
        self._comments[comment.id] = comment
        return comment

    def now_epoch(self) -> float:
        return self.clock.now().astimezone(UTC).timestamp()

"""A fake GitHub for tests: a REST server on a loopback port, and an in-memory twin.

PyGithub talks through ``requests``, so it cannot be faked at an httpx transport; the
real adapter is pointed at ``FakeGitHub().serve()`` instead::

    fake = FakeGitHub(token="t", clock=clock)
    fake.add_pr("acme/api", 7, "Fixes BEE-42", body="...", merged=True, merge_commit_sha="ab12")
    with fake.serve() as api_url:                     # or serve(path_prefix="/api/v3") for GHE
        host = GitHubCodeHost("t", base_url=api_url, repos=["acme/api"], clock=clock)

It implements only what the adapter calls, with GitHub's response shapes: repos,
issue and commit search (with the 30-per-minute search budget on ``clock``), pulls,
issue comments (list with ``Link`` pagination, create, get, edit), commits and
``/rate_limit``; every answer carries ``X-RateLimit-*`` headers and a missing or
wrong token gets 401. ``fail_next`` injects one error answer (e.g. a secondary rate
limit with ``Retry-After``). ``fake.requests`` logs what was asked, without headers.

:class:`InMemoryCodeHost` implements the port directly over the same data, recording
calls, for unit tests of code that only needs *a* code host.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any, Literal

from bot.clock import Clock, SystemClock
from bot.codehost.port import FixRef, has_marker, mentions_short_id
from bot.errors import CodeHostError
from bot.testing.github_http import FakeGitHubHandler

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
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeGitHub:
    """GitHub's state plus a loopback server speaking its REST API (see module doc)."""

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
        body: Any,
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
    def _create_comment(self, repo: str, number: int, body: str, user: str) -> FakeComment:
        now = self.clock.now()
        comment = FakeComment(self._next_comment_id, repo, number, body, user, now, now)
        self._next_comment_id += 1
        self._comments[comment.id] = comment
        return comment

    def now_epoch(self) -> float:
        return self.clock.now().astimezone(UTC).timestamp()

    # -- serving ---------------------------------------------------------------------
    @contextmanager
    def serve(self, path_prefix: str = "") -> Iterator[str]:
        """Serve the REST API on 127.0.0.1; yields the base URL (``…/api/v3`` for GHE)."""
        prefix = path_prefix.rstrip("/")
        handler = type("BoundHandler", (FakeGitHubHandler,), {"github": self, "prefix": prefix})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-github", daemon=True
        )
        thread.start()
        host, port = server.server_address[:2]
        try:
            yield f"http://{host!s}:{port}{prefix}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def codehost(self) -> InMemoryCodeHost:
        """An in-memory :class:`~bot.codehost.port.CodeHost` over this fake's data."""
        return InMemoryCodeHost(self)


class InMemoryCodeHost:
    """The port implemented directly on a :class:`FakeGitHub`'s data; records calls."""

    def __init__(self, github: FakeGitHub) -> None:
        self.github = github
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def search_fix_references(self, repo: str, short_id: str) -> list[FixRef]:
        self.calls.append(("search_fix_references", (repo, short_id)))
        gh = self.github
        with gh.lock:
            prs = [
                p
                for p in gh.prs.values()
                if p.repo == repo
                and (mentions_short_id(p.title, short_id) or mentions_short_id(p.body, short_id))
            ]
            commits = [
                c
                for c in gh.commits.values()
                if c.repo == repo and mentions_short_id(c.message, short_id)
            ]
        refs = [_pr_ref(p) for p in sorted(prs, key=lambda p: -p.number)]
        refs += [_commit_ref(c, "default_branch") for c in commits]
        return refs

    def upsert_pr_comment(
        self, repo: str, number: int, marker: str, body: str, *, comment_id: int | None = None
    ) -> int:
        self.calls.append(("upsert_pr_comment", (repo, number, marker, body, comment_id)))
        gh = self.github
        with gh.lock:
            if (repo, number) not in gh.prs:
                raise CodeHostError("pull request not found", repo=repo, number=number)
            known = gh.comment(comment_id) if comment_id is not None else None
            if known is None or (known.repo, known.number) != (repo, number):
                known = None
            if known is None or not has_marker(known.body, marker):
                known = next(
                    (c for c in gh.comments(repo, number) if has_marker(c.body, marker)), None
                )
            if known is None:
                return gh._create_comment(repo, number, body, BOT_LOGIN).id
            if known.body != body:
                known.body = body
                known.updated_at = gh.clock.now()
            return known.id

    def get_commit(self, repo: str, sha: str) -> FixRef | None:
        self.calls.append(("get_commit", (repo, sha)))
        with self.github.lock:
            commit = self.github.commits.get((repo, sha))
        return _commit_ref(commit, "exists") if commit else None


def _pr_ref(pr: FakePR) -> FixRef:
    return FixRef(
        kind="pr",
        repo=pr.repo,
        number=pr.number,
        sha=None,
        title=pr.title,
        url=f"https://github.com/{pr.repo}/pull/{pr.number}",
        merged=pr.merged,
        merge_commit_sha=pr.merge_commit_sha,
        state=pr.state,
    )


def _commit_ref(commit: FakeCommit, state: str) -> FixRef:
    return FixRef(
        kind="commit",
        repo=commit.repo,
        number=None,
        sha=commit.sha,
        title=commit.message.splitlines()[0] if commit.message else "",
        url=f"https://github.com/{commit.repo}/commit/{commit.sha}",
        merged=state == "default_branch",
        merge_commit_sha=None,
        state=state,
    )

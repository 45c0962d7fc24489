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
calls, for unit tests of code that only needs *a* code host. It answers as the real
adapter does on the served API (tests/contract/test_codehost_contract.py runs one suite
over both): the marker is put in front of a body that lacks it, a repository GitHub
does not know is :class:`~bot.errors.CodeHostRepoUnavailable`, and ``fail_next``
failures become the same errors (rate limits and 5xx: ``CodeHostRetryLater``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

from bot.codehost.port import FixRef, has_marker, mentions_short_id
from bot.errors import CodeHostError, CodeHostRepoUnavailable, CodeHostRetryLater
from bot.testing.github_http import FakeGitHubHandler
from bot.testing.github_state import (
    BOT_LOGIN,
    FakeComment,
    FakeCommit,
    FakePR,
    GitHubState,
    InjectedFailure,
    RecordedRequest,
)

MAX_COMMENT_CHARS = 65536  # GitHub refuses a longer issue comment (422)
SECONDARY_WAIT = 60.0  # GitHub: without Retry-After, wait at least a minute

__all__ = [
    "BOT_LOGIN",
    "FakeComment",
    "FakeCommit",
    "FakeGitHub",
    "FakePR",
    "InMemoryCodeHost",
    "InjectedFailure",
    "RecordedRequest",
]


class FakeGitHub(GitHubState):
    """GitHub's state plus a loopback server speaking its REST API (see module doc)."""

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

    def __init__(self, github: GitHubState) -> None:
        self.github = github
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def search_fix_references(self, repo: str, short_id: str) -> list[FixRef]:
        self.calls.append(("search_fix_references", (repo, short_id)))
        gh = self.github
        with gh.lock:
            self._fail_if_injected("GET", "/search/issues")
            if repo not in gh.repos:
                # GitHub's search answers 422 for a repo: it cannot see (github_http.py).
                raise CodeHostRepoUnavailable("GitHub cannot search this repository", repo=repo)
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
        if not has_marker(body, marker):
            body = f"{marker}\n{body}"
        if len(body) > MAX_COMMENT_CHARS:
            raise CodeHostError("comment body too long", repo=repo, number=number)
        gh = self.github
        with gh.lock:
            self._fail_if_injected("GET", f"/repos/{repo}/issues/{number}/comments")
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
                self._fail_if_injected("POST", f"/repos/{repo}/issues/{number}/comments")
                return gh._create_comment(repo, number, body, BOT_LOGIN).id
            if known.body != body:
                known.body = body
                known.updated_at = gh.clock.now()
            return known.id

    def get_commit(self, repo: str, sha: str) -> FixRef | None:
        self.calls.append(("get_commit", (repo, sha)))
        with self.github.lock:
            self._fail_if_injected("GET", f"/repos/{repo}/commits/{sha}")
            commit = self.github.commits.get((repo, sha))
        return _commit_ref(commit, "exists") if commit else None

    def _fail_if_injected(self, method: str, path: str) -> None:
        """Raise what the real adapter raises for an injected answer (``fail_next``).

        GitHub's rate-limit answers (403/429 with ``Retry-After`` or the secondary-limit
        message; docs "Rate limits for the REST API") and 5xx mean "try again later";
        any other status is a failure.
        """
        failure = self.github.take_failure(method, path)
        if failure is None:
            return
        status, headers = failure.status, {k.lower(): v for k, v in failure.headers.items()}
        message = failure.body.get("message", "") if isinstance(failure.body, dict) else ""
        limited = "retry-after" in headers or "rate limit" in str(message).lower()
        if status in (403, 429) and (limited or status == 429):
            wait = headers.get("retry-after", "")
            retry_after = max(1.0, float(wait)) if wait.strip().isdigit() else SECONDARY_WAIT
            raise CodeHostRetryLater(
                "GitHub rate limit reached", retry_after=retry_after, status=status
            )
        if status >= 500:
            raise CodeHostRetryLater(
                f"GitHub unavailable ({status})", retry_after=30.0, status=status
            )
        raise CodeHostError(f"GitHub answered {status}", status=status)


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

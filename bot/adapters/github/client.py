"""The GitHub adapter (PyGithub) of :class:`bot.codehost.port.CodeHost`.

Rate limits are honoured, never fought, and never slept through for minutes:

* The search API allows 30 requests a minute. A client-side window (any 60 s holds at
  most ``search_per_minute`` searches, on the injected clock) keeps us under it; a
  refilling token bucket would not, since it could send 30 + 30 inside one of
  GitHub's fixed windows.
* On a primary limit (403/429 with ``x-ratelimit-remaining: 0``) we wait for
  ``x-ratelimit-reset``; on a secondary limit (``Retry-After``, or the "secondary rate
  limit" message) for ``Retry-After``, else at least 60 s. A wait up to ``max_wait``
  is slept on the clock and the call retried once; a longer one raises
  :class:`~bot.errors.CodeHostRetryLater` and further calls of that kind are refused
  locally, without being sent, until the wait is over.
* PyGithub's own ``GithubRetry`` would sleep through ``Retry-After`` silently, and its
  request spacing sleeps on the wall clock, so both are replaced: a plain urllib3
  ``Retry`` for connection errors and 502/503/504 only, and a write spacing of
  ``min_write_interval`` (GitHub asks for about a second between writes) on the clock.

The token is handed to PyGithub's ``Auth.Token`` and never appears in messages.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

import requests
from github import Auth, Github, GithubException
from github.Commit import Commit
from github.GithubObject import GithubObject
from github.IssueComment import IssueComment
from github.PaginatedList import PaginatedList
from github.PullRequest import PullRequest
from github.Repository import Repository
from urllib3.util.retry import Retry

from bot.adapters.github.blocks import MemoryBlocks, RateLimitBlocks
from bot.clock import Clock, SystemClock
from bot.codehost.port import FixRef, has_marker, mentions_short_id
from bot.errors import CodeHostError, CodeHostRepoUnavailable, CodeHostRetryLater

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
# GitHub's REST API asks for these on every request (docs: "API versions", "Media types");
# the commit-search preview media type PyGithub still sends is no longer needed.
API_VERSION = "2022-11-28"
GITHUB_JSON = "application/vnd.github+json"
SECONDARY_MIN_WAIT = 60.0
MAX_COMMENT_CHARS = 65536
T = TypeVar("T")
Item = TypeVar("Item", bound=GithubObject)


def default_retry() -> Retry:
    """Connection errors and 502/503/504 on reads, briefly; never 403/429 (handled above)."""
    return Retry(
        total=2,
        connect=2,
        read=1,
        status=2,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        backoff_factor=0.5,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


class GitHubCodeHost:
    """GitHub (or GitHub Enterprise at ``…/api/v3``) through PyGithub."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        repos: Iterable[str] | None = None,
        clock: Clock | None = None,
        search_per_minute: int = 30,
        max_wait: float = 5.0,
        min_write_interval: float = 1.0,
        per_page: int = 100,
        timeout: int = 15,
        retry: Retry | None = None,
        blocks: RateLimitBlocks | None = None,
    ) -> None:
        """``blocks``: where "blocked until" lives; pass
        :class:`~bot.adapters.github.blocks.StoreBlocks` so every step and replica respects a
        rate limit one of them was told about (default: this object only)."""
        if not token:
            raise CodeHostError("a GitHub token is required")
        self._clock: Clock = clock or SystemClock()
        self._allowed = {r.lower() for r in repos} if repos is not None else None
        self._search_per_minute = search_per_minute
        self._max_wait = max_wait
        self._min_write_interval = min_write_interval
        self._searches: deque[float] = deque()
        self._blocks: RateLimitBlocks = blocks if blocks is not None else MemoryBlocks()
        self._last_write: float | None = None
        self._gh = Github(
            auth=_Auth(token),
            api_version=API_VERSION,
            base_url=(base_url or DEFAULT_API_URL).rstrip("/"),
            timeout=timeout,
            per_page=per_page,
            retry=retry if retry is not None else default_retry(),
            seconds_between_requests=None,
            seconds_between_writes=None,
            lazy=True,  # objects are fetched when read, so no GET /repos before each call
            user_agent="sentry-remediation-bot",
        )

    def __repr__(self) -> str:
        return f"GitHubCodeHost(base_url={self._gh.requester.base_url!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._gh.close()

    # -- the port ------------------------------------------------------------------------
    def search_fix_references(self, repo: str, short_id: str) -> list[FixRef]:
        """Pull requests whose title or body and commits whose message name ``short_id``.

        One issue search and one commit search (first page, up to ``per_page`` hits),
        plus one read per matching pull request for ``merged`` / ``merge_commit_sha``.
        Hits are re-checked for the whole short id: GitHub search ignores punctuation.
        """
        self._check_repo(repo)
        phrase = short_id.replace('"', "")
        issues = self._search(
            repo, lambda: self._gh.search_issues(f'repo:{repo} "{phrase}" type:pr in:title,body')
        )
        refs: list[FixRef] = []
        gh_repo = self._repo(repo)
        for item in issues:
            if not (
                mentions_short_id(item.title, short_id) or mentions_short_id(item.body, short_id)
            ):
                continue
            pr = gh_repo.get_pull(item.number)
            refs.append(self._call("core", partial(_pr_ref, repo, pr)))
        commits = self._search(repo, lambda: self._gh.search_commits(f'repo:{repo} "{phrase}"'))
        for commit in commits:
            if mentions_short_id(commit.commit.message, short_id):
                refs.append(_commit_ref(repo, commit, "default_branch"))
        return refs

    def upsert_pr_comment(
        self, repo: str, number: int, marker: str, body: str, *, comment_id: int | None = None
    ) -> int:
        """Edit the PR's comment that opens with ``marker`` or create it; returns its id.

        The stored ``comment_id`` is read first and edited only if it is still ours
        (same PR, marker at the start); otherwise the comments are scanned. An
        unchanged body is not sent again.
        """
        self._check_repo(repo)
        if not has_marker(body, marker):
            body = f"{marker}\n{body}"
        if len(body) > MAX_COMMENT_CHARS:
            raise CodeHostError("comment body too long", repo=repo, number=number)
        issue = self._repo(repo).get_issue(number)

        def find() -> IssueComment | None:
            if comment_id is not None:
                try:
                    known = issue.get_comment(comment_id)
                    if known.issue_url.rstrip("/").endswith(f"/issues/{number}") and has_marker(
                        known.body, marker
                    ):
                        return known
                except GithubException as exc:
                    if exc.status != 404:
                        raise
            return next((c for c in issue.get_comments() if has_marker(c.body, marker)), None)

        existing = self._call("core", find)
        if existing is not None and existing.body == body:
            return int(existing.id)
        self._space_write()
        if existing is not None:
            self._call("core", lambda: existing.edit(body))
            return int(existing.id)
        created = self._call("core", lambda: issue.create_comment(body))
        return int(created.id)

    def get_commit(self, repo: str, sha: str) -> FixRef | None:
        """The commit, or ``None`` if GitHub does not know the sha (404/422)."""
        self._check_repo(repo)

        def read() -> FixRef | None:
            try:
                commit = self._repo(repo).get_commit(sha)
                return _commit_ref(repo, commit, "exists")
            except GithubException as exc:
                if exc.status in (404, 422):
                    return None
                raise

        return self._call("core", read)

    # -- rate limits and error translation -------------------------------------------------
    def _repo(self, repo: str) -> Repository:
        return self._gh.get_repo(repo)

    def _check_repo(self, repo: str) -> None:
        if self._allowed is not None and repo.lower() not in self._allowed:
            raise CodeHostError("repository is not in GITHUB_REPOS", repo=repo)

    def _search(self, repo: str, start: Callable[[], PaginatedList[Item]]) -> list[Item]:
        self._take_search_slot()
        try:
            results = self._call("search", lambda: list(start().get_page(0)))
        except CodeHostError as exc:
            if exc.context.get("status") == 422:
                # GitHub's search answers 422 "Validation Failed" for a repo: qualifier
                # the token cannot see (or that does not exist): that repo only.
                raise CodeHostRepoUnavailable(
                    "GitHub cannot search this repository (unknown, or not visible to the "
                    "token): it is skipped",
                    repo=repo,
                    status=422,
                ) from exc
            raise
        self._note_search_budget()
        return results

    def _take_search_slot(self) -> None:
        now = self._clock.monotonic()
        while self._searches and self._searches[0] <= now - 60.0:
            self._searches.popleft()
        if len(self._searches) >= self._search_per_minute:
            wait = self._searches[0] + 60.0 - now
            if wait > self._max_wait:
                raise CodeHostRetryLater(
                    "GitHub search budget used up for this minute", retry_after=wait
                )
            self._clock.sleep(wait)
            self._searches.popleft()
        self._searches.append(self._clock.monotonic())

    def _note_search_budget(self) -> None:
        remaining, _limit = self._gh.requester.rate_limiting
        if remaining == 0:
            reset = self._gh.requester.rate_limiting_resettime
            wait = max(1.0, reset - self._clock.now().timestamp() + 1.0)
            self._block("search", wait)

    def _space_write(self) -> None:
        if self._last_write is not None:
            gap = self._last_write + self._min_write_interval - self._clock.monotonic()
            if gap > 0:
                self._clock.sleep(gap)
        self._last_write = self._clock.monotonic()

    def _call(self, kind: str, fn: Callable[[], T]) -> T:
        for attempt in (1, 2):
            self._refuse_while_blocked(kind)
            try:
                return fn()
            except GithubException as exc:
                wait, scope = self._rate_limit_wait(exc)
                if wait is None:
                    raise _translate(exc) from exc
                if attempt == 1 and wait <= self._max_wait:
                    log.info("GitHub rate limit (%s): waiting %.0f s", scope, wait)
                    self._clock.sleep(wait)
                    continue
                self._block(scope, wait)
                raise CodeHostRetryLater(
                    "GitHub rate limit reached", retry_after=wait, status=exc.status
                ) from exc
            except requests.RequestException as exc:
                raise CodeHostRetryLater(
                    f"GitHub unreachable: {exc.__class__.__name__}", retry_after=30.0
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _block(self, scope: str, wait: float) -> None:
        now = self._clock.now()
        self._blocks.block(scope, now.timestamp() + wait, now)

    def _refuse_while_blocked(self, kind: str) -> None:
        # Wall-clock epoch seconds, not monotonic: the block outlives this process.
        now = self._clock.now().timestamp()
        until = max(self._blocks.blocked_until(kind), self._blocks.blocked_until("all"))
        if until > now:
            raise CodeHostRetryLater("GitHub rate limit in effect", retry_after=until - now)

    def _rate_limit_wait(self, exc: GithubException) -> tuple[float | None, str]:
        """(seconds to wait, scope) if ``exc`` is a rate limit, else (None, "")."""
        if exc.status not in (403, 429):
            return None, ""
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        message = _message(exc).lower()
        resource = "search" if headers.get("x-ratelimit-resource") == "search" else "core"
        retry_after = headers.get("retry-after", "")
        if retry_after.strip().isdigit():
            return max(1.0, float(retry_after)), "all"
        if headers.get("x-ratelimit-remaining") == "0" or message.startswith("api rate limit"):
            reset = headers.get("x-ratelimit-reset", "")
            if reset.isdigit():
                return max(1.0, int(reset) - self._clock.now().timestamp() + 1.0), resource
            return SECONDARY_MIN_WAIT, resource
        if "secondary rate limit" in message or exc.status == 429:
            return SECONDARY_MIN_WAIT, "all"
        return None, ""


class _Auth(Auth.Token):
    """The token, plus ``Accept: application/vnd.github+json`` on every request.

    PyGithub has no default-headers option; authentication is the one hook that sees
    every request's headers (and overrides the obsolete commit-search preview type).
    """

    def authentication(self, headers: dict[str, str]) -> None:
        super().authentication(headers)
        headers["Accept"] = GITHUB_JSON


def _message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return ""


def _translate(exc: GithubException) -> CodeHostError:
    status = exc.status
    if status == 401:
        return CodeHostError("GitHub rejected the token (401)", status=status)
    if status >= 500:
        return CodeHostRetryLater(f"GitHub unavailable ({status})", retry_after=30.0, status=status)
    return CodeHostError(f"GitHub answered {status}: {_message(exc)[:200]}", status=status)


def _pr_ref(repo: str, pr: PullRequest) -> FixRef:
    return FixRef(
        kind="pr",
        repo=repo,
        number=int(pr.number),
        sha=None,
        title=str(pr.title or ""),
        url=str(pr.html_url or ""),
        merged=bool(pr.merged),
        merge_commit_sha=pr.merge_commit_sha if pr.merged else None,
        state=str(pr.state or ""),
    )


def _commit_ref(repo: str, commit: Commit, state: str) -> FixRef:
    message = commit.commit.message or ""
    return FixRef(
        kind="commit",
        repo=repo,
        number=None,
        sha=commit.sha,
        title=message.splitlines()[0] if message else "",
        url=commit.html_url or "",
        merged=state == "default_branch",
        merge_commit_sha=None,
        state=state,
    )

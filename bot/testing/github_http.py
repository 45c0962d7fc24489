"""The request handler behind :class:`bot.testing.github.FakeGitHub` (GitHub REST shapes).

Shapes follow GitHub's REST reference (search/issues, search/commits, pulls, issue
comments, commits, rate_limit): absolute ``url`` fields under the served base URL
(PyGithub follows them), ``Link`` headers for pagination, ``X-RateLimit-*`` headers,
and GitHub's error bodies (``{"message", "documentation_url"}``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlencode, urlsplit

from bot.json_types import JsonArray, JsonObject, JsonValue
from bot.testing.github_json import GitHubJson
from bot.testing.github_state import (
    BOT_LOGIN,
    FakeComment,
    FakePR,
    GitHubState,
    RecordedRequest,
)

DOCS = "https://docs.github.com/rest"
SEARCH_WINDOW = 60.0
PRIMARY_MESSAGE = "API rate limit exceeded for user ID 1."
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
Result = tuple[int, JsonValue, dict[str, str]]
"""(status, JSON body, extra headers) of one answer."""


@dataclass(frozen=True)
class _Call:
    """One routed request: path parameters (``repo`` is ``owner/name``), query, body."""

    params: dict[str, str]
    query: dict[str, str]
    raw: bytes

    @property
    def repo(self) -> str:
        return self.params["repo"]


class _Answer(Exception):
    def __init__(self, status: int, body: JsonValue, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


UNSEARCHABLE: JsonObject = {
    "message": "Validation Failed",
    "errors": [
        {
            "message": "The listed users and repositories cannot be searched either because "
            "the resources do not exist or you do not have permission to view them.",
            "resource": "Search",
            "field": "q",
            "code": "invalid",
        }
    ],
    "documentation_url": "https://docs.github.com/v3/search/",
}


def _not_found() -> _Answer:
    return _Answer(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _contains_phrase(text: str, phrase: list[str]) -> bool:
    words = _tokens(text)
    n = len(phrase)
    return n > 0 and any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def parse_search_query(q: str) -> tuple[dict[str, list[str]], list[list[str]]]:
    """Qualifiers (``repo:``, ``type:``, ``in:``) and phrases (quoted or bare words)."""
    qualifiers: dict[str, list[str]] = {}
    phrases: list[list[str]] = []
    for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', q):
        if bare and re.match(r"^[a-z]+:\S+$", bare):
            key, value = bare.split(":", 1)
            qualifiers.setdefault(key, []).append(value)
        else:
            phrases.append(_tokens(quoted or bare))
    return qualifiers, phrases


class FakeGitHubHandler(BaseHTTPRequestHandler):
    """GitHub's REST API over a :class:`GitHubState` (bound by ``FakeGitHub.serve``)."""

    github: GitHubState
    prefix: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- plumbing --------------------------------------------------------------------
    @property
    def base(self) -> str:
        if self.github.public_url:  # behind a proxy: the URL clients use (GitHub's own)
            return self.github.public_url.rstrip("/") + self.prefix
        address = self.server.server_address
        assert isinstance(address, tuple)
        return f"http://{address[0]!s}:{address[1]}{self.prefix}"

    @property
    def json(self) -> GitHubJson:
        return GitHubJson(self.base, self.github)

    def _handle(self, method: str) -> None:
        gh = self.github
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = split.path
        query = dict(parse_qsl(split.query))
        headers: dict[str, str] = {}
        try:
            if self.prefix and not path.startswith(self.prefix + "/"):
                raise _not_found()
            path = path[len(self.prefix) :]
            with gh.lock:
                gh.requests.append(
                    RecordedRequest(
                        method,
                        path,
                        query,
                        accept=self.headers.get("Accept", ""),
                        api_version=self.headers.get("X-GitHub-Api-Version", ""),
                    )
                )
                self._check_auth()
                self._injected(method, path)
                headers.update(self._rate_headers(path))
                status, body, extra = self._route(method, path, query, raw)
            headers.update(extra)
        except _Answer as answer:
            status, body = answer.status, answer.body
            headers.update(answer.headers)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _check_auth(self) -> None:
        auth = self.headers.get("Authorization")
        if not auth:
            raise _Answer(401, {"message": "Requires authentication", "documentation_url": DOCS})
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or token != self.github.token:
            raise _Answer(401, {"message": "Bad credentials", "documentation_url": DOCS})

    def _injected(self, method: str, path: str) -> None:
        failure = self.github.take_failure(method, path)
        if failure is not None:
            raise _Answer(failure.status, failure.body, failure.headers)

    def _rate_headers(self, path: str) -> dict[str, str]:
        gh = self.github
        now = gh.now_epoch()
        if not path.startswith("/search/"):
            gh.core_used += 1
            remaining = max(0, gh.core_limit - gh.core_used)
            headers = self._limit_headers("core", gh.core_limit, remaining, now + 3600)
            if gh.core_used > gh.core_limit:
                raise _Answer(403, {"message": PRIMARY_MESSAGE, "documentation_url": DOCS}, headers)
            return headers
        if gh.search_window_start is None or now >= gh.search_window_start + SEARCH_WINDOW:
            gh.search_window_start, gh.search_used = now, 0
        reset = gh.search_window_start + SEARCH_WINDOW
        if gh.search_used >= gh.search_limit:
            headers = self._limit_headers("search", gh.search_limit, 0, reset)
            if gh.search_limit_style == "secondary":
                headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
                raise _Answer(
                    403, {"message": SECONDARY_MESSAGE, "documentation_url": DOCS}, headers
                )
            raise _Answer(403, {"message": PRIMARY_MESSAGE, "documentation_url": DOCS}, headers)
        gh.search_used += 1
        return self._limit_headers(
            "search", gh.search_limit, gh.search_limit - gh.search_used, reset
        )

    def _limit_headers(
        self, resource: str, limit: int, remaining: int, reset: float
    ) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
            "X-RateLimit-Used": str(limit - remaining),
            "X-RateLimit-Resource": resource,
        }

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Result:
        for verb, pattern, route in _ROUTES:
            match = pattern.fullmatch(path)
            if verb == method and match:
                params = match.groupdict()
                if "owner" in params:
                    params["repo"] = f"{params.pop('owner')}/{params.pop('name')}"
                    if params["repo"] not in self.github.repos:
                        raise _not_found()
                return route(self, _Call(params, query, raw))
        raise _not_found()

    def _page(
        self, path: str, query: dict[str, str], items: JsonArray
    ) -> tuple[JsonArray, dict[str, str]]:
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(p: int, rel: str) -> str:
            q = {**query, "page": str(p), "per_page": str(per_page)}
            return f'<{self.base}{path}?{urlencode(q)}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        return chunk, ({"Link": ", ".join(links)} if links else {})

    # -- routes ------------------------------------------------------------------------
    def _r_rate_limit(self, call: _Call) -> Result:
        gh = self.github
        now = gh.now_epoch()
        start = gh.search_window_start if gh.search_window_start is not None else now
        core = {"limit": gh.core_limit, "used": gh.core_used, "reset": math.ceil(now + 3600)}
        core["remaining"] = max(0, gh.core_limit - gh.core_used)
        search = {
            "limit": gh.search_limit,
            "used": gh.search_used,
            "remaining": max(0, gh.search_limit - gh.search_used),
            "reset": math.ceil(start + SEARCH_WINDOW),
        }
        return 200, {"resources": {"core": core, "search": search}, "rate": core}, {}

    def _r_repo(self, call: _Call) -> Result:
        return 200, self.json.repo(call.repo), {}

    def _search(self, query: dict[str, str]) -> tuple[dict[str, list[str]], list[list[str]]]:
        if not query.get("q"):
            raise _Answer(422, {"message": "Validation Failed", "documentation_url": DOCS})
        quals, phrases = parse_search_query(query["q"])
        unseen = [r for r in quals.get("repo", []) if r not in self.github.repos]
        if unseen:
            # GitHub answers a repo: the token cannot see (or that does not exist) with
            # this 422, body and all (captured in changesets/action#252 and
            # googleapis/release-please#948; DESIGN.md "GitHub — facts").
            raise _Answer(422, UNSEARCHABLE)
        return quals, phrases

    def _r_search_issues(self, call: _Call) -> Result:
        query = call.query
        quals, phrases = self._search(query)
        repos = quals.get("repo", [])
        types = quals.get("type", []) + quals.get("is", [])
        where = ",".join(quals.get("in", [])) or "title,body"
        hits = []
        if not types or "pr" in types:
            for pr in sorted(self.github.prs.values(), key=lambda p: -p.number):
                text = " ".join(
                    part for fld, part in (("title", pr.title), ("body", pr.body)) if fld in where
                )
                if (not repos or pr.repo in repos) and all(
                    _contains_phrase(text, p) for p in phrases
                ):
                    hits.append(pr)
        items, headers = self._page("/search/issues", query, [self.json.issue(p) for p in hits])
        # search_type: required by GitHub's description of GET /search/issues
        # (@octokit/openapi); a qualifier-and-phrase query is a lexical search.
        body = {
            "total_count": len(hits),
            "incomplete_results": False,
            "items": items,
            "search_type": "lexical",
        }
        return 200, body, headers

    def _r_search_commits(self, call: _Call) -> Result:
        query = call.query
        quals, phrases = self._search(query)
        repos = quals.get("repo", [])
        hits = [
            c
            for c in self.github.commits.values()
            if (not repos or c.repo in repos)
            and all(_contains_phrase(c.message, p) for p in phrases)
        ]
        items, headers = self._page("/search/commits", query, [self.json.commit(c) for c in hits])
        return 200, {"total_count": len(hits), "incomplete_results": False, "items": items}, headers

    def _pr(self, call: _Call) -> FakePR:
        pr = self.github.prs.get((call.repo, int(call.params["number"])))
        if pr is None:
            raise _not_found()
        return pr

    def _r_pull(self, call: _Call) -> Result:
        return 200, self.json.pull(self._pr(call)), {}

    def _r_list_comments(self, call: _Call) -> Result:
        pr = self._pr(call)
        render = self.json
        comments: JsonArray = [render.comment(c) for c in self.github.comments(pr.repo, pr.number)]
        path = f"/repos/{pr.repo}/issues/{pr.number}/comments"
        items, headers = self._page(path, call.query, comments)
        return 200, items, headers

    def _body_of(self, raw: bytes) -> str:
        try:
            body = json.loads(raw or b"{}").get("body")
        except (ValueError, AttributeError):
            raise _Answer(
                400, {"message": "Problems parsing JSON", "documentation_url": DOCS}
            ) from None
        if not isinstance(body, str) or not body.strip():
            raise _Answer(422, {"message": "Validation Failed", "documentation_url": DOCS})
        if len(body) > 65536:
            raise _Answer(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "IssueComment", "code": "custom", "field": "body"}],
                    "documentation_url": DOCS,
                },
            )
        return body

    def _r_create_comment(self, call: _Call) -> Result:
        pr = self._pr(call)
        comment = self.github._create_comment(
            pr.repo, pr.number, self._body_of(call.raw), BOT_LOGIN
        )
        data = self.json.comment(comment)
        return 201, data, {"Location": data["url"]}

    def _comment(self, call: _Call) -> FakeComment:
        comment = self.github.comment(int(call.params["id"]))
        if comment is None or comment.repo != call.repo:
            raise _not_found()
        return comment

    def _r_get_comment(self, call: _Call) -> Result:
        return 200, self.json.comment(self._comment(call)), {}

    def _r_edit_comment(self, call: _Call) -> Result:
        comment = self._comment(call)
        comment.body = self._body_of(call.raw)
        comment.updated_at = self.github.clock.now()
        return 200, self.json.comment(comment), {}

    def _r_commit(self, call: _Call) -> Result:
        sha = call.params["sha"]
        matches = [
            c for (r, s), c in self.github.commits.items() if r == call.repo and s.startswith(sha)
        ]
        if len(matches) != 1:
            # GitHub answers an unknown (or ambiguous) sha with 422, not 404.
            raise _Answer(
                422, {"message": f"No commit found for SHA: {sha}", "documentation_url": DOCS}
            )
        return 200, self.json.full_commit(matches[0]), {}


_Route = Callable[[FakeGitHubHandler, _Call], Result]
_H = FakeGitHubHandler
_ROUTES: list[tuple[str, re.Pattern[str], _Route]] = [
    ("GET", re.compile(r"/rate_limit"), _H._r_rate_limit),
    ("GET", re.compile(r"/search/issues"), _H._r_search_issues),
    ("GET", re.compile(r"/search/commits"), _H._r_search_commits),
    ("GET", re.compile(_REPO), _H._r_repo),
    ("GET", re.compile(_REPO + r"/pulls/(?P<number>\d+)"), _H._r_pull),
    ("GET", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _H._r_list_comments),
    ("POST", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _H._r_create_comment),
    ("GET", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _H._r_get_comment),
    ("PATCH", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _H._r_edit_comment),
    ("GET", re.compile(_REPO + r"/commits/(?P<sha>[0-9a-fA-F]{4,40})"), _H._r_commit),
]

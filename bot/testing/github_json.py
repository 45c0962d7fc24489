"""FakeGitHub's records as GitHub's REST JSON (the response bodies it serves).

Each body is GitHub's generated skeleton (:mod:`bot.testing.github_shapes`, every
field the description marks required) with the fake's values laid over it. URLs are
absolute under the served base URL, because PyGithub follows them (a comment's
``url``, ``Link`` headers), and ``html_url`` points at github.com as GitHub's do.
"""

from __future__ import annotations

import copy
import zlib
from datetime import datetime

from bot.json_types import JsonObject
from bot.testing import github_shapes as shapes
from bot.testing.github_state import FakeComment, FakeCommit, FakePR, GitHubState


def complete(skeleton: JsonObject, values: JsonObject) -> JsonObject:
    """``values`` laid over GitHub's skeleton (every required field; github_shapes.py)."""
    out = copy.deepcopy(skeleton)
    for key, value in values.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            out[key] = complete(base, value)
        else:
            out[key] = value
    return out


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubJson:
    """Renders a :class:`GitHubState`'s records as GitHub answers under ``base``."""

    def __init__(self, base: str, state: GitHubState) -> None:
        self.base = base
        self.state = state

    def user(self, login: str) -> JsonObject:
        api = f"{self.base}/users/{login}"
        return complete(
            shapes.SIMPLE_USER,
            {
                "avatar_url": f"https://avatars.githubusercontent.com/u/{zlib.crc32(login.encode())}",
                "events_url": f"{api}/events{{/privacy}}",
                "followers_url": f"{api}/followers",
                "following_url": f"{api}/following{{/other_user}}",
                "gists_url": f"{api}/gists{{/gist_id}}",
                "organizations_url": f"{api}/orgs",
                "received_events_url": f"{api}/received_events",
                "repos_url": f"{api}/repos",
                "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"{api}/subscriptions",
                "gravatar_id": "",
                "site_admin": False,
                "login": login,
                "id": zlib.crc32(login.encode()) % 10_000_000,
                "node_id": f"U_{login}",
                "type": "Bot" if login.endswith("bot") else "User",
                "url": f"{self.base}/users/{login}",
                "html_url": f"https://github.com/{login}",
            },
        )

    def repo(self, repo: str) -> JsonObject:
        owner, name = repo.split("/", 1)
        return complete(
            shapes.REPOSITORY,
            {
                "id": zlib.crc32(repo.encode()) % 10_000_000,
                "node_id": f"R_{repo}",
                "name": name,
                "full_name": repo,
                "private": False,
                "owner": self.user(owner),
                "html_url": f"https://github.com/{repo}",
                "url": f"{self.base}/repos/{repo}",
                "default_branch": "main",
            },
        )

    def issue(self, pr: FakePR) -> JsonObject:
        api = f"{self.base}/repos/{pr.repo}"
        return complete(
            shapes.SEARCH_ISSUE_ITEM,
            {
                "url": f"{api}/issues/{pr.number}",
                "repository_url": api,
                "comments_url": f"{api}/issues/{pr.number}/comments",
                "html_url": f"https://github.com/{pr.repo}/pull/{pr.number}",
                "id": pr.number * 1000 + 1,
                "node_id": f"PR_{pr.repo}_{pr.number}",
                "number": pr.number,
                "title": pr.title,
                "user": self.user(pr.user),
                "labels": [],
                "state": pr.state,
                "locked": False,
                "comments": len(self.state.comments(pr.repo, pr.number)),
                "created_at": _iso(pr.created_at),
                "updated_at": _iso(pr.created_at),
                "closed_at": _iso(pr.created_at) if pr.state == "closed" else None,
                "author_association": "MEMBER",
                "body": pr.body,
                "pull_request": {
                    "url": f"{api}/pulls/{pr.number}",
                    "html_url": f"https://github.com/{pr.repo}/pull/{pr.number}",
                    "diff_url": f"https://github.com/{pr.repo}/pull/{pr.number}.diff",
                    "patch_url": f"https://github.com/{pr.repo}/pull/{pr.number}.patch",
                    "merged_at": _iso(pr.created_at) if pr.merged else None,
                },
                "score": 1.0,
            },
        )

    def pull(self, pr: FakePR) -> JsonObject:
        data = self.issue(pr)
        data.pop("pull_request")
        data.pop("score")
        data.update(
            url=f"{self.base}/repos/{pr.repo}/pulls/{pr.number}",
            issue_url=f"{self.base}/repos/{pr.repo}/issues/{pr.number}",
            merged=pr.merged,
            merged_at=data["closed_at"] if pr.merged else None,
            merge_commit_sha=pr.merge_commit_sha,
            draft=False,
            head={
                "ref": f"fix-{pr.number}",
                "sha": "0" * 40,
                "label": f"{pr.repo.split('/')[0]}:fix-{pr.number}",
                "repo": self.repo(pr.repo),
                "user": self.user(pr.user),
            },
            base={
                "ref": "main",
                "sha": "1" * 40,
                "label": f"{pr.repo.split('/')[0]}:main",
                "repo": self.repo(pr.repo),
                "user": self.user(pr.repo.split("/")[0]),
            },
            commits_url=f"{data['url']}/commits",
            review_comments_url=f"{data['url']}/comments",
            statuses_url=f"{self.base}/repos/{pr.repo}/statuses/{'0' * 40}",
            diff_url=f"https://github.com/{pr.repo}/pull/{pr.number}.diff",
            patch_url=f"https://github.com/{pr.repo}/pull/{pr.number}.patch",
        )
        return complete(shapes.PULL_REQUEST, data)

    def comment(self, c: FakeComment) -> JsonObject:
        api = f"{self.base}/repos/{c.repo}"
        return complete(
            shapes.ISSUE_COMMENT,
            {
                "id": c.id,
                "node_id": f"IC_{c.id}",
                "url": f"{api}/issues/comments/{c.id}",
                "html_url": f"https://github.com/{c.repo}/pull/{c.number}#issuecomment-{c.id}",
                "issue_url": f"{api}/issues/{c.number}",
                "body": c.body,
                "user": self.user(c.user),
                "created_at": _iso(c.created_at),
                "updated_at": _iso(c.updated_at),
                "author_association": "NONE",
            },
        )

    def commit(self, c: FakeCommit) -> JsonObject:
        api = f"{self.base}/repos/{c.repo}"
        person = {"name": "Dev", "email": "dev@example.com", "date": _iso(c.date)}
        return complete(
            shapes.SEARCH_COMMIT_ITEM,
            {
                "url": f"{api}/commits/{c.sha}",
                "sha": c.sha,
                "node_id": f"C_{c.sha}",
                "html_url": f"https://github.com/{c.repo}/commit/{c.sha}",
                "comments_url": f"{api}/commits/{c.sha}/comments",
                "commit": {
                    "url": f"{api}/git/commits/{c.sha}",
                    "author": person,
                    "committer": person,
                    "message": c.message,
                    "tree": {"url": f"{api}/git/trees/{'2' * 40}", "sha": "2" * 40},
                    "comment_count": 0,
                },
                "author": self.user("dev"),
                "committer": self.user("dev"),
                "parents": [],
                "repository": self.repo(c.repo),
                "score": 1.0,
            },
        )

    def full_commit(self, c: FakeCommit) -> JsonObject:
        """``GET /repos/{owner}/{repo}/commits/{ref}``: the search item plus stats and files."""
        data = self.commit(c)
        data.pop("repository")
        data.pop("score")
        data["stats"] = {"total": 1, "additions": 1, "deletions": 0}
        data["files"] = []
        return complete(shapes.COMMIT, data)

"""The code-host port: what the bot needs from GitHub, as a :class:`typing.Protocol`.

Three things only: find pull requests and commits that mention a Sentry short id
(Sentry's ``Fixes SHORT-ID`` convention), keep exactly one bot comment per pull
request (found again by a hidden HTML marker and edited in place), and look up a
commit. The real adapter is :class:`bot.adapters.github.client.GitHubCodeHost`; the fake
is :class:`bot.testing.github.FakeGitHub` (a loopback REST server plus an in-memory
twin of the port over the same data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

FixKind = Literal["pr", "commit"]

MARKER_PREFIX = "sentry-remediation-bot"


@dataclass(frozen=True, slots=True)
class FixRef:
    """A pull request or commit that references a Sentry issue.

    ``state`` is ``open`` / ``closed`` for pull requests (``merged`` says whether it
    landed) and ``default_branch`` for commits found by search, which GitHub only
    runs on the default branch; :meth:`CodeHost.get_commit` reports ``exists``.
    """

    kind: FixKind
    repo: str
    number: int | None
    sha: str | None
    title: str
    url: str
    merged: bool
    merge_commit_sha: str | None
    state: str

    @property
    def ref(self) -> str:
        """The key of this reference within its repo: the PR number or the commit sha."""
        if self.kind == "pr":
            return str(self.number)
        return self.sha or ""

    @property
    def fix_sha(self) -> str | None:
        """The commit that carries the fix, if it has landed: merge commit or the commit."""
        if self.kind == "pr":
            return self.merge_commit_sha if self.merged else None
        return self.sha


class CodeHost(Protocol):
    """A code host (GitHub). Errors are :class:`bot.errors.CodeHostError` subclasses;
    rate limits are :class:`bot.errors.CodeHostRetryLater` with ``retry_after``."""

    def search_fix_references(self, repo: str, short_id: str) -> list[FixRef]:
        """Pull requests (title/body) and commits (message) in ``repo`` mentioning ``short_id``."""
        ...

    def upsert_pr_comment(
        self, repo: str, number: int, marker: str, body: str, *, comment_id: int | None = None
    ) -> int:
        """Create or edit the one comment on PR ``number`` that starts with ``marker``.

        ``comment_id`` (the id stored last time) is tried first; when it is gone or is
        not our comment, the PR's comments are scanned for the marker. Returns the id.
        """
        ...

    def get_commit(self, repo: str, sha: str) -> FixRef | None:
        """The commit ``sha`` in ``repo``, or ``None`` when GitHub does not know it."""
        ...


def comment_marker(short_id: str) -> str:
    """The hidden HTML marker that identifies the bot's comment for one Sentry issue."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "", short_id)
    return f"<!-- {MARKER_PREFIX}:{safe} -->"


def has_marker(body: str | None, marker: str) -> bool:
    """True when ``body`` is the bot's comment for ``marker`` (the marker opens the body)."""
    return bool(body) and (body or "").lstrip().startswith(marker)


def mentions_short_id(text: str | None, short_id: str) -> bool:
    """True when ``text`` names ``short_id`` as a whole token (``BEE-42`` is not ``BEE-420``).

    GitHub search tokenizes on punctuation, so its hits are re-checked here before a
    pull request is taken for a fix.
    """
    if not text or not short_id:
        return False
    pattern = rf"(?<![A-Za-z0-9_-]){re.escape(short_id)}(?![A-Za-z0-9_-])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None

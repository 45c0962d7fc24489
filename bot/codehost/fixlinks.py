"""Fix links: find the PRs/commits that reference a Sentry issue, record them, comment.

* :func:`scan_fix_links` searches each repo for each issue's short id and records
  every reference once in ``fix_link`` (unique on issue, repo, kind, ref); a PR that
  has since merged is updated in place.
* :func:`best_fix_commit` picks the commit for Sentry's ``inCommit``: the merge
  commit of a merged PR, else a referencing commit on the default branch.
* :func:`sync_pr_comments` keeps one bot comment per linked PR, storing its id and a
  hash of the body so an unchanged body is not sent again.
* :func:`render_pr_comment` writes that body; Sentry text in it is made inert
  (:func:`inert`), since an exception message is attacker-controlled.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from bot.clock import Clock, ensure_utc
from bot.codehost.port import CodeHost, FixRef, comment_marker
from bot.errors import CodeHostError, CodeHostRepoUnavailable, RetryLater
from bot.safety.text import neutralise_bidi
from bot.store.db import Store
from bot.store.models import FixLink

log = logging.getLogger(__name__)

TEXT_LIMIT = 200


class IssueRef(Protocol):
    """What the fix-link code needs of a tracked issue."""

    @property
    def id(self) -> str: ...

    @property
    def short_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FixCommit:
    repo: str
    sha: str


def scan_fix_links(
    store: Store,
    codehost: CodeHost,
    repos: list[str],
    issues: list[IssueRef],
    clock: Clock,
    *,
    unavailable: list[str] | None = None,
) -> list[FixLink]:
    """Search ``repos`` for every issue and record each reference once.

    Returns the links that are new, or whose PR has merged since the last scan.
    Each (issue, repo) is committed as it is searched, so when the code host says
    "retry later" the :class:`~bot.errors.CodeHostRetryLater` propagates and the
    work done so far is kept. A repository GitHub will not search (422 for an unseen
    ``repo:``) is skipped for the rest of the scan and named in ``unavailable``; the
    other repositories are still searched.
    """
    changed: list[FixLink] = []
    skipped: list[str] = unavailable if unavailable is not None else []
    for issue in issues:
        for repo in repos:
            if repo in skipped:
                continue
            try:
                refs = codehost.search_fix_references(repo, issue.short_id)
            except CodeHostRepoUnavailable as exc:
                log.warning("fix links: %s", exc)
                skipped.append(repo)
                continue
            if refs:
                changed += record_fix_refs(store, issue.id, refs, clock)
    return changed


def record_fix_refs(store: Store, issue_id: str, refs: list[FixRef], clock: Clock) -> list[FixLink]:
    """Insert the references not yet known for ``issue_id`` (a concurrent insert by
    another replica is ignored, not an error) and update PRs that merged since."""
    changed: list[FixLink] = []
    with store.session() as session:
        for ref in refs:
            values = {
                "issue_id": issue_id,
                "repo": ref.repo,
                "kind": ref.kind,
                "ref": ref.ref,
                "commit_sha": ref.fix_sha,
                "pr_number": ref.number,
                "url": ref.url,
                "title": ref.title[:2000],
                "merged": ref.merged,
                "found_at": clock.now(),
            }
            insert = pg_insert if store.dialect == "postgresql" else sqlite_insert
            stmt = (
                insert(FixLink)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["issue_id", "repo", "kind", "ref"])
                .returning(col(FixLink.id))
            )
            # RETURNING, not rowcount: the driver's rowcount is not reliable here.
            inserted = session.connection().execute(stmt).first() is not None
            link = session.exec(
                select(FixLink).where(
                    FixLink.issue_id == issue_id,
                    FixLink.repo == ref.repo,
                    FixLink.kind == ref.kind,
                    FixLink.ref == ref.ref,
                )
            ).one()
            if inserted:
                changed.append(link)
            elif ref.merged and (not link.merged or link.commit_sha != ref.fix_sha):
                link.merged, link.commit_sha, link.title = True, ref.fix_sha, ref.title[:2000]
                session.add(link)
                changed.append(link)
    return changed


def fix_links(store: Store, issue_id: str) -> list[FixLink]:
    """The recorded links of one issue, oldest first."""
    with store.session() as session:
        stmt = select(FixLink).where(FixLink.issue_id == issue_id).order_by(col(FixLink.id))
        return list(session.exec(stmt).all())


def best_fix_commit(store: Store, issue_id: str) -> FixCommit | None:
    """The commit to resolve in: newest merged PR's merge commit, else newest commit."""
    links = fix_links(store, issue_id)
    merged = [x for x in links if x.kind == "pr" and x.merged and x.commit_sha]
    if merged:
        best = max(merged, key=lambda x: x.pr_number or 0)
        return FixCommit(best.repo, best.commit_sha or "")
    commits = [x for x in links if x.kind == "commit" and x.commit_sha]
    if commits:
        best = max(commits, key=lambda x: x.id or 0)  # newest recorded
        return FixCommit(best.repo, best.commit_sha or "")
    return None


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def sync_pr_comments(store: Store, codehost: CodeHost, issue: IssueRef, body: str) -> int:
    """Make each linked PR carry exactly one bot comment with ``body``; returns how many
    comments were sent. PRs whose stored hash matches are skipped (no API call). A PR
    that fails for good is logged and skipped; "retry later" propagates after the
    comments already written have been recorded."""
    marker = comment_marker(issue.short_id)
    if not body.lstrip().startswith(marker):
        body = f"{marker}\n{body}"
    digest = body_hash(body)
    sent = 0
    for link in fix_links(store, issue.id):
        if link.kind != "pr" or link.pr_number is None:
            continue
        if link.comment_id is not None and link.comment_body_hash == digest:
            continue
        try:
            comment_id = codehost.upsert_pr_comment(
                link.repo, link.pr_number, marker, body, comment_id=link.comment_id
            )
        except RetryLater:
            raise
        except CodeHostError as exc:
            log.warning("could not comment on %s#%s: %s", link.repo, link.pr_number, exc)
            continue
        with store.session() as session:
            row = session.get(FixLink, link.id)
            if row is not None:
                row.comment_id, row.comment_body_hash = comment_id, digest
                session.add(row)
        sent += 1
    return sent


# -- the comment body ------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()!|~{}])")


def inert(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """``text`` made safe to show inline in GitHub Markdown.

    One line, at most ``limit`` characters (then ``…``); HTML escaped; Markdown
    punctuation backslash-escaped so it cannot form links, images or code; and a
    zero-width space entity after ``@`` / ``#`` and in ``://`` so an exception message
    cannot mention ``@org/team``, cross-reference ``#123`` or plant a clickable link.
    """
    flat = neutralise_bidi(" ".join((text or "").split()))
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MD_SPECIAL.sub(r"\\\1", flat)
    flat = re.sub(r"([@#])", r"\1&#8203;", flat)  # one pass: the entity itself has a #
    flat = re.sub(r"(?i)(https?|ftp|www)(:|\.)", r"\1&#8203;\2", flat)
    return flat


@dataclass(frozen=True, slots=True)
class PrCommentFacts:
    """What the bot knows about one Sentry issue, for the comment on its fix PRs.

    Nothing here may depend on "now": the rendered body is hashed to skip re-sending
    an unchanged comment, so a timestamp of rendering would defeat that.
    """

    short_id: str
    title: str
    permalink: str = ""
    state: str = "watching"
    playbook_id: str | None = None
    runs: int = 0
    rows_changed: int = 0
    last_seen: datetime | None = None
    quiet_since: datetime | None = None
    quiet_hours: int = 48
    resolved_at: datetime | None = None
    resolved_in_commit: str | None = None
    regressed_at: datetime | None = None
    severity: str | None = None
    category: str | None = None
    team: str | None = None
    response_due_at: datetime | None = None


def _when(value: datetime | None) -> str:
    return ensure_utc(value).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _safe_url(url: str) -> str | None:
    if not re.fullmatch(r"https?://[^\s<>()\[\]\"'`]+", url or ""):
        return None
    return url


def render_pr_comment(facts: PrCommentFacts) -> str:
    """The body of the bot's comment on a fix PR: marker first, then a short table of
    what the bot did (runs, rows changed, last seen, quiet clock, resolve/regress)."""
    marker = comment_marker(facts.short_id)
    sid = inert(facts.short_id, 64)
    link = _safe_url(facts.permalink)
    head = f"[{sid}]({link})" if link else sid
    if facts.regressed_at:
        status = f"**regressed** at {_when(facts.regressed_at)}: new events after the fix"
    elif facts.resolved_at:
        commit = inert(facts.resolved_in_commit[:12], 12) if facts.resolved_in_commit else ""
        status = f"**resolved** at {_when(facts.resolved_at)}" + (
            f" in commit `{commit}`" if commit else ""
        )
    else:
        status = inert(facts.state, 32)
    if facts.quiet_since and not (facts.resolved_at or facts.regressed_at):
        due = ensure_utc(facts.quiet_since) + timedelta(hours=facts.quiet_hours)
        quiet = (
            f"quiet since {_when(facts.quiet_since)}; resolves after {_when(due)} "
            f"if no new events ({facts.quiet_hours} h)"
        )
    elif facts.resolved_at:
        quiet = f"{facts.quiet_hours} h without events reached"
    else:
        quiet = "not started"
    runs = str(facts.runs)
    if facts.playbook_id:
        runs += f" (playbook `{inert(facts.playbook_id, 64)}`)"
    rows = [
        ("Status", status),
        ("Remediation runs", runs),
        ("Rows changed", str(facts.rows_changed)),
        ("Last seen", _when(facts.last_seen)),
        ("Quiet clock", quiet),
    ]
    if facts.severity or facts.team:
        rows.insert(
            1,
            (
                "Triage",
                f"{inert(facts.severity or '-', 16)} / {inert(facts.category or '-', 32)}; "
                f"owner {inert(facts.team or '-', 64)}; respond by {_when(facts.response_due_at)}",
            ),
        )
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"{marker}\n"
        f"**Sentry issue {head}** — {inert(facts.title)}\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        "<sub>Kept up to date by sentry-remediation-bot; this comment is edited in place.</sub>\n"
    )

"""Subset OpenAPI descriptions of the operations the bot uses, for the Prism proxy.

Sentry: ``../shared/sentry-api/openapi-derefed.json`` (Sentry's published description,
release 0.272.0). Prism silently skips body validation where a schema has ``null``
inside an ``enum`` (45 places, ``substatus`` and ``priority`` among them), so the subset
removes those ``null`` entries (``nullable: true`` says the same thing in OpenAPI 3.0).

GitHub: ``@octokit/openapi`` ``generated/api.github.com.deref.json`` (GitHub's own
description, dereferenced), from the npm package installed in tests/contract/node/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SENTRY_SPEC = ROOT.parent / "shared" / "sentry-api" / "openapi-derefed.json"
NODE_DIR = ROOT / "tests" / "contract" / "node"
GITHUB_SPEC = (
    NODE_DIR / "node_modules" / "@octokit" / "openapi" / "generated" / ("api.github.com.deref.json")
)

_ORG = "/api/0/organizations/{organization_id_or_slug}"
#: (path, method) of every Sentry operation HttpSentryClient sends.
SENTRY_OPERATIONS = (
    (f"{_ORG}/issues/", "get"),  # list_issues, get_issues (group=)
    (f"{_ORG}/issues/", "put"),  # bulk_update (id=)
    (f"{_ORG}/issues/{{issue_id}}/", "get"),  # get_issue
    (f"{_ORG}/issues/{{issue_id}}/", "put"),  # update_issue
    (f"{_ORG}/issues/{{issue_id}}/events/", "get"),  # list_events
    (f"{_ORG}/issues/{{issue_id}}/events/{{event_id}}/", "get"),  # latest_event
    (f"{_ORG}/events/", "get"),  # event_counts
)
#: Operations the client uses that Sentry's description does not contain.
SENTRY_ABSENT = {
    (f"{_ORG}/issues/{{issue_id}}/comments/", "post"): (
        "add_comment: Sentry publishes no OpenAPI operation for issue comments (notes). "
        "The fake follows getsentry/sentry src/sentry/api/endpoints/group_notes.py "
        "(POST {text}; the same text within an hour is refused with 400)."
    ),
}

#: (path, method) of every GitHub operation GitHubCodeHost sends through PyGithub.
GITHUB_OPERATIONS = (
    ("/search/issues", "get"),  # search_fix_references: PRs naming the short id
    ("/search/commits", "get"),  # search_fix_references: commits naming it
    ("/repos/{owner}/{repo}/pulls/{pull_number}", "get"),  # merged / merge_commit_sha
    ("/repos/{owner}/{repo}/commits/{ref}", "get"),  # get_commit
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "get"),  # list PR comments
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "post"),  # create
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "get"),  # the stored comment id
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "patch"),  # edit
)


def strip_null_enums(node: Any) -> tuple[Any, int]:
    """``node`` with ``None`` removed from every ``enum`` (marking it nullable); count."""
    if isinstance(node, list):
        total = 0
        out_list = []
        for item in node:
            new, n = strip_null_enums(item)
            out_list.append(new)
            total += n
        return out_list, total
    if not isinstance(node, dict):
        return node, 0
    total = 0
    out: dict[str, Any] = {}
    for key, value in node.items():
        new, n = strip_null_enums(value)
        out[key] = new
        total += n
    enum = out.get("enum")
    if isinstance(enum, list) and None in enum:
        out["enum"] = [v for v in enum if v is not None]
        out["nullable"] = True
        total += 1
    return out, total


def subset(spec: dict[str, Any], operations: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The spec with only ``operations`` (each must exist), other top-level keys kept."""
    paths: dict[str, Any] = {}
    for path, method in operations:
        item = spec["paths"][path]
        kept = paths.setdefault(path, {k: v for k, v in item.items() if k == "parameters"})
        kept[method] = item[method]
    return {**spec, "paths": paths}


def _partial_put_bodies(spec: dict[str, Any]) -> None:
    """Both issue PUTs are partial updates; the published body schema says otherwise.

    The description lists every field (``assignedTo``, ``discard``, ``merge`` …) as
    required, but Sentry validates the body with ``GroupValidator(..., partial=True)``
    (getsentry/sentry ``src/sentry/api/helpers/group_index/update.py``,
    ``validate_request``), and its own docs describe ``{"status": "resolved"}``. Only
    those ``required`` lists are dropped; property types stay validated.
    """
    for path in (f"{_ORG}/issues/", f"{_ORG}/issues/{{issue_id}}/"):
        body = spec["paths"][path]["put"]["requestBody"]["content"]["application/json"]
        body["schema"].pop("required", None)
        # statusDetails (StatusDetailsValidator, validators/status_details.py) is a
        # nested serializer: DRF's partial=True applies to it too. inCommit keeps its
        # own required {commit, repository}.
        details = body["schema"]["properties"]["statusDetails"]
        for part in details.get("allOf", [details]):
            part.pop("required", None)


def sentry_subset() -> tuple[dict[str, Any], int]:
    """Sentry's description cut to the bot's operations, nulls out of enums; count."""
    spec = json.loads(SENTRY_SPEC.read_text(encoding="utf-8"))
    cut = subset(spec, SENTRY_OPERATIONS)
    _partial_put_bodies(cut)
    cleaned, removed = strip_null_enums(cut)
    cleaned["servers"] = [{"url": "http://127.0.0.1"}]
    return cleaned, removed


def github_subset() -> dict[str, Any]:
    """GitHub's description cut to the code host's operations."""
    spec = json.loads(GITHUB_SPEC.read_text(encoding="utf-8"))
    cut = subset(spec, GITHUB_OPERATIONS)
    cleaned, _removed = strip_null_enums(cut)
    cleaned["servers"] = [{"url": "http://127.0.0.1"}]
    return dict(cleaned)

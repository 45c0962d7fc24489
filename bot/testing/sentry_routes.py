"""The endpoints of :class:`~bot.testing.sentry.FakeSentry`: routing and answers.

Each handler returns ``(status, json_body, extra_headers)``; the fake adds rate-limit
headers and serialises. Behaviour mirrors the real API where the bot depends on it.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import httpx

from bot.json_types import JsonArray, JsonObject, JsonValue
from bot.testing import sentry_data as data
from bot.testing.sentry_discover import META, events_table
from bot.testing.sentry_search import parse_query, sort_issues
from bot.testing.sentry_state import Answer, FakeState, IssueState

_ISSUES = re.compile(r"^/api/0/organizations/(?P<org>[^/]+)/issues/(?P<rest>.*)$")
_ORG_EVENTS = re.compile(r"^/api/0/organizations/(?P<org>[^/]+)/events/$")
_NOT_FOUND: Answer = (404, {"detail": "The requested resource does not exist"}, {})
_MAX_PAGE = 100
_DUPLICATE_COMMENT_WINDOW = timedelta(hours=1)
_UPDATABLE = {
    "status",
    "statusDetails",
    "substatus",
    "hasSeen",
    "isBookmarked",
    "isPublic",
    "isSubscribed",
    "priority",
    "assignedTo",
    "inbox",
}
# The status values a PUT may set: the ``status`` enum of both issue PUT bodies in
# Sentry's OpenAPI description (GroupValidator's ChoiceField, getsentry/sentry
# src/sentry/api/helpers/group_index/validators/group.py); anything else is a 400.
_STATUS_CHOICES = ("resolved", "unresolved", "ignored", "resolvedInNextRelease", "muted")


class Routes:
    """URL routing plus one method per endpoint."""

    def __init__(self, fake: FakeState) -> None:
        self.fake = fake

    def dispatch(self, request: httpx.Request) -> Answer:
        """Route by path and method; unknown routes are 404 like Sentry's."""
        events = _ORG_EVENTS.match(request.url.path)
        if events and events.group("org") == self.fake.org and request.method == "GET":
            return self.org_events(request)
        m = _ISSUES.match(request.url.path)
        if not m or m.group("org") != self.fake.org:
            return _NOT_FOUND
        parts = [p for p in m.group("rest").split("/") if p]
        method = request.method
        body = _json_body(request)
        if not parts:
            if method == "GET":
                return self.list_issues(request)
            if method == "PUT":
                return self.bulk_update(request, body)
            return (405, {"detail": f'Method "{method}" not allowed.'}, {})
        state = self.fake.issues.get(parts[0])
        if state is None:
            return _NOT_FOUND
        if len(parts) == 1 and method == "GET":
            return (200, self._detail(state), {})
        if len(parts) == 1 and method == "PUT":
            return self.update_issue(state, body)
        if parts[1:] == ["events"] and method == "GET":
            return self.list_events(request, state)
        if len(parts) == 3 and parts[1] == "events" and method == "GET":
            return self.one_event(state, parts[2])
        if parts[1:] in (["comments"], ["notes"]) and method == "POST":
            return self.add_comment(state, body)
        return _NOT_FOUND

    # -- issues ---------------------------------------------------------------------

    def list_issues(self, request: httpx.Request) -> Answer:
        params = request.url.params
        limit, error = _page_size(params.get("limit"))
        if error:
            return error
        now = self.fake.clock.now()
        search = parse_query(params.get("query", "is:unresolved"), now)
        environments = set(params.get_list("environment"))
        projects = set(params.get_list("project")) - {"-1"}
        # getsentry/sentry organization_group_index.py (GET): "If group ids specified, just
        # ignore any query components" -- repeated ``group`` selects, no pagination, no
        # query; ``id`` is never read on GET (only PUT/DELETE read it).
        if params.get_list("group"):
            return self._by_group(params.get_list("group"), projects)
        period = data.parse_period(params.get("statsPeriod", "") or "")
        found = []
        for state in self.fake.issues.values():
            issue = state.data
            project = issue["project"]
            if projects and not projects & {project["id"], project["slug"]}:
                continue
            if environments and not environments & state.environments:
                continue
            if period and (data.parse_iso(issue["lastSeen"]) or now) < now - period:
                continue
            if search.matches(issue, state.environments):
                found.append(issue)
        ordered = sort_issues(found, params.get("sort", "date"))
        status, page, headers = _paginate(request, ordered, limit)
        if status != 200 or not isinstance(page, list):
            return status, page, headers
        # Only the page is put in the list shape: shaping every match for each page made
        # the fake, not the bot, the cost of polling a burst (bench/prematch.py).
        return status, [data.list_shape(i) for i in page if isinstance(i, dict)], headers

    def _by_group(self, raw: list[str], projects: set[str]) -> Answer:
        try:
            wanted = {int(g) for g in raw}
        except ValueError:
            return (400, {"detail": "Group ids must be integers"}, {})
        found = [
            data.list_shape(state.data)
            for state in self.fake.issues.values()
            if int(state.data["id"]) in wanted
            and (
                not projects
                or projects & {state.data["project"]["id"], state.data["project"]["slug"]}
            )
        ]
        return (200, found, {})

    def _detail(self, state: IssueState) -> JsonObject:
        env_counts: dict[str, int] = {}
        for event in state.events:
            for tag in event["tags"]:
                if tag["key"] == "environment":
                    env_counts[tag["value"]] = env_counts.get(tag["value"], 0) + 1
        top = sorted(env_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        tags = [
            {
                "key": "environment",
                "name": "Environment",
                "totalValues": sum(env_counts.values()),
                "topValues": [
                    {"key": "environment", "name": env, "value": env, "count": n} for env, n in top
                ],
            }
        ]
        return data.detail_shape(state.data, tags if env_counts else [])

    def update_issue(self, state: IssueState, body: JsonValue) -> Answer:
        if not isinstance(body, dict):
            return (400, {"detail": "Expected a JSON object."}, {})
        problem = self._check_update(body)
        if problem:
            return problem
        _apply(state.data, body)
        return (200, self._detail(state), {})

    def bulk_update(self, request: httpx.Request, body: JsonValue) -> Answer:
        if not isinstance(body, dict):
            return (400, {"detail": "Expected a JSON object."}, {})
        ids = request.url.params.get_list("id")
        if any(not i.isdigit() for i in ids):
            return (400, {"detail": "Invalid id parameter: integers expected."}, {})
        if ids:
            targets = [self.fake.issues[i] for i in ids if i in self.fake.issues]
        else:
            # Like Sentry: no ids means "every issue matching the query" (up to 100).
            search = parse_query(
                request.url.params.get("query", "is:unresolved"), self.fake.clock.now()
            )
            targets = [
                s for s in self.fake.issues.values() if search.matches(s.data, s.environments)
            ]
            targets = targets[:_MAX_PAGE]
        if not targets:
            # update_groups (getsentry/sentry src/sentry/api/helpers/group_index/update.py):
            # ``if not group_ids or not group_list: return Response(..., status=204)`` --
            # "If any ids are out of scope this operation will succeed without any data
            # mutation". Nothing changes; the client must not take this as success.
            return (204, None, {})
        details = body.get("statusDetails")
        projects = {s.data["project"]["id"] for s in targets}
        if isinstance(details, dict) and details.get("inCommit") and len(projects) > 1:
            # Sentry's update_groups refuses commit resolution across projects.
            detail = "Cannot set resolved in commit for multiple projects."
            return (400, {"detail": detail}, {})
        problem = self._check_update(body)
        if problem:
            return problem
        for state in targets:
            _apply(state.data, body)
        changed = {k: v for k, v in body.items() if k in _UPDATABLE}
        return (200, changed, {})

    def _check_update(self, body: JsonObject) -> Answer | None:
        status = body.get("status")
        if status is not None and status not in _STATUS_CHOICES:
            return (400, {"status": [f'"{status}" is not a valid choice.']}, {})
        details = body.get("statusDetails")
        if not isinstance(details, dict) or "inCommit" not in details:
            return None
        ref = details["inCommit"]
        if not isinstance(ref, dict) or not ref.get("commit") or not ref.get("repository"):
            err: JsonObject = {"inCommit": {"commit": ["This field is required."]}}
            return (400, {"statusDetails": err}, {})
        commits = self.fake.repositories.get(str(ref["repository"]))
        if commits is None:
            err = {"inCommit": {"repository": ["Unable to find the given repository."]}}
            return (400, {"statusDetails": err}, {})
        if str(ref["commit"]) not in commits:
            err = {"inCommit": {"commit": ["Unable to find the given commit."]}}
            return (400, {"statusDetails": err}, {})
        return None

    # -- events and comments ----------------------------------------------------------

    def org_events(self, request: httpx.Request) -> Answer:
        """The events table (counts per issue); see :mod:`bot.testing.sentry_discover`."""
        limit, error = _page_size(request.url.params.get("per_page"))
        if error:
            return error
        rows, refusal = events_table(self.fake, request)
        if refusal is not None:
            return (refusal[0], refusal[1], {})
        status, page, headers = _paginate(request, rows, limit)
        if status != 200:
            return (status, page, headers)
        return (200, {"data": page, "meta": META}, headers)

    def list_events(self, request: httpx.Request, state: IssueState) -> Answer:
        params = request.url.params
        limit, error = _page_size(params.get("per_page"))
        if error:
            return error
        now = self.fake.clock.now()
        period = data.parse_period(params.get("statsPeriod", "") or "")
        if params.get("statsPeriod") and period is None:
            return (400, {"detail": "Invalid statsPeriod"}, {})
        start = data.parse_iso(params.get("start", "")) if params.get("start") else None
        end = data.parse_iso(params.get("end", "")) if params.get("end") else None
        if period:
            start, end = now - period, now
        environments = set(params.get_list("environment"))
        full = params.get("full", "false").lower() in ("1", "true")
        picked = []
        for event in state.events:
            when = data.parse_iso(event["dateCreated"]) or now
            if (start and when < start) or (end and when > end):
                continue
            if environments and _tag(event, "environment") not in environments:
                continue
            picked.append(event)
        picked.sort(key=lambda e: data.parse_iso(e["dateCreated"]) or now, reverse=True)
        return _paginate(request, [data.event_list_shape(e, full=full) for e in picked], limit)

    def one_event(self, state: IssueState, which: str) -> Answer:
        if which not in ("latest", "oldest") or not state.events:
            return _NOT_FOUND
        now = self.fake.clock.now()
        ordered = sorted(state.events, key=lambda e: data.parse_iso(e["dateCreated"]) or now)
        return (200, ordered[-1] if which == "latest" else ordered[0], {})

    def add_comment(self, state: IssueState, body: JsonValue) -> Answer:
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return (400, {"text": ["This field is required."]}, {})
        now = self.fake.clock.now()
        if any(t == text and now - at < _DUPLICATE_COMMENT_WINDOW for t, at in state.comments):
            # Sentry really does double-encode this one: a JSON string holding JSON.
            return (400, json.dumps({"detail": "You have already posted that comment."}), {})
        state.comments.append((text, now))
        state.data["numComments"] = len(state.comments)
        note = {
            "id": str(len(state.comments)),
            "type": "note",
            "data": {"text": text},
            "dateCreated": data.iso(now),
            "user": {"id": "1", "name": "sentry-remediation-bot"},
        }
        return (201, note, {})


def _apply(issue: JsonObject, body: JsonObject) -> None:
    """Apply a partial update the way Sentry's update_groups does, for the fields we use."""
    status = body.get("status")
    details = body.get("statusDetails") if isinstance(body.get("statusDetails"), dict) else {}
    assert isinstance(details, dict)
    if status in ("resolved", "resolvedInNextRelease"):
        issue["status"], issue["substatus"] = "resolved", None
        if status == "resolvedInNextRelease" or details.get("inNextRelease"):
            issue["statusDetails"] = {"inNextRelease": True}
        elif "inCommit" in details:
            # The detail schema types inCommit as a string: the resolving commit's SHA.
            issue["statusDetails"] = {"inCommit": str(details["inCommit"]["commit"])}
        elif details.get("inRelease"):
            issue["statusDetails"] = {"inRelease": str(details["inRelease"])}
        else:
            issue["statusDetails"] = {}
    elif status == "unresolved":
        issue.update(status="unresolved", substatus="ongoing", statusDetails={})
    elif status in ("ignored", "muted"):
        issue.update(status="ignored", substatus="archived_forever", statusDetails={})
    for key in ("hasSeen", "isBookmarked", "isPublic", "isSubscribed", "priority"):
        if key in body:
            issue[key] = body[key]
    if "substatus" in body and body["substatus"] is not None:
        issue["substatus"] = body["substatus"]
    if "assignedTo" in body:
        who = body["assignedTo"]
        issue["assignedTo"] = {"type": "user", "id": str(who), "name": str(who)} if who else None


def _page_size(raw: str | None) -> tuple[int, Answer | None]:
    if raw is None or raw == "":
        return _MAX_PAGE, None
    if not raw.isdigit() or int(raw) < 1:
        return 0, (400, {"detail": "Invalid per_page value."}, {})
    if int(raw) > _MAX_PAGE:
        return 0, (400, {"detail": f"Invalid per_page value. Cannot exceed {_MAX_PAGE}."}, {})
    return int(raw), None


def _paginate(request: httpx.Request, items: JsonArray, limit: int) -> Answer:
    """One page plus Sentry's Link header (both rels, ``results`` and ``cursor``)."""
    raw = request.url.params.get("cursor")
    offset = 0
    if raw:
        pieces = raw.split(":")
        if len(pieces) != 3 or not all(p.lstrip("-").isdigit() for p in pieces):
            return (400, {"detail": "Invalid cursor parameter."}, {})
        offset = max(0, int(pieces[1]))
    page = items[offset : offset + limit]
    prev_offset = max(0, offset - limit)
    links = [
        _link(request, f"0:{prev_offset}:1", "previous", offset > 0),
        _link(request, f"0:{offset + limit}:0", "next", offset + limit < len(items)),
    ]
    return (200, page, {"Link": ", ".join(links)})


def _link(request: httpx.Request, cursor: str, rel: str, results: bool) -> str:
    params = [(k, v) for k, v in request.url.params.multi_items() if k != "cursor"]
    url = request.url.copy_with(params=[*params, ("cursor", cursor)])
    flag = "true" if results else "false"
    return f'<{url}>; rel="{rel}"; results="{flag}"; cursor="{cursor}"'


def _tag(event: JsonObject, key: str) -> str | None:
    for tag in event["tags"]:
        if tag["key"] == key:
            return str(tag["value"])
    return None


def _json_body(request: httpx.Request) -> JsonValue:
    content = request.read()
    if not content:
        return None
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return None

"""Related issues grouped into incidents, so one incident gets one notification thread.

Two issues are related when they share a group key (same project and the same
release, transaction or culprit) and their firstSeen are within ``window`` of each
other (seed 002, "Check for Related Issues": similar errors in the same release, a
spike after a deployment). Relatedness is transitive (single linkage): a cascade
A -> B -> C that unfolds over two hours stays one incident even if A and C are further
apart than the window, which is what seed 000's 42 -> 3Y -> 6C -> 7G chain looks like.

Assignments are sticky: an issue already in an incident stays there, and new
issues join it. Incident ids are stable: derived from the founding member, so the
same inputs always give the same id. Issues with no related issue get no incident
(their own issue thread is their notification thread).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.clock import ensure_utc
from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage.category import tag
from bot.triage.models import Severity, TriageResult, snippet

DEFAULT_WINDOW = timedelta(hours=1)
_KEY_LIMIT = 200


def group_keys(issue: SentryIssue, event: SentryEvent | None = None) -> tuple[str, ...]:
    """The keys an issue can be related by, most specific first.

    ``project|transaction|…``, ``project|culprit|…``, ``project|release|…``. The project
    is part of every key: a frontend widget error and a backend timeout in the same
    deploy are different incidents.
    """
    event = event if event is not None else issue.latest_event
    project = issue.project.slug
    keys = []
    for kind, value in (
        ("transaction", tag(issue, event, "transaction")),
        ("culprit", issue.culprit),
        ("release", tag(issue, event, "release")),
    ):
        if value:
            keys.append(f"{project}|{kind}|{value[:_KEY_LIMIT]}")
    return tuple(keys)


def group_key(issue: SentryIssue, event: SentryEvent | None = None) -> str:
    """The most specific key (what ``incident.group_key`` stores); ``issue:<id>`` if none."""
    keys = group_keys(issue, event)
    return keys[0] if keys else f"{issue.project.slug}|issue|{issue.id}"


@dataclass(frozen=True)
class Candidate:
    """One issue as incident grouping sees it."""

    issue_id: str
    short_id: str
    title: str
    keys: tuple[str, ...]
    first_seen: datetime | None
    severity: Severity = Severity.LOW
    user_count: int = 0

    @classmethod
    def of(
        cls,
        issue: SentryIssue,
        event: SentryEvent | None = None,
        result: TriageResult | None = None,
    ) -> Candidate:
        """Build a candidate from an issue, its latest event and its triage result."""
        return cls(
            issue_id=issue.id,
            short_id=issue.short_id,
            title=issue.title,
            keys=group_keys(issue, event),
            first_seen=ensure_utc(issue.first_seen) if issue.first_seen else None,
            severity=result.severity if result else Severity.LOW,
            user_count=issue.user_count,
        )


@dataclass(frozen=True)
class IncidentPlan:
    """An incident after grouping: persist it in ``incident`` and set members' incident_id."""

    id: str
    group_key: str
    title: str
    severity: Severity
    opened_at: datetime | None  # earliest member firstSeen (None: no member has one)
    members: tuple[str, ...]  # issue ids, earliest firstSeen first
    is_new: bool


@dataclass(frozen=True)
class Assignments:
    by_issue: dict[str, str] = field(default_factory=dict)  # issue id -> incident id
    incidents: tuple[IncidentPlan, ...] = ()
    newly_assigned: frozenset[str] = frozenset()  # issues whose incident_id must be written


class _Union:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {i: i for i in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def incident_id_for(key: str, founder_issue_id: str) -> str:
    """Stable incident id: a digest of the founding member and the key that grouped it."""
    digest = hashlib.sha256(f"{key}\x00{founder_issue_id}".encode()).hexdigest()
    return f"inc-{digest[:16]}"


_NEVER = datetime.max.replace(tzinfo=UTC)


def _order(c: Candidate) -> tuple[datetime, str]:
    return (c.first_seen or _NEVER, c.issue_id)


def _headline(members: Sequence[Candidate]) -> Candidate:
    # most severe, then most users, then earliest
    return min(members, key=lambda c: (-c.severity.rank, -c.user_count, *_order(c)))


def assign_incidents(
    issues: Sequence[Candidate],
    existing: Mapping[str, str] | None = None,
    window: timedelta = DEFAULT_WINDOW,
) -> Assignments:
    """Group related issues into incidents.

    ``issues`` are the candidates in the horizon (already-assigned ones included so new
    issues can join them); ``existing`` maps issue id -> incident id as persisted.
    Deterministic: the result does not depend on the order of ``issues``.
    """
    existing = dict(existing or {})
    by_id = {c.issue_id: c for c in issues}
    uf = _Union(sorted(by_id))
    link_key: dict[tuple[str, str], str] = {}
    by_key: dict[str, list[Candidate]] = {}
    for c in by_id.values():
        for key in c.keys:
            by_key.setdefault(key, []).append(c)
    for key in sorted(by_key):
        timed = sorted((c for c in by_key[key] if c.first_seen is not None), key=_order)
        # sorted by firstSeen, so linking each to its predecessor within the window
        # finds every within-window pair's component
        for prev, cur in itertools.pairwise(timed):
            assert prev.first_seen is not None and cur.first_seen is not None
            if cur.first_seen - prev.first_seen <= window:
                uf.join(prev.issue_id, cur.issue_id)
                a, b = sorted((prev.issue_id, cur.issue_id))
                link_key.setdefault((a, b), key)
    # issues sharing a persisted incident stay together whatever the window says
    by_incident: dict[str, list[str]] = {}
    for issue_id, inc in existing.items():
        if issue_id in by_id:
            by_incident.setdefault(inc, []).append(issue_id)
    for ids in by_incident.values():
        for other in ids[1:]:
            uf.join(ids[0], other)

    components: dict[str, list[Candidate]] = {}
    for issue_id in sorted(by_id):
        components.setdefault(uf.find(issue_id), []).append(by_id[issue_id])

    by_issue: dict[str, str] = {}
    plans: list[IncidentPlan] = []
    newly: set[str] = set()
    known_ids = set(existing.values())
    for members in components.values():
        members.sort(key=_order)
        known = sorted(
            {existing[c.issue_id] for c in members if c.issue_id in existing},
            key=lambda inc: min(_order(c) for c in members if existing.get(c.issue_id) == inc),
        )
        if len(members) < 2 and not known:
            continue
        key = _component_key(members, link_key)
        # new issues join the oldest known incident; a fresh one is named after its founder
        target = known[0] if known else incident_id_for(key, members[0].issue_id)
        grouped: dict[str, list[Candidate]] = {}
        for c in members:
            assigned = existing.get(c.issue_id, target)  # sticky
            by_issue[c.issue_id] = assigned
            grouped.setdefault(assigned, []).append(c)
            if c.issue_id not in existing:
                newly.add(c.issue_id)
        for inc_id, group in grouped.items():
            plans.append(
                IncidentPlan(
                    id=inc_id,
                    group_key=key,
                    title=snippet(_headline(group).title, 500),
                    severity=max((c.severity for c in group), key=lambda s: s.rank),
                    opened_at=group[0].first_seen,
                    members=tuple(c.issue_id for c in group),
                    is_new=inc_id not in known_ids,
                )
            )
    plans.sort(key=lambda p: (p.opened_at or _NEVER, p.id))
    return Assignments(by_issue=by_issue, incidents=tuple(plans), newly_assigned=frozenset(newly))


def _component_key(members: Sequence[Candidate], link_key: Mapping[tuple[str, str], str]) -> str:
    ids = {c.issue_id for c in members}
    keys = sorted(k for pair, k in link_key.items() if pair[0] in ids and pair[1] in ids)
    if keys:
        return keys[0]
    first = members[0]
    return first.keys[0] if first.keys else f"issue|{first.issue_id}"

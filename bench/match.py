"""Matching throughput: issue x playbook evaluations per second.

Synthetic but realistic: issue titles modelled on the seed incidents (stuck tasks,
removed jobs, advisory locks, auth failures, frontend errors), several projects, levels
and environments, a share of issues with a latest event; playbooks mixing cheap set
rules, title/message/culprit regexes, tag rules and typed extraction. Evaluations are
counted exactly: ``match`` stops at the winning playbook, so an issue costs (position of
the winner + 1) evaluations, or one per playbook when nothing matches.

Run: ``.venv/bin/python bench/match.py`` (last line: ``match_evals_per_sec: N``).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from bot.playbooks.matcher import Matcher
from bot.playbooks.models import Playbook
from bot.sentry.models import SentryEvent, SentryIssue

PROJECTS = ["queue-worker", "api", "dashboard", "billing", "ingest", "search"]
LEVELS = ["error", "warning", "info", "fatal"]
ENVS = ["production", "staging", "development"]
TITLES = [
    "Found {n} stuck tasks across {m} jobs",
    "Job {u} removed from pool while running",
    "could not acquire advisory lock {k}",
    "OperationalError: FATAL: password authentication failed for user {w}",
    "TypeError: Cannot read properties of undefined (reading '{w}')",
    "Turnstile error 106010 on /dashboard",
    "TimeoutError: statement timeout after {n}ms in CreatePageRecords",
    "ConnectionRefusedError: [Errno 111] Connection refused ({w}:5432)",
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def synthetic_issues(n: int, seed: int = 7) -> list[tuple[SentryIssue, SentryEvent | None]]:
    """``n`` (issue, event) pairs; about a third carry a latest event."""
    rng = random.Random(seed)
    out: list[tuple[SentryIssue, SentryEvent | None]] = []
    for i in range(n):
        u = str(uuid.UUID(int=rng.getrandbits(128)))
        title = rng.choice(TITLES).format(
            n=rng.randint(1, 500),
            m=rng.randint(1, 9),
            u=u,
            k=rng.randint(1, 10**8),
            w=rng.choice(WORDS),
        )
        env = rng.choice(ENVS)
        issue = SentryIssue.model_validate(
            {
                "id": str(i),
                "shortId": f"BENCH-{i:05d}",
                "title": title,
                "culprit": f"{rng.choice(WORDS)}.{rng.choice(WORDS)}Handler",
                "level": rng.choice(LEVELS),
                "project": {"id": "1", "slug": rng.choice(PROJECTS)},
                "metadata": {"value": f"{title} for job {u}"},
                "count": str(rng.randint(1, 5000)),
                "userCount": rng.randint(0, 40),
                "tags": {"environment": env, "release": f"{rng.choice(PROJECTS)}@1.{i % 50}"},
            }
        )
        event = None
        if rng.random() < 0.33:
            event = SentryEvent.model_validate(
                {
                    "eventID": f"e{i}",
                    "message": f"{title}\njob {u} worker {rng.choice(WORDS)}",
                    "tags": [{"key": "environment", "value": env}],
                }
            )
        out.append((issue, event))
    return out


def synthetic_playbooks(n: int, seed: int = 11) -> list[Playbook]:
    """``n`` playbooks of mixed shapes, distinct priorities, most of them specific."""
    rng = random.Random(seed)
    shapes: list[dict[str, Any]] = [
        {"title": r"Found \d+ stuck tasks", "level": ["warning", "error"]},
        {"title": r"removed from pool", "project": ["queue-worker"]},
        {"message": r"advisory lock \d+", "environment": ["production"]},
        {"title": r"password authentication failed", "min_events": 100},
        {"culprit": r"^(alpha|bravo)\.", "level": ["error"], "min_users": 5},
        {"title": r"(?i)timeout", "tags": {"release": r"^api@"}},
        {"title": r"Turnstile error \d+", "project": ["dashboard"]},
    ]
    uuid_param = {"from": "event", "regex": r"job (?P<job_id>[0-9a-f-]{36})", "type": "uuid"}
    out = []
    for i in range(n):
        match = dict(rng.choice(shapes))
        match["project"] = match.get("project") or rng.sample(PROJECTS, 2)
        extract = {"job_id": uuid_param} if rng.random() < 0.4 else {}
        out.append(
            Playbook.model_validate(
                {
                    "id": f"pb-{i:03d}",
                    "priority": 1000 - i,
                    "match": match,
                    "extract": extract,
                    "action": {"type": "notify_only"},
                }
            )
        )
    return out


def bench_matching(n_issues: int = 10_000, n_playbooks: int = 50) -> float:
    """Issue x playbook evaluations per second of :meth:`Matcher.match`."""
    pairs = synthetic_issues(n_issues)
    matcher = Matcher(synthetic_playbooks(n_playbooks))
    position = {pb.id: i for i, pb in enumerate(matcher.playbooks)}
    started = time.perf_counter()
    results = [matcher.match(issue, event) for issue, event in pairs]
    elapsed = time.perf_counter() - started
    evaluations = sum(position[r.playbook_id] + 1 if r else n_playbooks for r in results)
    return evaluations / elapsed


def main() -> None:
    pairs = synthetic_issues(10_000)
    matcher = Matcher(synthetic_playbooks(50))
    matched = sum(1 for issue, event in pairs if matcher.match(issue, event))
    print(f"issues: {len(pairs)}  playbooks: 50  matched: {matched}")
    print(f"match_evals_per_sec: {bench_matching():.0f}")


if __name__ == "__main__":
    main()

"""Truth table: the seed incidents (and the seed table's other categories) through triage.

Each row is a realistic Sentry issue + latest event, and the severity, category,
priority, team and deadline the seed procedure (``shared/seeds/002_*``) gives, plus the
indicators that must be listed as having decided it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage import Category, Severity, TriageConfig, triage

NOW = datetime(2025, 11, 14, 12, 0, tzinfo=UTC)  # seed 000's date


def iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


def frame(function: str, module: str, *, in_app: bool) -> dict[str, Any]:
    return {"function": function, "module": module, "in_app": in_app}


def make_event(
    *,
    message: str = "",
    exc_type: str = "",
    exc_value: str = "",
    frames: list[dict[str, Any]] | None = None,
    env: str = "production",
    tags: dict[str, str] | None = None,
    request: dict[str, Any] | None = None,
) -> SentryEvent:
    entries: list[dict[str, Any]] = []
    if exc_type or exc_value or frames:
        entries.append(
            {
                "type": "exception",
                "data": {
                    "values": [
                        {
                            "type": exc_type,
                            "value": exc_value,
                            "stacktrace": {"frames": frames or []},
                        }
                    ]
                },
            }
        )
    if request:
        entries.append({"type": "request", "data": request})
    all_tags = {"environment": env, **(tags or {})}
    return SentryEvent.model_validate(
        {
            "eventID": "e" * 32,
            "message": message,
            "entries": entries,
            "tags": [{"key": k, "value": v} for k, v in all_tags.items()],
        }
    )


def make_issue(
    short_id: str,
    title: str,
    *,
    project: str = "crawler-worker",
    culprit: str = "",
    level: str = "error",
    count: int = 1,
    users: int = 0,
    first: timedelta = timedelta(days=7),
    last: timedelta = timedelta(minutes=5),
    substatus: str | None = "ongoing",
    tags: dict[str, str] | None = None,
    value: str | None = None,
) -> SentryIssue:
    return SentryIssue.model_validate(
        {
            "id": str(sum(ord(c) * 31**i for i, c in enumerate(short_id)) % 10**9),
            "shortId": short_id,
            "title": title,
            "culprit": culprit,
            "level": level,
            "substatus": substatus,
            "project": {"id": "1", "slug": project},
            "metadata": {"value": value} if value else {},
            "count": str(count),
            "userCount": users,
            "firstSeen": iso(first),
            "lastSeen": iso(last),
            "tags": {"environment": "production", **(tags or {})},
        }
    )


@dataclass(frozen=True)
class Case:
    issue: SentryIssue
    event: SentryEvent | None
    severity: Severity
    category: Category
    priority: Severity
    team: str
    due_in: timedelta  # response_due_at - NOW
    deciding: frozenset[str]  # indicator names that must be listed with non-zero weight


GO_APP = "github.com/acme/crawler/internal/db"

CASES: dict[str, Case] = {
    # Turnstile 106010 on the dashboard, 8 users lifetime, ~1 event/day: a third-party
    # widget failure (external_api) with small impact -> medium. Seed table: High, Dev Team.
    "BLUE-BANDED-BEE-40 turnstile": Case(
        make_issue(
            "BLUE-BANDED-BEE-40",
            "TurnstileError: [Cloudflare Turnstile] Error: 106010.",
            project="dashboard-frontend",
            culprit="/dashboard",
            count=14,
            users=8,
            first=timedelta(days=10),
            last=timedelta(hours=2),
        ),
        make_event(
            exc_type="TurnstileError",
            exc_value="[Cloudflare Turnstile] Error: 106010.",
            frames=[
                frame("onSubmit", "app/dashboard/login-form", in_app=True),
                frame("r", "challenges.cloudflare.com/turnstile/v0/api", in_app=False),
            ],
        ),
        Severity.MEDIUM,
        Category.EXTERNAL_API,
        Severity.HIGH,
        "Dev Team",
        timedelta(days=1) - timedelta(days=10),  # 1-day target from firstSeen: overdue
        frozenset({"third_party_api", "environment", "level"}),
    ),
    # 718 events in a week (~4/h), warning, production: the queue monitor's stuck task.
    "BLUE-BANDED-BEE-42 stuck tasks": Case(
        make_issue(
            "BLUE-BANDED-BEE-42",
            "Found 1 stuck tasks across 1 jobs",
            culprit="worker.monitorStuckTasks",
            level="warning",
            count=718,
            first=timedelta(days=7),
            last=timedelta(minutes=10),
        ),
        make_event(message="Found 1 stuck tasks across 1 jobs: job 0bf5a3fc-4cae"),
        Severity.MEDIUM,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(days=1) - timedelta(days=7),
        frozenset({"worker_pool_health", "event_rate", "environment"}),
    ),
    # Info-level companion log of -42: same worker-pool condition, info level -> low.
    "BLUE-BANDED-BEE-3Y info log": Case(
        make_issue(
            "BLUE-BANDED-BEE-3Y",
            "Job 0bf5a3fc-4cae removed from pool without completion",
            culprit="worker.removeJobFromPool",
            level="info",
            count=31,
            first=timedelta(days=7),
            last=timedelta(hours=1),
        ),
        None,
        Severity.LOW,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(weeks=1) - timedelta(days=7),
        frozenset({"worker_pool_health", "level"}),
    ),
    # Double commit: Go stack ending in our own queue code, new today -> code_bug, high.
    "BLUE-BANDED-BEE-6C double commit": Case(
        make_issue(
            "BLUE-BANDED-BEE-6C",
            "*errors.errorString: sql: transaction has already been committed or rolled back",
            culprit="(*DbQueue).executeOnce",
            count=40,
            first=timedelta(hours=6),
            substatus="new",
        ),
        make_event(
            exc_type="*errors.errorString",
            exc_value="sql: transaction has already been committed or rolled back",
            frames=[
                frame("(*Worker).run", "github.com/acme/crawler/internal/worker", in_app=True),
                frame("(*DbQueue).Execute", GO_APP, in_app=True),
                frame("(*DbQueue).executeOnce", GO_APP, in_app=True),
            ],
        ),
        Severity.HIGH,
        Category.CODE_BUG,
        Severity.HIGH,
        "Dev Team",
        timedelta(hours=2) - timedelta(hours=6),
        frozenset({"top_frame_in_app", "new_issue", "event_rate"}),
    ),
    # PG timeout raised from our own CreatePageRecords: the timeout and the pq error
    # outweigh the in-app top frame -> infrastructure. 4 events, new -> high (as Sentry said).
    "BLUE-BANDED-BEE-7G pg timeout": Case(
        make_issue(
            "BLUE-BANDED-BEE-7G",
            "context deadline exceeded",
            culprit="CreatePageRecords",
            count=4,
            first=timedelta(minutes=90),
            last=timedelta(minutes=20),
            substatus="new",
            value="CreatePageRecords: pq: canceling statement due to user request",
        ),
        make_event(
            exc_type="*pq.Error",
            exc_value="pq: canceling statement due to user request: context deadline exceeded",
            frames=[frame("CreatePageRecords", GO_APP, in_app=True)],
        ),
        Severity.HIGH,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(hours=2) - timedelta(minutes=90),
        frozenset({"timeout", "database_error", "new_issue"}),
    ),
    # Seed 001: the integrity-hash worker skipping every batch because an idle pooled
    # connection holds its advisory lock; a burst of lock-busy warnings in 15 min.
    "seed 001 advisory lock": Case(
        make_issue(
            "AUDIT-API-1K",
            "integrity-hash-retry-lock-busy: advisory lock 20260417 held, skipping batch",
            project="audit-api",
            culprit="jobs/integrity-hash-retry",
            level="warning",
            count=30,
            first=timedelta(minutes=15),
            last=timedelta(seconds=30),
        ),
        None,
        Severity.HIGH,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(hours=2) - timedelta(minutes=15),
        frozenset({"pool_or_lock", "event_rate", "new_issue"}),
    ),
    # Seed 004: WRONGPASS from the shared Redis. The seed table puts "Redis errors" under
    # Infrastructure and "wrong settings" under Configuration; a rejected password fits
    # both. We decide infrastructure (datastore 3 > credentials 2): seed 004's own
    # diagnosis was a data store that restarted and lost its ACL users, not a changed
    # setting, and both rows route to DevOps anyway. The credential signal stays listed.
    "seed 004 redis WRONGPASS": Case(
        make_issue(
            "CUSTOMER-BACKUP-2F",
            "redis-cli --rdb: AUTH failed: WRONGPASS invalid username-password pair or "
            "user is disabled.",
            project="instant-worker",
            culprit="jobs.customer_backup_runner",
            count=26,
            first=timedelta(hours=20),
        ),
        None,
        Severity.HIGH,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(hours=2) - timedelta(hours=20),
        frozenset({"datastore_error", "credentials_rejected", "new_issue"}),
    ),
    "seed 004 mongo SCRAM": Case(
        make_issue(
            "CUSTOMER-BACKUP-2G",
            "mongodump: auth error: sasl conversation error: unable to authenticate using "
            'mechanism "SCRAM-SHA-256": socket was unexpectedly closed: EOF',
            project="instant-worker",
            culprit="jobs.customer_backup_runner",
            count=9,
            first=timedelta(days=2),
        ),
        None,
        Severity.MEDIUM,
        Category.INFRASTRUCTURE,
        Severity.CRITICAL,
        "DevOps",
        timedelta(days=1) - timedelta(days=2),
        frozenset({"datastore_error", "credentials_rejected", "network_error"}),
    ),
    # A 400 from class-validator, logged as a warning: user input, low. Seed: Low, Product.
    "validation error": Case(
        make_issue(
            "BROXIVA-API-9Q",
            "BadRequestException: Validation failed: email must be an email",
            project="broxiva-backend",
            culprit="POST /api/users",
            level="warning",
            count=20,
            users=3,
            first=timedelta(days=3),
            tags={"http.status_code": "400", "transaction": "POST /api/users"},
        ),
        make_event(
            exc_type="BadRequestException",
            exc_value="Validation failed: email must be an email",
            frames=[
                frame("UsersController.create", "src/users/users.controller", in_app=True),
                frame("ValidationPipe.transform", "node_modules/@nestjs/common", in_app=False),
            ],
        ),
        Severity.LOW,
        Category.USER_INPUT,
        Severity.LOW,
        "Product",
        timedelta(weeks=1) - timedelta(days=3),
        frozenset({"validation_error", "client_error_status"}),
    ),
    # Stripe on the checkout path, 45 users: external API, high (revenue path counts).
    "stripe card error": Case(
        make_issue(
            "BROXIVA-API-A1",
            "StripeCardError: Your card was declined.",
            project="broxiva-backend",
            culprit="POST /api/checkout",
            count=120,
            users=45,
            first=timedelta(days=2),
            tags={"transaction": "POST /api/checkout"},
        ),
        make_event(
            exc_type="StripeCardError",
            exc_value="Your card was declined.",
            frames=[
                frame("CheckoutService.charge", "src/checkout/checkout.service", in_app=True),
                frame("StripeResource._request", "node_modules/stripe/lib", in_app=False),
            ],
        ),
        Severity.HIGH,
        Category.EXTERNAL_API,
        Severity.HIGH,
        "Dev Team",
        timedelta(hours=2) - timedelta(days=2),
        frozenset({"third_party_api", "business_critical_path", "users_affected"}),
    ),
    # A 503 from a partner's host (not ours): external API, even with no vendor name.
    "upstream 5xx": Case(
        make_issue(
            "BROXIVA-API-B7",
            "HTTPError: 503 Service Unavailable for url: https://api.shipping-partner.example/v2/rates",
            project="broxiva-backend",
            culprit="ShippingService.quote",
            count=12,
            first=timedelta(hours=3),
            substatus="new",
        ),
        None,
        Severity.HIGH,
        Category.EXTERNAL_API,
        Severity.HIGH,
        "Dev Team",
        timedelta(hours=2) - timedelta(hours=3),
        frozenset({"upstream_5xx"}),
    ),
    # An injection probe (one "user", 9 hits in 10 min): security, critical by floor.
    "sql injection probe": Case(
        make_issue(
            "BROXIVA-API-C3",
            'QueryFailedError: syntax error at or near "UNION"',
            project="broxiva-backend",
            culprit="GET /api/products",
            count=9,
            users=1,
            first=timedelta(minutes=10),
            last=timedelta(minutes=1),
            substatus="new",
        ),
        make_event(
            exc_type="QueryFailedError",
            exc_value='syntax error at or near "UNION"',
            request={
                "url": "https://api.broxiva.example/api/products",
                "query_string": "id=1' UNION SELECT password FROM users--",
            },
        ),
        Severity.CRITICAL,
        Category.SECURITY,
        Severity.CRITICAL,
        "Security",
        timedelta(minutes=15) - timedelta(minutes=10),
        frozenset({"sql_injection_string", "category_floor"}),
    ),
    # The API crashing at boot on a missing secret: configuration, high.
    "missing env var": Case(
        make_issue(
            "BROXIVA-API-D4",
            "Error: Missing required environment variable JWT_SECRET",
            project="broxiva-backend",
            culprit="bootstrap",
            level="fatal",
            count=3,
            first=timedelta(minutes=30),
            substatus="new",
        ),
        None,
        Severity.HIGH,
        Category.CONFIGURATION,
        Severity.HIGH,
        "DevOps",
        timedelta(hours=2) - timedelta(minutes=30),
        frozenset({"missing_setting", "level", "new_issue"}),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_seed_procedure_truth_table(name: str) -> None:
    case = CASES[name]
    result = triage(case.issue, case.event, TriageConfig(), NOW)

    assert (result.severity, result.category) == (case.severity, case.category), result.indicators
    assert (result.priority, result.team) == (case.priority, case.team)
    assert result.response_due_at - NOW == case.due_in
    assert result.overdue == (case.due_in < timedelta(0))
    deciding = {i.name for i in result.indicators if i.weight != 0}
    assert case.deciding <= deciding, f"missing {case.deciding - deciding}"
    # the winning category really has the top score
    assert result.category_scores[result.category] == max(result.category_scores.values())


def test_triage_is_deterministic_and_round_trips_through_json() -> None:
    case = CASES["BLUE-BANDED-BEE-7G pg timeout"]
    first = triage(case.issue, case.event, TriageConfig(), NOW)
    again = triage(case.issue, case.event, TriageConfig(), NOW)
    assert first == again
    stored = first.model_dump(mode="json")
    from bot.triage import TriageResult

    assert TriageResult.model_validate(stored) == first

"""``POST /hooks/sentry`` intake: what is refused, what is recorded, and that refusals
change nothing (the inbox stays empty) while the webhook counter says why.

Deliveries are built by :class:`FakeWebhookSender`, which follows getsentry/sentry
``src/sentry/sentry_apps/api/serializers/app_platform_event.py`` (body and headers) and
``SentryApp.build_signature`` in ``src/sentry/sentry_apps/models/sentry_app.py``
(``hmac.new(key=client_secret.encode("utf-8"), msg=body.encode("utf-8"),
digestmod=sha256).hexdigest()``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from bot.interfaces.http.sentry_hooks import _read_limited, _TooLarge
from bot.sentry.webhook_envelope import MAX_BODY_BYTES
from bot.testing.sentry_webhooks import SignedDelivery, user_actor
from tests.http.conftest import CLIENT_SECRET, HttpWorld, scrape

ISSUE = {
    "id": "4242",
    "shortId": "QUEUE-WORKER-1",
    "title": "Found 3 stuck tasks",
    "status": "unresolved",
}


@pytest.fixture
def store_url_for_http(tmp_path: Path) -> str:
    """Intake touches the store only to record (or to show nothing was recorded): a
    SQLite file keeps these many cases quick. Recording, dedupe and claims on PostgreSQL
    run in test_inbox_worker.py and tests/acceptance/test_serve_webhooks.py."""
    return f"sqlite:///{tmp_path / 'state.db'}"


def post(client: TestClient, d: SignedDelivery, **overrides: str) -> int:
    headers = {**d.headers, **overrides}
    return client.post("/hooks/sentry", content=d.body, headers=headers).status_code


def received(client: TestClient, resource: str, action: str, result: str) -> float:
    key = (
        "sentry_webhooks_received_total",
        (("action", action), ("resource", resource), ("result", result)),
    )
    return scrape(client).get(key, 0.0)


def created(world: HttpWorld) -> SignedDelivery:
    return world.sender.issue("created", ISSUE, at=world.clock.now())


def test_signature_is_sentrys_build_signature(world_secret: bytes = CLIENT_SECRET.encode()) -> None:
    body = b'{"action": "created", "data": {}}'
    # SentryApp.build_signature, verbatim in effect (see module docstring).
    expected = hmac.new(key=world_secret, msg=body, digestmod=hashlib.sha256).hexdigest()
    from bot.sentry.webhook_envelope import signature, signature_ok

    assert signature(world_secret, body) == expected
    assert signature_ok(world_secret, body, expected)
    assert not signature_ok(world_secret, body, "sha256=" + expected)  # no prefix in Sentry's
    assert not signature_ok(world_secret, body + b" ", expected)
    assert not signature_ok(world_secret, body, "é" * 64)


def test_a_signed_issue_created_is_recorded_and_acknowledged(
    http_world: HttpWorld, client: TestClient
) -> None:
    d = created(http_world)
    assert post(client, d) == 202
    [row] = http_world.deliveries()
    assert (row.resource, row.action, row.issue_id, row.status) == (
        "issue",
        "created",
        "4242",
        "pending",
    )
    assert row.request_id == d.headers["Request-ID"]
    assert received(client, "issue", "created", "accepted") == 1


def test_sentrys_retry_of_the_same_body_is_recorded_once(
    http_world: HttpWorld, client: TestClient
) -> None:
    d = created(http_world)
    assert post(client, d) == 202
    # A retry 5 minutes later: new Request-ID and timestamp, the same body.
    http_world.clock.advance(minutes=5)
    retry = http_world.sender.sign("issue", d.body, at=http_world.clock.now())
    assert retry.headers["Request-ID"] != d.headers["Request-ID"]
    assert post(client, retry) == 200
    assert len(http_world.deliveries()) == 1
    assert received(client, "issue", "created", "duplicate") == 1


def test_different_content_for_the_same_issue_is_a_new_delivery(
    http_world: HttpWorld, client: TestClient
) -> None:
    assert post(client, created(http_world)) == 202
    resolved = http_world.sender.issue(
        "resolved", {**ISSUE, "status": "resolved"}, at=http_world.clock.now(), actor=user_actor()
    )
    assert post(client, resolved) == 202
    assert [r.action for r in http_world.deliveries()] == ["created", "resolved"]


@pytest.mark.parametrize(
    ("overrides", "status", "result"),
    [
        ({"Sentry-Hook-Signature": ""}, 401, "unsigned"),
        ({"Sentry-Hook-Signature": "0" * 64}, 401, "bad_signature"),
        ({"Content-Type": "text/plain"}, 415, "bad_content_type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "bad_content_type"),
    ],
)
def test_refused_deliveries_change_nothing(
    http_world: HttpWorld,
    client: TestClient,
    overrides: dict[str, str],
    status: int,
    result: str,
) -> None:
    assert post(client, created(http_world), **overrides) == status
    assert http_world.deliveries() == []
    assert received(client, "issue", "other", result) == 1


def test_signature_made_with_another_secret_or_over_reserialised_json_is_refused(
    http_world: HttpWorld, client: TestClient
) -> None:
    d = created(http_world)
    other = hmac.new(b"another-secret", d.body, hashlib.sha256).hexdigest()
    assert post(client, d, **{"Sentry-Hook-Signature": other}) == 401
    # The same JSON, re-serialised (different spacing): the signature no longer fits.
    compact = json.dumps(json.loads(d.body), separators=(",", ":")).encode()
    assert compact != d.body
    r = client.post("/hooks/sentry", content=compact, headers=d.headers)
    assert r.status_code == 401
    assert http_world.deliveries() == []


def test_stale_or_missing_timestamp_is_refused(http_world: HttpWorld, client: TestClient) -> None:
    d = created(http_world)
    http_world.clock.advance(seconds=301)  # past BOT_WEBHOOK_MAX_SKEW_SECONDS (300)
    assert post(client, d) == 400
    assert post(client, d, **{"Sentry-Hook-Timestamp": ""}) == 400
    assert post(client, d, **{"Sentry-Hook-Timestamp": "soon"}) == 400
    assert http_world.deliveries() == []
    assert received(client, "issue", "other", "stale") == 3


def test_empty_body_is_refused(http_world: HttpWorld, client: TestClient) -> None:
    d = created(http_world)
    empty = http_world.sender.sign("issue", b"", at=http_world.clock.now())
    assert post(client, empty) == 400
    assert http_world.deliveries() == []
    assert d.body  # the signed one is fine


def test_oversize_body_is_refused_by_declared_length(
    http_world: HttpWorld, client: TestClient
) -> None:
    body = b'{"action": "created", "data": {"issue": {"id": "1"}}, "pad": "' + b"x" * MAX_BODY_BYTES
    big = http_world.sender.sign("issue", body + b'"}', at=http_world.clock.now())
    assert post(client, big) == 413
    assert http_world.deliveries() == []


def test_oversize_body_without_length_is_refused_while_streaming(
    http_world: HttpWorld, client: TestClient
) -> None:
    """Chunked transfer, no Content-Length: refused, nothing recorded."""
    d = created(http_world)

    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 40 chunks of 64 KiB = 2.5 MiB offered
            yield b"x" * 65_536

    r = client.post("/hooks/sentry", content=chunks(), headers=d.headers)
    assert r.status_code == 413
    assert http_world.deliveries() == []


def test_the_size_limit_stops_reading_the_stream() -> None:
    """The reader pulls no more than the limit (+1 chunk) from the ASGI receive channel."""
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 65_536, "more_body": pulled < 1000}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(_TooLarge):
        anyio.run(_read_limited, request, MAX_BODY_BYTES)
    assert pulled == MAX_BODY_BYTES // 65_536 + 1


@pytest.mark.parametrize(
    ("resource", "body", "why"),
    [
        ("issue", b"not json", "not JSON"),
        ("issue", b"[1, 2]", "not a JSON object"),
        ("issue", b'{"action": "created"}', "without 'action' and 'data'"),
        ("issue", b'{"action": "exploded", "data": {"issue": {"id": "1"}}}', "unknown action"),
        ("issue", b'{"action": "created", "data": {"issue": {"id": "1; DROP"}}}', "data.issue.id"),
        ("issue", b'{"action": "created", "data": {"event": {"issue_id": "1"}}}', "data.issue.id"),
        # A signed issue body replayed under another (unsigned) resource header.
        ("event_alert", b'{"action": "created", "data": {"issue": {"id": "1"}}}', "unknown"),
        ("event_alert", b'{"action": "triggered", "data": {"event": {}}}', "issue_id"),
    ],
)
def test_signed_but_malformed_deliveries_are_refused(
    http_world: HttpWorld, client: TestClient, resource: str, body: bytes, why: str
) -> None:
    d = http_world.sender.sign(resource, body, at=http_world.clock.now())
    r = client.post("/hooks/sentry", content=d.body, headers=d.headers)
    assert r.status_code == 400
    assert why in r.json()["error"]
    assert http_world.deliveries() == []


def test_other_resources_are_acknowledged_and_ignored(
    http_world: HttpWorld, client: TestClient
) -> None:
    for resource in ("metric_alert", "comment", "error", "something_new"):
        d = http_world.sender.deliver(resource, "created", {}, at=http_world.clock.now())
        assert post(client, d) == 200
    assert http_world.deliveries() == []
    assert received(client, "metric_alert", "other", "ignored") == 1
    assert received(client, "other", "other", "ignored") == 1  # bounded label


def test_installation_is_recorded_and_event_alert_carries_the_issue_id(
    http_world: HttpWorld, client: TestClient
) -> None:
    now = http_world.clock.now()
    install = http_world.sender.deliver("installation", "created", {"installation": {}}, at=now)
    alert = http_world.sender.event_alert("777", {"event_id": "ab" * 16, "title": "x"}, at=now)
    assert post(client, install) == 202
    assert post(client, alert) == 202
    rows = http_world.deliveries()
    assert [(r.resource, r.action, r.issue_id) for r in rows] == [
        ("installation", "created", None),
        ("event_alert", "triggered", "777"),
    ]


def test_without_a_client_secret_the_hook_is_unavailable(
    http_world: HttpWorld, client: TestClient
) -> None:
    http_world.service.parts.sentry_client_secret = None
    assert post(client, created(http_world)) == 503
    assert http_world.deliveries() == []


def test_a_future_timestamp_within_the_skew_is_accepted(
    http_world: HttpWorld, client: TestClient
) -> None:
    d = http_world.sender.issue(
        "created", ISSUE, at=http_world.clock.now() + timedelta(seconds=200)
    )
    assert post(client, d) == 202

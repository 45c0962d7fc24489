"""``POST /hooks/slack/interactive`` end to end: signature, nonce, allowlist, execution on
a real PostgreSQL target, and the message updated through ``response_url`` (a loopback
:class:`RecordingWebhook`, which answers like Slack's hooks).

Slack's contract followed: DESIGN.md "Slack interactivity" (form-encoded ``payload=``,
``type: block_actions``, ``actions[].action_id``/``value``, ``user.id``,
``response_url``; v0 signature; 5 minutes) and slack_sdk ``signature/__init__.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from bot.clock import FakeClock
from bot.store.models import ApprovalDecision, OutboxMessage, RunStatus
from bot.testing.webhook import RecordingWebhook
from tests.helpers_engine import add_tasks, all_runs, tasks
from tests.http_rig import (
    HttpRig,
    block_actions,
    make_rig,
    serve_asgi,
    signed_headers,
    wait_for,
)

pytestmark = pytest.mark.postgres
PATH = "/hooks/slack/interactive"


@pytest.fixture
def hook() -> Iterator[tuple[RecordingWebhook, str]]:
    fake = RecordingWebhook()
    with fake.serve() as url:
        origin = "/".join(url.split("/")[:3])
        yield fake, origin + "/actions/T0/1234/response-token"


@pytest.fixture
def rig(tmp_path: Path, pg_dsn: str, clock: FakeClock) -> Iterator[HttpRig]:
    r = make_rig(tmp_path, pg_dsn, clock)
    yield r
    r.app.store.dispose()


def now_ts(rig: HttpRig) -> int:
    return int(rig.app.clock.now().timestamp())


def post(client: TestClient, rig: HttpRig, body: bytes, ts: int | None = None) -> httpx.Response:
    return client.post(PATH, content=body, headers=signed_headers(body, ts or now_ts(rig)))


def journal(rig: HttpRig) -> list[tuple[str, str, str]]:
    with rig.app.store.session() as session:
        rows = session.exec(select(ApprovalDecision)).all()
    return [(r.action, r.outcome, r.actor) for r in rows]


def replies(fake: RecordingWebhook) -> list[dict[str, Any]]:
    return [p for p in fake.delivered if isinstance(p, dict)]


def test_signed_approve_executes_the_run_and_updates_the_message(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 3)
    _, run_id = rig.plan()

    with TestClient(rig.asgi) as client:
        res = post(client, rig, block_actions(run_id, response_url=reply_url))

    assert res.status_code == 200
    assert [(t["status"], t["requeue_count"]) for t in tasks(rig.target_dsn)] == [
        ("pending", 1)
    ] * 3
    [run] = all_runs(rig.app.store)
    assert run.status == RunStatus.SUCCEEDED.value and run.rows_affected == 3
    assert (run.approved_by, run.approval_channel) == ("U0APPROVER", "slack")
    [update] = replies(fake)
    assert update["replace_original"] is True
    assert "succeeded" in update["text"] and "U0APPROVER" in update["text"]
    assert "rows changed: 3" in str(update["blocks"]) and "verification" in str(update["blocks"])
    assert fake.requests[0].path == "/actions/T0/1234/response-token"


def test_bad_signature_and_stale_timestamp_get_401_and_change_nothing(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 2)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()
    body = block_actions(run_id, response_url=reply_url)
    ts = now_ts(rig)

    with TestClient(rig.asgi) as client:
        forged = client.post(PATH, content=body, headers=signed_headers(body, ts, "wrong-secret"))
        tampered = client.post(
            PATH,
            content=body.replace(b"U0APPROVER", b"U0APPROVEX"),
            headers=signed_headers(body, ts),
        )
        stale = post(client, rig, body, ts - 301)
        unsigned = client.post(PATH, content=body)

    assert [r.status_code for r in (forged, tampered, stale, unsigned)] == [401] * 4
    assert "stale" in stale.text and "bad Slack signature" in forged.text
    assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value
    assert tasks(rig.target_dsn) == before and journal(rig) == [] and fake.attempts == 0


def test_user_not_on_the_allowlist_gets_an_ephemeral_refusal_and_changes_nothing(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 2)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()

    with TestClient(rig.asgi) as client:
        res = post(client, rig, block_actions(run_id, user="U0STRANGER", response_url=reply_url))

    assert res.status_code == 200
    assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value
    assert tasks(rig.target_dsn) == before
    assert journal(rig) == [("approve", "not_an_approver", "U0STRANGER")]
    [note] = replies(fake)
    assert note["response_type"] == "ephemeral" and note["replace_original"] is False
    assert "not allowed" in note["text"]


def test_empty_allowlist_means_nobody(
    tmp_path: Path, pg_dsn: str, clock: FakeClock, hook: tuple[RecordingWebhook, str]
) -> None:
    rig = make_rig(tmp_path, pg_dsn, clock, approvers="")
    try:
        add_tasks(rig.target_dsn, 1)
        _, run_id = rig.plan()
        with TestClient(rig.asgi) as client:
            assert post(client, rig, block_actions(run_id, response_url=hook[1])).status_code == 200
        assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value
        assert journal(rig) == [("approve", "not_an_approver", "U0APPROVER")]
    finally:
        rig.app.store.dispose()


def test_a_replayed_request_does_nothing_twice(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 2)
    _, run_id = rig.plan()
    body = block_actions(run_id, response_url=reply_url)
    headers = signed_headers(body, now_ts(rig))

    with TestClient(rig.asgi) as client:
        first = client.post(PATH, content=body, headers=headers)
        again = client.post(PATH, content=body, headers=headers)

    assert (first.status_code, again.status_code) == (200, 401)
    assert "replayed" in again.text
    assert [t["requeue_count"] for t in tasks(rig.target_dsn)] == [1, 1]
    assert journal(rig) == [("approve", "approved", "U0APPROVER")]
    assert len(replies(fake)) == 1


def test_deny_then_a_late_approve_is_already_handled(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 2)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()

    with TestClient(rig.asgi) as client:
        denied = post(client, rig, block_actions(run_id, action="deny", response_url=reply_url))
        rig.app.clock.advance(seconds=1)  # type: ignore[attr-defined]
        late = post(client, rig, block_actions(run_id, response_url=reply_url))

    assert (denied.status_code, late.status_code) == (200, 200)
    assert all_runs(rig.app.store)[0].status == RunStatus.DENIED.value
    assert tasks(rig.target_dsn) == before
    texts = [r["text"] for r in replies(fake)]
    assert texts[0].startswith("Denied: run") and "U0APPROVER via slack" in texts[0]
    assert texts[1].startswith("Already handled: run") and "denied" in texts[1]


def test_expired_request_says_expired(rig: HttpRig, hook: tuple[RecordingWebhook, str]) -> None:
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 1)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()
    rig.app.clock.advance(minutes=61)  # type: ignore[attr-defined]

    with TestClient(rig.asgi) as client:
        assert post(client, rig, block_actions(run_id, response_url=reply_url)).status_code == 200

    assert all_runs(rig.app.store)[0].status == RunStatus.EXPIRED.value
    assert tasks(rig.target_dsn) == before
    [update] = replies(fake)
    assert update["text"].startswith("Expired:") and update["replace_original"] is True


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"payload=not-json", 400),
        (b"nothing=here", 400),
        (b'payload={"type":"block_actions"}', 400),
        (b'payload={"type":"view_submission","user":{"id":"U1"}}', 200),
        (
            b'payload={"type":"block_actions","user":{"id":"U0APPROVER"},'
            b'"actions":[{"action_id":"other","value":"x"}]}',
            200,
        ),
        (b"\xff\xfe", 400),
    ],
)
def test_signed_but_malformed_or_foreign_payloads(rig: HttpRig, body: bytes, status: int) -> None:
    with TestClient(rig.asgi) as client:
        assert post(client, rig, body).status_code == status
    assert journal(rig) == []


def test_a_standby_replica_leaves_the_run_to_the_leader(
    tmp_path: Path, pg_dsn: str, clock: FakeClock, hook: tuple[RecordingWebhook, str]
) -> None:
    from bot.interfaces.wiring import build_executor, load_matcher

    _fake, reply_url = hook
    rig = make_rig(tmp_path, pg_dsn, clock, leader=False)
    add_tasks(rig.target_dsn, 2)
    _, run_id = rig.plan()

    with TestClient(rig.asgi) as client:
        assert post(client, rig, block_actions(run_id, response_url=reply_url)).status_code == 200

    assert all_runs(rig.app.store)[0].status == RunStatus.APPROVED.value
    assert [t["status"] for t in tasks(rig.target_dsn)] == ["running"] * 2
    # The leader's poll step sweeps it up; the reply is queued with the outcome.
    _, playbooks = load_matcher(rig.app)
    [done] = build_executor(rig.app, playbooks)[0].execute_approved()
    assert done.rows_affected == 2
    with rig.app.store.session() as session:
        [queued] = session.exec(
            select(OutboxMessage).where(OutboxMessage.channel == "slack_response")
        ).all()
    assert queued.payload["url"] == reply_url and "succeeded" in queued.payload["body"]["text"]
    rig.app.store.dispose()


def test_the_ack_does_not_wait_for_the_execution(
    rig: HttpRig, hook: tuple[RecordingWebhook, str]
) -> None:
    """Served by uvicorn: the 200 arrives while the run is still held back, so the ack
    cannot depend on how long the remediation takes (Slack wants it within 3 s)."""
    fake, reply_url = hook
    add_tasks(rig.target_dsn, 1)
    _, run_id = rig.plan()
    release = threading.Event()
    leader_calls: list[bool] = []

    def slow_leader() -> bool:
        leader_calls.append(True)
        release.wait(120)
        return True

    from starlette.applications import Starlette

    from bot.interfaces.http.approval_wiring import console, slack_interactions

    slack = slack_interactions(rig.app, is_leader=slow_leader)
    asgi = Starlette(routes=[*slack.routes(), *console(rig.app, is_leader=slow_leader).routes()])
    body = block_actions(run_id, response_url=reply_url)
    with serve_asgi(asgi) as base:
        res = httpx.post(
            base + PATH, content=body, headers=signed_headers(body, now_ts(rig)), timeout=60
        )
        assert res.status_code == 200
        assert not release.is_set() and tasks(rig.target_dsn)[0]["status"] == "running"
        release.set()
        wait_for(lambda: len(replies(fake)) == 1, "the outcome reply")
    assert tasks(rig.target_dsn)[0]["status"] == "pending"
    assert leader_calls == [True]

"""The outbox on both backends (SQLite file and real PostgreSQL): enqueue, flush, retry, dead."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from bot.adapters.slack.webhook import SlackWebhookNotifier
from bot.clock import FakeClock, ensure_utc
from bot.errors import CodeHostRetryLater, NotifyRetryLater, SentryError
from bot.notify.port import Payload
from bot.pipeline.outbox import (
    FlushReport,
    OutboxFlusher,
    dead_letters,
    enqueue,
    requeue_dead,
    status_counts,
)
from bot.store.db import Store
from bot.store.models import OutboxMessage
from bot.testing.webhook import RecordingWebhook, Reply

HOOK_URL = "https://hooks.slack.com/services/T0/B0/secret"


@pytest.fixture
def hook() -> RecordingWebhook:
    return RecordingWebhook()


@pytest.fixture
def notifier(hook: RecordingWebhook) -> Iterator[SlackWebhookNotifier]:
    with SlackWebhookNotifier(HOOK_URL, client=hook.client()) as n:
        yield n


def put(
    store: Store, clock: FakeClock, key: str, payload: Payload | None = None, **kw: Any
) -> bool:
    with store.session() as session:
        return enqueue(
            session,
            channel=kw.pop("channel", "slack"),
            dedupe_key=key,
            payload=payload or {"text": key},
            issue_id=kw.pop("issue_id", "4242"),
            kind=kw.pop("kind", "remediated"),
            now=clock.now(),
        )


def rows(store: Store) -> list[OutboxMessage]:
    with store.session() as session:
        return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))  # type: ignore[arg-type]


def flusher(store: Store, senders: dict[str, Any], clock: FakeClock, **kw: Any) -> OutboxFlusher:
    return OutboxFlusher(store, senders, clock, rng=random.Random(7), **kw)


def test_enqueue_twice_with_same_key_gives_one_row_and_one_delivery(
    store: Store, clock: FakeClock, hook: RecordingWebhook, notifier: SlackWebhookNotifier
) -> None:
    assert put(store, clock, "remediated:4242:run-1") is True
    assert put(store, clock, "remediated:4242:run-1", {"text": "different"}) is False
    assert len(rows(store)) == 1

    report = flusher(store, {"slack": notifier.send}, clock).flush()
    assert report == FlushReport(sent=1)
    assert put(store, clock, "remediated:4242:run-1") is False  # still a no-op once sent
    assert flusher(store, {"slack": notifier.send}, clock).flush() == FlushReport()
    assert hook.delivered == [{"text": "remediated:4242:run-1"}]
    (row,) = rows(store)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert ensure_utc(row.sent_at) == clock.now()  # type: ignore[arg-type]


def test_enqueue_is_part_of_the_callers_transaction(store: Store, clock: FakeClock) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.session() as session:
        enqueue(session, "slack", "k1", {"text": "x"}, "1", "failed", clock.now())
        raise Boom
    assert rows(store) == []
    # a duplicate inside the same transaction is also a no-op, not an error
    with store.session() as session:
        assert enqueue(session, "slack", "k2", {"text": "x"}, "1", "failed", clock.now())
        assert not enqueue(session, "slack", "k2", {"text": "y"}, "1", "failed", clock.now())
    assert [r.dedupe_key for r in rows(store)] == ["k2"]


def test_enqueue_rejects_a_payload_that_is_not_json(store: Store, clock: FakeClock) -> None:
    with pytest.raises(TypeError), store.session() as session:
        enqueue(session, "slack", "k", {"at": object()}, None, "x", clock.now())


def test_429_then_500_then_ok_is_delivered_once_honouring_retry_after(
    store: Store, clock: FakeClock, hook: RecordingWebhook, notifier: SlackWebhookNotifier
) -> None:
    hook.script(Reply.rate_limited(120), Reply.server_error(), Reply.ok())
    put(store, clock, "k")
    f = flusher(store, {"slack": notifier.send}, clock, base_backoff_s=1)
    start = clock.now()

    assert f.flush() == FlushReport(retried=1)
    (row,) = rows(store)
    assert row.status == "pending" and row.attempts == 1
    assert "429" in (row.last_error or "")
    # Retry-After (120 s) beats the 1 s backoff
    assert ensure_utc(row.next_attempt_at) == start + timedelta(seconds=120)  # type: ignore[arg-type]

    clock.advance(seconds=119)
    assert f.flush() == FlushReport()  # not due yet: nothing sent
    assert hook.attempts == 1

    clock.advance(seconds=1)
    assert f.flush() == FlushReport(retried=1)  # the 500
    (row,) = rows(store)
    assert row.attempts == 2
    delay = (ensure_utc(row.next_attempt_at) - clock.now()).total_seconds()  # type: ignore[arg-type]
    assert 1.0 <= delay <= 2.0  # 2nd attempt: 1 s * 2, 50-100% jitter

    clock.advance(seconds=2)
    assert f.flush() == FlushReport(sent=1)
    assert hook.attempts == 3
    assert hook.delivered == [{"text": "k"}]
    assert rows(store)[0].status == "sent"


@pytest.mark.parametrize(
    "reply",
    [
        Reply.refused(404, "no_service"),
        Reply.refused(410, "channel_is_archived"),
        Reply.refused(400, "invalid_payload"),
        Reply.refused(403, "action_prohibited"),
    ],
)
def test_permanent_refusal_goes_dead_at_once_and_is_listed(
    store: Store,
    clock: FakeClock,
    hook: RecordingWebhook,
    notifier: SlackWebhookNotifier,
    reply: Reply,
) -> None:
    hook.script(reply)
    put(store, clock, "doomed")
    put(store, clock, "fine")
    report = flusher(store, {"slack": notifier.send}, clock).flush()
    assert report == FlushReport(sent=1, dead=1)
    with store.session() as session:
        dead = dead_letters(session)
        counts = status_counts(session)
    assert [d.dedupe_key for d in dead] == ["doomed"]
    assert reply.body in (dead[0].last_error or "")
    assert "secret" not in (dead[0].last_error or "")
    assert counts == {"pending": 0, "sending": 0, "sent": 1, "dead": 1}
    clock.advance(hours=1)
    assert flusher(store, {"slack": notifier.send}, clock).flush() == FlushReport()
    assert hook.attempts == 2


def test_attempts_exhausted_goes_dead_and_requeue_revives(store: Store, clock: FakeClock) -> None:
    calls: list[Payload] = []

    def flaky(payload: Payload) -> None:
        calls.append(payload)
        raise NotifyRetryLater("503", retry_after=None)

    put(store, clock, "k")
    f = flusher(store, {"slack": flaky}, clock, max_attempts=3, base_backoff_s=10)
    reports = []
    for _ in range(5):
        reports.append(f.flush())
        clock.advance(hours=1)
    assert reports == [
        FlushReport(retried=1),
        FlushReport(retried=1),
        FlushReport(dead=1),
        FlushReport(),
        FlushReport(),
    ]
    assert len(calls) == 3
    (row,) = rows(store)
    assert row.status == "dead" and row.attempts == 3
    assert "attempts exhausted" in (row.last_error or "")

    with store.session() as session:
        assert requeue_dead(session, [row.id or 0], clock.now()) == 1
    assert flusher(store, {"slack": lambda p: None}, clock).flush() == FlushReport(sent=1)


def test_other_channels_share_the_outbox_and_missing_senders_are_skipped(
    store: Store, clock: FakeClock
) -> None:
    got: dict[str, list[Payload]] = {"github_comment": [], "sentry_comment": []}
    put(store, clock, "gh", {"body": "fixed by #12"}, channel="github_comment")
    put(store, clock, "se", {"text": "note"}, channel="sentry_comment")
    put(store, clock, "sl", channel="slack")

    def github(payload: Payload) -> None:
        got["github_comment"].append(payload)
        raise CodeHostRetryLater("rate limited", retry_after=60)

    def sentry(payload: Payload) -> None:
        got["sentry_comment"].append(payload)
        raise SentryError("400 same comment twice")  # a bot error that is not RetryLater

    report = flusher(store, {"github_comment": github, "sentry_comment": sentry}, clock).flush()
    assert report == FlushReport(retried=1, dead=1)
    by_key = {r.dedupe_key: r for r in rows(store)}
    assert by_key["gh"].status == "pending"
    assert ensure_utc(by_key["gh"].next_attempt_at) >= clock.now() + timedelta(seconds=60)  # type: ignore[arg-type]
    assert by_key["se"].status == "dead"
    assert (by_key["sl"].status, by_key["sl"].attempts) == ("pending", 0)  # nobody serves slack


def test_unknown_sender_exception_is_retried_not_dropped(store: Store, clock: FakeClock) -> None:
    put(store, clock, "k")

    def buggy(payload: Payload) -> None:
        raise KeyError("text")

    assert flusher(store, {"slack": buggy}, clock).flush() == FlushReport(retried=1)
    (row,) = rows(store)
    assert row.status == "pending" and "KeyError" in (row.last_error or "")


def test_crash_after_receiver_accepted_redelivers_once_after_the_lease(
    store: Store, clock: FakeClock, hook: RecordingWebhook, notifier: SlackWebhookNotifier
) -> None:
    """The documented at-least-once window: a crash between send and record."""
    put(store, clock, "k")
    crashed = []

    def send_then_die(payload: Payload) -> None:
        notifier.send(payload)
        if not crashed:
            crashed.append(True)
            raise KeyboardInterrupt  # process killed before the outcome is committed

    f = flusher(store, {"slack": send_then_die}, clock, lease_s=300)
    with pytest.raises(KeyboardInterrupt):
        f.flush()
    (row,) = rows(store)
    assert (row.status, row.attempts) == ("sending", 1)
    assert len(hook.delivered) == 1

    clock.advance(seconds=299)
    assert f.flush() == FlushReport()  # lease still held: no duplicate yet
    clock.advance(seconds=1)
    assert f.flush() == FlushReport(sent=1)
    assert hook.delivered == [{"text": "k"}, {"text": "k"}]  # at most twice
    (row,) = rows(store)
    assert (row.status, row.attempts) == ("sent", 2)
    clock.advance(hours=1)
    assert f.flush() == FlushReport()
    assert len(hook.delivered) == 2


def test_row_stuck_in_sending_past_max_attempts_goes_dead_without_sending(
    store: Store, clock: FakeClock
) -> None:
    put(store, clock, "k")
    sent: list[Payload] = []

    def die(payload: Payload) -> None:
        raise SystemExit(1)

    for _ in range(2):
        with pytest.raises(SystemExit):
            flusher(store, {"slack": die}, clock, max_attempts=2).flush()
        clock.advance(seconds=301)
    report = flusher(store, {"slack": sent.append}, clock, max_attempts=2).flush()
    assert report == FlushReport(dead=1)
    assert sent == []
    assert rows(store)[0].status == "dead"


def test_flush_respects_limit_and_due_order(store: Store, clock: FakeClock) -> None:
    for i in range(5):
        put(store, clock, f"k{i}")
        clock.advance(seconds=1)
    sent: list[Payload] = []
    f = flusher(store, {"slack": sent.append}, clock)
    assert f.flush(limit=2) == FlushReport(sent=2)
    assert f.flush(limit=10) == FlushReport(sent=3)
    assert sent == [{"text": f"k{i}"} for i in range(5)]


def test_slow_batch_hands_back_rows_the_lease_would_not_cover(
    store: Store, clock: FakeClock
) -> None:
    for i in range(3):
        put(store, clock, f"k{i}")
    sent: list[Payload] = []

    def slow(payload: Payload) -> None:
        sent.append(payload)
        clock.advance(seconds=200)  # each send takes 200 s of a 300 s lease

    f = flusher(store, {"slack": slow}, clock, lease_s=300)
    assert f.flush() == FlushReport(sent=1, released=2)
    by_key = {r.dedupe_key: r for r in rows(store)}
    assert by_key["k1"].status == "pending" and by_key["k1"].attempts == 0
    assert f.flush() == FlushReport(sent=1, released=1)
    assert f.flush() == FlushReport(sent=1)
    assert [p["text"] for p in sent] == ["k0", "k1", "k2"]

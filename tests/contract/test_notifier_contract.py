"""One contract for the notifier port, run over every backend (as dramatiq's suite is).

Backends: ``in-memory`` (:meth:`RecordingWebhook.notifier`, no HTTP), ``mock-transport``
(the real :class:`~bot.adapters.slack.webhook.SlackWebhookNotifier` over
``httpx.MockTransport``) and ``loopback`` (the same adapter posting to the recording
receiver on a real socket). The receiver answers as Slack documents for incoming
webhooks, and every backend must read those answers the same way:

- ``200 ok`` is delivered (Slack, "Sending messages using incoming webhooks").
- Refusals are a status plus a plain-text token in the body (Slack changelog
  2016-05-17, "Improving error conditions for Incoming Webhooks"): ``400
  invalid_payload`` / ``user_not_found``, ``403 action_prohibited``, ``404
  channel_not_found``, ``410 channel_is_archived``, ``500 rollup_error``; the
  webhooks page adds ``400 no_text`` and ``404 no_service`` (hook removed). Sending
  the same payload again cannot help, so these are permanent, except 5xx.
- Too fast is ``429 Too Many Requests`` with ``Retry-After`` seconds ("Rate limits":
  about one message per second, "including Incoming Webhooks"): try again later, after
  that many seconds.

``invalid_payload`` (a body that is not a JSON object) cannot be produced through the
port, whose payload is a JSON object; the receiver's answer to it is tested in
tests/unit/test_notify_webhook.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from bot.adapters.slack.webhook import SlackWebhookNotifier
from bot.errors import NotifyRetryLater
from bot.notify.messages import Notification, NotificationKind, render
from bot.notify.port import Notifier, NotifyPermanent, is_permanent
from bot.testing.webhook import HOOK_PATH, RecordingWebhook, Reply

SECRET_URL = f"https://hooks.slack.com{HOOK_PATH}"


@dataclass
class Backend:
    hook: RecordingWebhook
    notifier: Notifier


@pytest.fixture(params=["in-memory", "mock-transport", "loopback"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    hook = RecordingWebhook()
    if request.param == "in-memory":
        yield Backend(hook, hook.notifier())
        return
    with ExitStack() as stack:
        if request.param == "mock-transport":
            client = stack.enter_context(hook.client())
            notifier = SlackWebhookNotifier(SECRET_URL, client=client, timeout=2.0)
        else:
            notifier = SlackWebhookNotifier(stack.enter_context(hook.serve()), timeout=0.5)
        stack.enter_context(notifier)
        yield Backend(hook, notifier)


def test_a_rendered_notification_is_delivered_as_json(backend: Backend) -> None:
    payload = render(
        Notification(
            kind=NotificationKind.TRIAGED,
            issue_short_id="APP-1",
            title="boom",
            permalink="https://sentry.example/issues/1/",
        )
    )
    backend.notifier.send(payload)
    assert backend.hook.delivered == [payload]
    [request] = backend.hook.requests
    assert (request.status, request.path) == (200, HOOK_PATH)
    assert request.content_type.startswith("application/json")


def test_text_reaches_slack_escaped_and_intact(backend: Backend) -> None:
    # Slack's mrkdwn treats <, > and & as control characters ("Formatting text for app
    # surfaces": escape them as &lt; &gt; &amp;); the rest must arrive byte for byte.
    title = "KeyError <script> & 'ünïcødé' ✓"
    payload = render(
        Notification(kind=NotificationKind.TRIAGED, issue_short_id="APP-2", title=title)
    )
    backend.notifier.send(payload)
    [delivered] = backend.hook.delivered
    assert delivered == payload
    text = json.dumps(delivered, ensure_ascii=False)
    assert "&lt;script&gt; &amp; 'ünïcødé' ✓" in text and "<script>" not in text


@pytest.mark.parametrize(
    ("break_hook", "status", "code"),
    [
        (
            lambda hook: hook.script(Reply.refused(403, "action_prohibited")),
            403,
            "action_prohibited",
        ),
        (
            lambda hook: hook.script(Reply.refused(404, "channel_not_found")),
            404,
            "channel_not_found",
        ),
        (lambda hook: hook.remove("no_service"), 404, "no_service"),
        (lambda hook: hook.archive(), 410, "channel_is_archived"),
        (lambda hook: hook.script(Reply.refused(400, "user_not_found")), 400, "user_not_found"),
    ],
)
def test_slacks_refusals_are_permanent_with_slacks_code(
    backend: Backend, break_hook: Callable[[RecordingWebhook], object], status: int, code: str
) -> None:
    break_hook(backend.hook)
    with pytest.raises(NotifyPermanent) as info:
        backend.notifier.send({"text": "hello"})
    assert (info.value.status, info.value.code) == (status, code)
    assert is_permanent(info.value)
    assert backend.hook.delivered == []


def test_a_message_without_text_or_blocks_is_no_text(backend: Backend) -> None:
    with pytest.raises(NotifyPermanent) as info:
        backend.notifier.send({"text": ""})
    assert (info.value.status, info.value.code) == (400, "no_text")


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply.rate_limited(2), 2.0),
        (Reply.rate_limited(None), None),
        (Reply.server_error(), None),  # 500 rollup_error
        (Reply.server_error(503, "service_unavailable"), None),
    ],
)
def test_rate_limits_and_outages_are_retry_later(
    backend: Backend, reply: Reply, retry_after: float | None
) -> None:
    backend.hook.script(reply)
    with pytest.raises(NotifyRetryLater) as info:
        backend.notifier.send({"text": "hello"})
    assert info.value.retry_after == retry_after
    assert not is_permanent(info.value)
    backend.notifier.send({"text": "hello"})  # the next attempt goes through
    assert backend.hook.delivered == [{"text": "hello"}]
    assert backend.hook.attempts == 2


def test_no_answer_is_retry_later(backend: Backend) -> None:
    backend.hook.script(Reply.read_timeout())
    with pytest.raises(NotifyRetryLater):
        backend.notifier.send({"text": "hello"})

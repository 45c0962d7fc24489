"""The webhook adapter against the recording Slack-like receiver (MockTransport and loopback)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from bot.adapters.slack.webhook import (
    SlackWebhookNotifier,
    error_code,
    parse_retry_after,
    redact_url,
)
from bot.errors import ConfigError, NotifyError, NotifyRetryLater, RetryLater
from bot.notify.messages import Notification, NotificationKind, render
from bot.notify.port import Notifier, NotifyPermanent, is_permanent
from bot.testing.webhook import HOOK_PATH, RecordingWebhook, Reply

SECRET_URL = f"https://hooks.slack.com{HOOK_PATH}"
SECRET_PART = HOOK_PATH.rsplit("/", 1)[-1]
PAYLOAD = {"text": "hello"}


def notifier_for(hook: RecordingWebhook, url: str = SECRET_URL) -> SlackWebhookNotifier:
    return SlackWebhookNotifier(url, client=hook.client(), timeout=2.0)


def test_delivers_json_payload_and_satisfies_port() -> None:
    hook = RecordingWebhook()
    notifier: Notifier = notifier_for(hook)
    payload = render(
        Notification(kind=NotificationKind.TRIAGED, issue_short_id="APP-1", title="boom")
    )
    notifier.send(payload)
    assert hook.delivered == [payload]
    assert hook.requests[0].path == HOOK_PATH
    assert hook.requests[0].content_type == "application/json"


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply.rate_limited(2), 2.0),
        (Reply.rate_limited(None), None),
        (Reply.server_error(500, "rollup_error"), None),
        (Reply.server_error(503, "service unavailable"), None),
        (Reply(503, "busy", (("Retry-After", "7"),)), 7.0),
        (Reply(408, "timeout"), None),
    ],
)
def test_transient_answers_raise_retry_later(reply: Reply, retry_after: float | None) -> None:
    hook = RecordingWebhook(reply)
    with pytest.raises(NotifyRetryLater) as info:
        notifier_for(hook).send(PAYLOAD)
    assert info.value.retry_after == retry_after
    assert isinstance(info.value, RetryLater)
    assert not is_permanent(info.value)


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply.refused(400, "invalid_payload"), "invalid_payload"),
        (Reply.refused(400, "no_text"), "no_text"),
        (Reply.refused(400, "invalid_blocks"), "invalid_blocks"),
        (Reply.refused(403, "action_prohibited"), "action_prohibited"),
        (Reply.refused(403, "invalid_token"), "invalid_token"),
        (Reply.refused(404, "channel_not_found"), "channel_not_found"),
        (Reply.refused(404, "no_service"), "no_service"),
        (Reply.refused(410, "channel_is_archived"), "channel_is_archived"),
        (Reply.refused(410, "no_active_hooks"), "no_active_hooks"),
        # Mattermost answers errors as JSON
        (
            Reply.refused(
                400,
                json.dumps(
                    {
                        "id": "web.incoming_webhook.text.app_error",
                        "message": "No text specified",
                        "status_code": 400,
                    }
                ),
            ),
            "web.incoming_webhook.text.app_error",
        ),
        (Reply.refused(401, ""), "http_401"),
    ],
)
def test_refusals_are_permanent_with_the_receivers_code(reply: Reply, code: str) -> None:
    hook = RecordingWebhook(reply)
    with pytest.raises(NotifyPermanent) as info:
        notifier_for(hook).send(PAYLOAD)
    assert info.value.code == code
    assert info.value.status == reply.status
    assert is_permanent(info.value)
    assert isinstance(info.value, NotifyError)


def test_fake_answers_like_slack_by_default() -> None:
    hook = RecordingWebhook()
    notifier = notifier_for(hook)
    with pytest.raises(NotifyPermanent, match="no_text"):
        notifier.send({"username": "bot"})
    notifier.send({"blocks": [{"type": "divider"}]})
    hook.archive()
    with pytest.raises(NotifyPermanent, match="410 channel_is_archived"):
        notifier.send(PAYLOAD)
    hook.remove()
    with pytest.raises(NotifyPermanent, match="404 no_service"):
        notifier.send(PAYLOAD)
    assert [r.status for r in hook.requests] == [400, 200, 410, 404]
    assert hook.delivered == [{"blocks": [{"type": "divider"}]}]


def test_fake_rejects_non_json_body_as_invalid_payload() -> None:
    hook = RecordingWebhook()
    response = hook.client().post(SECRET_URL, content=b"payload=not-json")
    assert (response.status_code, response.text) == (400, "invalid_payload")


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError(f"failed to reach {SECRET_URL}"),
        httpx.ReadTimeout(f"timed out talking to {SECRET_URL}"),
        httpx.RemoteProtocolError(f"Server disconnected: {HOOK_PATH}"),
    ],
)
def test_transport_failures_are_retryable_and_never_leak_the_url(error: Exception) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise error

    notifier = SlackWebhookNotifier(
        SECRET_URL, client=httpx.Client(transport=httpx.MockTransport(explode))
    )
    with pytest.raises(NotifyRetryLater) as info:
        notifier.send(PAYLOAD)
    text = str(info.value) + repr(info.value) + repr(notifier)
    assert SECRET_PART not in text
    assert "hooks.slack.com" in text  # the host is fine and helps debugging
    assert info.value.__cause__ is None
    assert type(error).__name__ in str(info.value)


def test_scripted_timeout_is_retry_later() -> None:
    hook = RecordingWebhook(Reply.read_timeout())
    with pytest.raises(NotifyRetryLater, match="timed out"):
        notifier_for(hook).send(PAYLOAD)
    assert hook.attempts == 1  # it reached the receiver: delivery state unknown


def test_error_messages_and_logs_never_contain_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = RecordingWebhook(Reply.refused(404, "no_service"), Reply.server_error())
    notifier = notifier_for(hook)
    with caplog.at_level(logging.DEBUG, logger="bot"):
        for _ in range(2):
            with pytest.raises(NotifyError) as info:
                notifier.send(PAYLOAD)
            assert SECRET_PART not in str(info.value)
    assert SECRET_PART not in caplog.text


@pytest.mark.parametrize("url", ["ftp://hooks.example/x", "not a url", "", "https:///nohost"])
def test_rejects_non_http_urls_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        SlackWebhookNotifier(url)
    assert "/x" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URL, "https://hooks.slack.com/…"),
        ("http://127.0.0.1:8080/hooks/abc?token=1", "http://127.0.0.1:8080/…"),
        ("https://user:pw@chat.example/hooks/x", "https://chat.example/…"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), (" 30 ", 30.0), ("1.5", 1.5), ("-1", None), ("soon", None), (None, None)],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_error_code_keeps_only_first_printable_line() -> None:
    response = httpx.Response(400, text="invalid_payload\x1b[31m\nsecond line")
    assert error_code(response) == "invalid_payload[31m"


def test_against_a_real_loopback_server() -> None:
    hook = RecordingWebhook(Reply.rate_limited(3))
    with hook.serve() as url, SlackWebhookNotifier(url, timeout=5.0) as notifier:
        with pytest.raises(NotifyRetryLater) as info:
            notifier.send(PAYLOAD)
        assert info.value.retry_after == 3.0
        notifier.send(PAYLOAD)
        hook.remove("no_service")
        with pytest.raises(NotifyPermanent, match="no_service"):
            notifier.send(PAYLOAD)
    assert [r.status for r in hook.requests] == [429, 200, 404]
    assert hook.delivered == [PAYLOAD]
    assert hook.requests[1].path == HOOK_PATH


def test_loopback_server_connection_refused_after_shutdown() -> None:
    hook = RecordingWebhook()
    with hook.serve() as url:
        pass
    with SlackWebhookNotifier(url, timeout=2.0) as notifier, pytest.raises(NotifyRetryLater):
        notifier.send(PAYLOAD)
